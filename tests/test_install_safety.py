"""Installing the pack leaves the host's torch and transformers alone.

pip resolves `pip install .` and `pip install -r requirements.txt` (what ComfyUI-Manager runs) against this very
environment (the default test environment holds transformers 5.x and a CUDA build of torch) with `--dry-run
--report`, and the report must install none of the packages the host shares. About 10 s (pip builds the
package's metadata in an isolated environment, from its cache or the package index).
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HOST_SHARED = {"torch", "torchvision", "torchaudio", "transformers", "tokenizers", "huggingface-hub", "numpy",
               "av", "safetensors", "triton"}
_OFFLINE = ("Could not fetch URL", "NewConnectionError", "Temporary failure in name resolution",
            "No matching distribution found for setuptools")


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def test_pip_install_changes_no_host_package(tmp_path):
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
           "--report", str(report), str(ROOT), "-r", str(ROOT / "requirements.txt")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and any(marker in done.stderr for marker in _OFFLINE):
        pytest.skip(f"pip cannot reach a package index here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr[-3000:]
    planned = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
               for item in json.loads(report.read_text())["install"]}
    host = {name: _installed(name) for name in ("torch", "transformers")}
    touched = {name: v for name, v in planned.items() if name in HOST_SHARED or name.startswith("nvidia-")}
    assert not touched, f"pip install would replace {touched} in an environment holding {host}"
    assert set(planned) <= {"triergon"}, f"pip would also install {planned} beside {host}"
