"""Trainers on 2 gloo ranks under torchrun: DDP smoke runs of the four trainers, FSDP2 with bf16 parameters,
bit-identical resume after SIGKILL, 2 -> 1 rank resume, and export -> generate.

torchrun launches cost 10-20 s each here, so one launch runs several trainings (`_train_driver.py`). Runs
are judged by the result files the ranks write, not only by torchrun's exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from triergon.train.checkpointing import CheckpointManager

TESTS = Path(__file__).parent
STEPS = 24  # long enough to kill the run in the middle


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(TESTS)) if p)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and all its descendants (torchrun gives each rank its own session)."""
    stack, found = [pid], []
    while stack:
        p = stack.pop()
        found.append(p)
        stack.extend(_children(p))
    for p in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)


def _dit_args(cache: Path) -> list[str]:
    return ["--set", f"data.path={cache}", "--set", "run.save_every=2", "--set", "run.keep=3",
            "--set", "run.log_every=4", "--steps", str(STEPS)]


def _final_state(run: Path) -> dict:
    latest = CheckpointManager(run, rank=0, world_size=1).latest()
    assert latest is not None and latest.name == f"step-{STEPS:08d}", latest
    return torch.load(latest / "state.pt", weights_only=True)


def _assert_identical(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_identical(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a} != {b}"


@pytest.fixture(scope="module")
def driver_runs(train_data, dinov2_dir, tmp_path_factory):
    """One 2-rank launch: the DiT reference run (DDP), the VAE, T_LUFS (alone and with its DINOv2) and encoder smoke
    runs, and FSDP2 bf16."""
    out = tmp_path_factory.mktemp("dist")
    cache, shards = train_data["cache"], train_data["shards"]
    runs = [
        ["dit", "cpu-smoke", ["data.path=" + str(cache), "run.save_every=2", "run.keep=3", "run.log_every=4",
                              f"run.steps={STEPS}"]],
        ["vae", "cpu-smoke-vae", ["data.path=" + str(shards), "run.steps=3", "vae_loss.discriminator_start=1"]],
        ["lufs", "cpu-smoke-lufs", ["data.path=" + str(cache), "run.steps=3"]],
        ["encoders", "cpu-smoke-encoders", ["data.path=" + str(shards), "run.steps=3"]],  # negatives gathered
        ["lufs-frames", "cpu-smoke-lufs", ["data.path=" + str(shards), f"model.dinov2={dinov2_dir}", "run.steps=3"]],
        ["fsdp", "cpu-smoke", ["data.path=" + str(cache), "run.steps=3", "run.save_every=2",
                               "parallel.mode=fsdp", "parallel.param_dtype=bf16", "run.sample_every=3",
                               "run.sample_steps=2"]],
    ]
    proc = subprocess.run(_torchrun(str(TESTS / "_train_driver.py"), str(out), json.dumps({"runs": runs})),
                          env=_env(), capture_output=True, text=True, timeout=600)
    results = out / "results.json"
    assert results.is_file(), proc.stderr[-4000:]
    return out, json.loads(results.read_text())


def test_ddp_smoke_of_each_trainer(driver_runs):
    out, results = driver_runs
    assert results["world_size"] == 2
    for name, steps in (("dit", STEPS), ("vae", 3), ("lufs", 3), ("encoders", 3), ("lufs-frames", 3)):
        assert results[name]["step"] == steps and results[name]["finite"], results[name]
        assert all(map(lambda v: v == v, results[name]["losses"].values())), results[name]
    assert "loss/disc" in results["vae"]["losses"]  # the discriminator joined after its warm-up
    assert (out / "dit" / "tensorboard").is_dir()


def test_fsdp2_bf16_trains_saves_and_loads_into_one_process(driver_runs, train_data, tmp_path):
    from triergon.train.run import run_training

    out, results = driver_runs
    assert results["fsdp"]["step"] == 3 and results["fsdp"]["finite"], results["fsdp"]
    weights = _load_latest(out / "fsdp")["parts"]["denoiser"]["model"]
    assert weights["dit.transformer.layers.0.pre_norm.gamma"].dtype == torch.float32  # full fp32 master weights
    # rank 0 wrote a sample from the gathered EMA weights of the sharded model
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "fsdp" / "tensorboard"))
    events.Reload()
    assert "sample/lufs" in events.Tags()["images"] and "sample/audio" in events.Tags()["audio"]
    # the gathered (full) state resumes in one process without FSDP
    run = tmp_path / "fsdp-on-one-rank"
    shutil.copytree(out / "fsdp", run)
    with torch.inference_mode(False):
        code = run_training(["--recipe", "cpu-smoke", "--run-dir", str(run), "--steps", "4",
                             "--set", f"data.path={train_data['cache']}"])
    assert code == 0 and json.loads((run / "result.json").read_text())["step"] == 4


