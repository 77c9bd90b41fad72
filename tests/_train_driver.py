"""Runs several short trainings in one torchrun launch (each launch costs 10-20 s here), writing
`results.json` into the folder given as the first argument. Used by test_train_dist.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

from triergon.train.config import apply_overrides
from triergon.train.distributed import init_distributed, shutdown_distributed
from triergon.train.recipes import get_recipe
from triergon.train.trainers import trainer_class


def train(name: str, recipe: str, overrides: list[str], out: Path, info) -> dict:
    config = apply_overrides(get_recipe(recipe), overrides)
    trainer = trainer_class(config.trainer)(config, info, out / name)
    last = trainer.fit()
    finite = all(torch.isfinite(p.detach().float().full_tensor() if hasattr(p, "full_tensor") else p).all()
                 for part in trainer.parts.values() for p in part.module.parameters())
    losses = {k: v for k, v in getattr(trainer, "last_logs", {}).items() if k.startswith("loss/")}
    return {"step": trainer.step, "checkpoint": str(last), "finite": bool(finite), "losses": losses}


def main() -> None:
    out, data = Path(sys.argv[1]), json.loads(sys.argv[2])
    info = init_distributed(device="cpu")
    results = {}
    try:
        for name, recipe, overrides in data["runs"]:
            results[name] = train(name, recipe, overrides, out, info)
        if info.is_main:
            (out / "results.json").write_text(json.dumps({**results, "world_size": info.world_size}))
    finally:
        shutdown_distributed()
    os._exit(0)


if __name__ == "__main__":
    main()
