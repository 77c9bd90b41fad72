"""The dependency rules of pyproject.toml and requirements.txt (DESIGN.md, "Dependencies").

The pack is installed into other people's environments: ComfyUI-Manager runs `pip install <line>` for each line
of requirements.txt (its downgrade guard parses one operator per line), while `pip install .` and comfy-cli read
`[project].dependencies`. Both lists must hold the same packages, with lower bounds only, so installing the pack
never downgrades or replaces what the host already has (its torch, its transformers 5.x).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ImportError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
TORCH_FAMILY = {"torch", "torchvision", "torchaudio"}
# Packages the host environment shares with other node packs: never capped, pinned or excluded, in any list.
HOST_SHARED = TORCH_FAMILY | {"transformers", "numpy", "av", "safetensors", "tokenizers", "huggingface-hub"}
REQUIRED = {"numpy", "av", "pyloudnorm", "einops", "safetensors", "tqdm", "matplotlib", "transformers", "triton"}
FORBIDDEN = {"languagebind", "peft"}


def _name(req: Requirement) -> str:
    return req.name.lower().replace("_", "-")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _project_dependencies() -> list[Requirement]:
    return [Requirement(line) for line in _pyproject()["project"]["dependencies"]]


def _requirements_txt() -> list[Requirement]:
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = []
    for line in filter(None, lines):
        assert not line.startswith("-"), f"requirements.txt: {line!r} is a pip option; ComfyUI-Manager installs lines"
        reqs.append(Requirement(line))
    return reqs


def _key(req: Requirement) -> tuple[str, str, str]:
    return _name(req), str(req.specifier), str(req.marker or "")


@pytest.fixture(params=["pyproject.toml", "requirements.txt"])
def listed(request) -> tuple[str, list[Requirement]]:
    reqs = _project_dependencies() if request.param == "pyproject.toml" else _requirements_txt()
    return request.param, reqs


def test_both_files_list_the_same_packages():
    project = {_key(r) for r in _project_dependencies() if _name(r) != "torch"}
    txt = {_key(r) for r in _requirements_txt()}
    assert project == txt, (
        f"only in pyproject: {sorted(project - txt)}; only in requirements.txt: {sorted(txt - project)}")
    names = {name for name, _, _ in txt}
    assert names >= REQUIRED, f"missing: {sorted(REQUIRED - names)}"


def test_lower_bounds_only_one_clause_per_line(listed):
    where, reqs = listed
    for req in reqs:
        ops = [spec.operator for spec in req.specifier]
        assert set(ops) <= {">="}, f"{where}: {req} has {ops}; only lower bounds (>=) are allowed"
        # Manager's downgrade guard reads one operator per line; a compound specifier slips past it.
        assert len(ops) <= 1, f"{where}: {req} is a compound specifier; give one lower bound"


def test_no_urls_no_forbidden_packages(listed):
    where, reqs = listed
    for req in reqs:
        assert req.url is None, f"{where}: {req} is a direct URL; name a registry package"
        assert _name(req) not in FORBIDDEN, f"{where}: {_name(req)} must not be a dependency (test oracle only)"
    for path in ("pyproject.toml", "requirements.txt"):
        text = (ROOT / path).read_text()
        assert "languagebind" not in text, f"{path} names the languagebind package"
        assert "git+" not in text, f"{path} holds a git URL"


def test_host_torch_is_used():
    assert not {_name(r) for r in _requirements_txt()} & TORCH_FAMILY, "requirements.txt must not name torch*"
    torch_reqs = [r for r in _project_dependencies() if _name(r) in TORCH_FAMILY]
    assert [str(r) for r in torch_reqs] == ["torch"], f"pyproject: torch unpinned and alone, got {torch_reqs}"


def test_transformers_both_generations_and_triton_linux_only():
    (tf,) = [r for r in _project_dependencies() if _name(r) == "transformers"]
    for version in ("4.50.0", "4.57.6", "5.0.0", "5.24.0", "6.0"):
        assert tf.specifier.contains(version), f"{tf} excludes transformers {version}"
    assert not tf.specifier.contains("4.49.0"), f"{tf}: the towers need transformers >= 4.50"
    (triton,) = [r for r in _project_dependencies() if _name(r) == "triton"]
    assert not triton.specifier, f"{triton}: triton unpinned (it comes with the host's torch)"
    assert triton.marker is not None and triton.marker.evaluate({"sys_platform": "win32"}) is False
    assert triton.marker.evaluate({"sys_platform": "linux"}) is True


def test_extras_leave_host_packages_alone():
    for extra, lines in _pyproject()["project"]["optional-dependencies"].items():
        for req in map(Requirement, lines):
            assert req.url is None, f"extra {extra!r}: {req} is a direct URL"
            assert _name(req) != "languagebind", f"extra {extra!r}: the oracle is installed by scripts/env.sh"
            if _name(req) in HOST_SHARED:
                ops = {spec.operator for spec in req.specifier}
                assert ops <= {">="}, f"extra {extra!r}: {req} would cap or pin a package the host shares"