def _load_latest(run: Path) -> dict:
    latest = CheckpointManager(run, rank=0, world_size=1).latest()
    return torch.load(latest / "state.pt", weights_only=True)


def _run_until_killed(cmd: list[str], env: dict[str, str], ready) -> None:
    """Start `cmd`, wait until `ready()` holds, then SIGKILL its whole process tree."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read()[-2000:]
        assert ready(), "the run did not reach the point of the kill in time"
        _kill_tree(proc.pid)
    finally:
        _kill_tree(proc.pid)
        proc.wait()


def test_sigkill_and_resume_is_bit_identical_and_resumes_on_one_rank(driver_runs, train_data, tmp_path):
    """Killed with SIGKILL (the whole process tree) twice: while writing the step-8 checkpoint (after its files
    are written, before the rename: the torn write is ignored, the run resumes from step 6), then in the middle
    of training after step 12; the final resume ends bit-identical to the uninterrupted run."""
    from triergon.train.checkpointing import PAUSE_ENV

    out, _ = driver_runs
    run = tmp_path / "killed"
    cmd = _torchrun("-m", "triergon.train", "--recipe", "cpu-smoke", "--run-dir", str(run),
                    *_dit_args(train_data["cache"]))
    ckpts = CheckpointManager(run, rank=0, world_size=2)
    torn = run / "checkpoints" / ".step-00000008.tmp"
    _run_until_killed(cmd, {**_env(), PAUSE_ENV: "8"}, lambda: (torn / "paused").exists())
    assert ckpts.latest().name == "step-00000006", ckpts.latest()
    assert (torn / "state.pt").is_file() and not (run / "checkpoints" / "step-00000008").exists()
    _run_until_killed(cmd, _env(), lambda: bool(ckpts.all()) and int(ckpts.all()[-1].name[5:]) >= 12)
    killed_at = ckpts.latest()
    assert 12 <= int(killed_at.name[5:]) < STEPS, killed_at
    one_rank = tmp_path / "one-rank"
    shutil.copytree(run, one_rank)

    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert json.loads((run / "result.json").read_text())["step"] == STEPS, resumed.stderr[-3000:]
    assert f"resumed from {killed_at}" in resumed.stderr
    _assert_identical(_final_state(run)["parts"], _final_state(out / "dit")["parts"], "state")

    # 2 -> 1 rank: the same sample position, a completed run (not bit-identical: another reduction order)
    single = subprocess.run([sys.executable, "-m", "triergon.train", "--recipe", "cpu-smoke", "--run-dir",
                             str(one_rank), *_dit_args(train_data["cache"])],
                            env=_env(), capture_output=True, text=True, timeout=600)
    assert json.loads((one_rank / "result.json").read_text()) == {
        "step": STEPS, "checkpoint": str(one_rank / "checkpoints" / f"step-{STEPS:08d}"), "world_size": 1,
    }, single.stderr[-3000:]
    assert "resumed on 1" in single.stderr


def test_export_then_generate(driver_runs, tmp_path):
    from triergon.train.export import export_run
    from triergon.triergon_core.checkpoint import load_checkpoint
    from triergon.triergon_core.cli import main

    out, _ = driver_runs
    path, _ = export_run(out / "dit", tmp_path / "model.safetensors")
    state = _load_latest(out / "dit")["parts"]["denoiser"]
    model = load_checkpoint(path)
    for key, value in state["ema"].items():
        assert torch.equal(model.state_dict()[key], value), key
    wav = tmp_path / "out.wav"
    assert main(["generate", "--checkpoint", str(path), "--seconds", "1", "--text", "tone", "--steps", "3",
                 "-q", "-o", str(wav)]) == 0
    assert wav.stat().st_size > 44100 * 2 * 2
    fp16 = tmp_path / "half.safetensors"
    assert main(["train", "export", str(out / "dit"), "-o", str(fp16), "--fp16"]) == 0
    assert fp16.stat().st_size < path.stat().st_size * 0.6
