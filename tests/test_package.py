"""Package shape: one import name `triergon`, no ComfyUI / Triton at import, console script present."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERIC_NAMES = ("kernels", "train", "triergon_core", "comfy_nodes", "benchmarks", "tests")

_PROBE = f"""
import importlib.util, json, sys
import triergon
found = dict()
for name in {GENERIC_NAMES!r}:
    spec = importlib.util.find_spec(name)
    found[name] = None if spec is None else (spec.origin or str(list(spec.submodule_search_locations or [])))
print(json.dumps({{
    "modules": sorted(m for m in sys.modules if m.split(".")[0] in ("triton", "comfy", "comfy_extras", "server")),
    "generic": found,
    "nodes": sorted(triergon.NODE_CLASS_MAPPINGS),
    "file": triergon.__file__,
    "api": [n for n in triergon.__all__ if not hasattr(triergon, n)],
}}))
"""


def test_import_pulls_in_neither_comfyui_nor_triton_nor_generic_names(tmp_path):
    res = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["modules"] == []
    assert info["nodes"] == sorted(["TriErgonModelLoader", "TriErgonLoadVideo", "TriErgonEncodeConditions",
                                    "TriErgonPredictLUFS", "TriErgonMeasureLUFS", "TriErgonEditLUFSCurve",
                                    "TriErgonPlotLUFS", "TriErgonSample", "TriErgonDecode", "TriErgonMuxVideo"])
    assert info["api"] == []
    assert Path(info["file"]).resolve() == REPO / "__init__.py"
    # None of our folder names is importable as a top-level module; where one is (e.g. the PyPI package
    # `kernels`), it is not ours.
    # (a virtual environment inside the repository, as scripts/test.sh makes, holds the PyPI one under REPO)
    for name, origin in info["generic"].items():
        assert origin is None or Path(origin).resolve().parent != REPO / name, (name, origin)


def test_transformers_works_from_the_repository_root():
    """`python -m ...` run from the repository root puts it on sys.path, where the folder `kernels` would stand in
    for the PyPI package of that name that transformers imports (5.x requires it): the folder steps aside for it."""
    probe = ("import importlib.metadata as m, json; from transformers import Dinov2Model; import kernels\n"
             "try: installed = bool(m.version('kernels'))\nexcept m.PackageNotFoundError: installed = False\n"
             "print(json.dumps([kernels.__file__, installed]))")
    res = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    kernels_file, installed = json.loads(res.stdout)
    assert (Path(kernels_file).resolve().parent != REPO / "kernels") == installed, kernels_file


def test_console_script_lists_presets():
    exe = shutil.which("triergon", path=str(Path(sys.executable).parent))
    assert exe, "the `triergon` console script is not installed next to the interpreter"
    res = subprocess.run([exe, "presets"], capture_output=True, text=True, check=True)
    lines = res.stdout.splitlines()
    for name in ("tiny", "triergon-s", "triergon-l", "sao-1.0"):
        assert any(line.startswith(name + " ") for line in lines), res.stdout
    sao = next(line for line in lines if line.startswith("sao-1.0 "))
    assert "156,112,514" in sao


def test_every_package_folder_is_installed():
    """`pyproject.toml` lists the packages a wheel holds (the root maps to `triergon`): every folder of the
    package with an `__init__.py` must be listed, or `pip install .` (non-editable) would lack it."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    skip = {"tests", "benchmarks", "build", "dist"}  # build/ and dist/: what `pip wheel` leaves behind
    found = {"triergon"} | {
        "triergon." + ".".join(init.parent.relative_to(REPO).parts)
        for init in REPO.rglob("__init__.py")
        if init.parent != REPO and init.relative_to(REPO).parts[0] not in skip
        and not any(part.startswith(".") for part in init.relative_to(REPO).parts)
    }
    assert listed == found, {"not listed": sorted(found - listed), "listed, not a package": sorted(listed - found)}
