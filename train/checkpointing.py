"""Training checkpoints that never lose work.

A checkpoint is a folder `RUN/checkpoints/step-NNNNNNNN/` holding `state.pt` (model, optimiser, scheduler and
EMA states of every part, the step, the data position and the resolved config; written by rank 0),
`rng-rank{r}.pt` (each rank's torch / CUDA / numpy / Python RNG states) and `config.json`. It is written under
a temporary name, every file fsynced, then renamed in one step, so a run killed at any moment leaves either
the previous checkpoint or the new one, never a torn one; the last `keep` are kept. Files are read with
`torch.load(weights_only=True)`.

Parts sharded with FSDP2 are gathered to full tensors on save and re-sharded on load, so a run resumes on any
number of ranks; replicated (DDP) parts save their plain `state_dict`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^step-(\d{8})$")
# A test hook: "STEP" makes rank 0 stop inside the write of checkpoint STEP, after its files are written and
# before the rename, and wait there (writing `paused` into the temporary folder) to be killed.
PAUSE_ENV = "TRIERGON_TRAIN_PAUSE_IN_SAVE"


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                       "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class CheckpointManager:
    """Finds, writes and prunes the checkpoints of one run folder. Every rank calls `save` and `load`."""

    def __init__(self, run_dir: str | os.PathLike, *, rank: int, world_size: int, keep: int = 3) -> None:
        self.folder = Path(run_dir).expanduser() / "checkpoints"
        self.rank, self.world_size, self.keep = rank, world_size, max(1, keep)

    def all(self) -> list[Path]:
        """Complete checkpoints, oldest first (temporary folders of interrupted writes are ignored)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if _NAME.match(p.name) and (p / "state.pt").is_file())

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def at(self, step: int) -> Path:
        """The complete checkpoint of `step` (FileNotFoundError naming the steps there are, if it is not one)."""
        found = {int(_NAME.match(p.name).group(1)): p for p in self.all()}
        if step not in found:
            raise FileNotFoundError(f"{self.folder} holds no complete checkpoint of step {step}; it has steps "
                                    f"{', '.join(map(str, found)) or 'none'}")
        return found[step]

    def save(self, step: int, state: dict[str, Any], *, config_json: str) -> Path:
        """Write checkpoint `step`. `state` must be complete on rank 0 (other ranks may pass partial states)."""
        final = self.folder / f"step-{step:08d}"
        tmp = self.folder / f".step-{step:08d}.tmp"
        if self.rank == 0:
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while writing
            tmp.mkdir()
        _barrier()
        rng_file = tmp / f"rng-rank{self.rank}.pt"
        torch.save(rng_state(), rng_file)
        _fsync_file(rng_file)
        if self.rank == 0:
            torch.save({**state, "world_size": self.world_size}, tmp / "state.pt")
            (tmp / "config.json").write_text(config_json)
            for name in ("state.pt", "config.json"):
                _fsync_file(tmp / name)
            if os.environ.get(PAUSE_ENV) == str(step):
                _pause(tmp)
        _barrier()
        if self.rank == 0:
            _fsync_dir(tmp)
            if final.exists():  # the same step saved again (e.g. a signal right after a periodic save)
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync_dir(self.folder)
            for old in self.all()[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        _barrier()
        return final

    def load(self, path: Path) -> tuple[dict[str, Any], bool]:
        """Read `state.pt` and restore this rank's RNG states; returns (state, rng restored exactly).

        RNG states come from the same rank's file; a rank that has none (resumed on more ranks than saved)
        keeps its fresh seeding, which the caller logs."""
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        rng_file = path / f"rng-rank{self.rank}.pt"
        exact = rng_file.is_file() and state.get("world_size") == self.world_size
        if rng_file.is_file():
            set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
        return state, exact


def _pause(tmp: Path) -> None:
    logger.warning("%s: pausing inside the write of %s", PAUSE_ENV, tmp)
    (tmp / "paused").write_text("")
    while True:
        time.sleep(1)


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def read_config(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / "config.json").read_text())
