"""benchmarks/run_gpu.sh's options: its errors, and the wheels it fetches for an offline GPU machine.

The whole script runs only by hand (`--dry-run` on a CPU, takes about a minute); these checks stop before any
step, with a stand-in interpreter where one is needed, so they need no network and no GPU.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run_gpu.sh"


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_help_names_every_option():
    result = _run("--help")
    assert result.returncode == 0
    for option in ("--dry-run", "--no-install", "--wheels DIR", "--download-wheels DIR", "WHEELS_PYTHON", "OUT"):
        assert option in result.stdout
    assert "set -uo pipefail" not in result.stdout  # the comment block only


@pytest.mark.parametrize(("args", "message"), [
    (("--bogus",), "unknown option --bogus"),
    (("--wheels",), "--wheels needs a folder"),
    (("--download-wheels",), "--download-wheels needs a folder"),
    (("--wheels", "/nonexistent/wheels"), "--wheels /nonexistent/wheels is not a folder"),
])
def test_bad_options_exit_2_before_any_step(args, message, tmp_path):
    result = _run(*args, env={"OUT": str(tmp_path / "out")})
    assert result.returncode == 2
    assert message in result.stdout
    assert not (tmp_path / "out").exists()  # nothing started


def _recording_python(tmp_path: Path, rc: int = 0) -> tuple[Path, Path]:
    calls = tmp_path / "calls.txt"
    stub = tmp_path / "python"
    stub.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$*" >> {shlex.quote(str(calls))}\nexit {rc}\n')
    stub.chmod(0o755)
    return stub, calls


def test_download_wheels_fetches_what_a_gpu_image_lacks_for_its_python(tmp_path):
    stub, calls = _recording_python(tmp_path)
    folder = tmp_path / "whl"
    folder.mkdir()
    result = _run("--download-wheels", str(folder),
                  env={"PYTHON": str(stub), "WHEELS_PYTHON": "3.13", "WHEELS_EXTRA": "einops>=0.8.0"})
    assert result.returncode == 0, result.stdout
    (call,) = calls.read_text().splitlines()
    argv = call.split()
    assert argv[:3] == ["-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "--implementation"} <= set(argv)
    assert argv[argv.index("--python-version") + 1] == "3.13"
    assert argv[argv.index("-d") + 1] == str(folder)
    assert "--platform" in argv and "manylinux_2_28_x86_64" in argv
    assert argv[-4:] == ["av>=12.0", "pyloudnorm>=0.1.1", "setuptools>=77", "einops>=0.8.0"]
    assert f"--wheels {folder}" in result.stdout  # says what to run on the GPU machine


def test_download_wheels_failure_exits_3(tmp_path):
    stub, _ = _recording_python(tmp_path, rc=1)
    assert _run("--download-wheels", str(tmp_path), env={"PYTHON": str(stub)}).returncode == 3
