"""`scripts/env.sh`'s layered environment: what `scripts/test.sh` builds for the transformers 4.57 encoder tests.

The layer is a virtual environment of its own that takes every package from a base environment except the ones
it installs itself, which hide the base's. These tests build one on the running interpreter's environment with a
hand-made wheel (no index is asked) and check what each side then imports; the base must be left unchanged.
"""

import base64
import hashlib
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BASE = Path(sys.prefix)

pytestmark = pytest.mark.skipif(
    sys.prefix == sys.base_prefix or not (BASE / "bin" / "python").exists(),
    reason="needs to run inside a virtual environment (as scripts/test.sh does)",
)


def _wheel(folder: Path, name: str, version: str, module_text: str) -> Path:
    """A minimal pure-Python wheel holding one package `name` whose `__init__` is `module_text`."""
    files = {
        f"{name}/__init__.py": module_text,
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{name}-{version}.dist-info/RECORD,,")
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record) + "\n"
    whl = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return whl


def _layer(venv: Path, *spec: str) -> subprocess.CompletedProcess:
    script = 'source scripts/env.sh && triergon_layer "$LAYER" "$BASE" "$@"'
    env = {**os.environ, "TRIERGON_ENV_FUNCTIONS_ONLY": "1", "LAYER": str(venv), "BASE": str(BASE)}
    return subprocess.run(["bash", "-c", script, "layer", *spec], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def _probe(python: Path) -> list[str]:
    code = ("import importlib.metadata as m, einops, torch; "
            "print(getattr(einops, 'LAYER', 'base')); print(m.version('einops')); print(torch.__file__)")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.split()


def test_a_layer_hides_only_what_it_installs_and_leaves_the_base_alone(tmp_path):
    base_before = _probe(BASE / "bin" / "python")
    assert base_before[0] == "base"
    whl = _wheel(tmp_path, "einops", "0.0.1", "LAYER = 'layer'\n")
    venv = tmp_path / "layer"

    res = _layer(venv, "--no-deps", str(whl))
    assert res.returncode == 0, res.stderr
    assert "building" in res.stderr

    flag, version, torch_file = _probe(venv / "bin" / "python")
    assert (flag, version) == ("layer", "0.0.1")  # the layer's own package, with its own metadata
    assert Path(torch_file).is_relative_to(sysconfig.get_paths()["purelib"])  # the rest is the base's
    assert sum(1 for _ in venv.rglob("torch")) == 0  # not a copy
    assert _probe(BASE / "bin" / "python") == base_before  # pip removed nothing from the base

    # an unchanged layer is kept as it is; another spec rebuilds it whole
    again = _layer(venv, "--no-deps", str(whl))
    assert again.returncode == 0 and "building" not in again.stderr, again.stderr
    other = _layer(venv, "--no-deps", str(_wheel(tmp_path, "tomli_w_probe", "1.0", "")))
    assert other.returncode == 0, other.stderr
    assert _probe(venv / "bin" / "python")[0] == "base"  # the first layer's einops is gone


def test_a_layer_refuses_a_folder_that_is_not_an_environment_and_reports_pip_failures(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    res = _layer(folder, "--no-deps", "anything")
    assert res.returncode != 0 and "is not a virtual environment" in res.stderr
    assert (folder / "keep.txt").read_text() == "mine"

    venv = tmp_path / "layer"
    res = _layer(venv, "--no-deps", "--no-index", str(tmp_path / "missing-0.1-py3-none-any.whl"))
    assert res.returncode != 0
    assert "failed in" in res.stderr and ".triergon-install.log" in res.stderr
    assert not (venv / ".triergon-installed").exists()  # a failed build is not taken for a finished one
