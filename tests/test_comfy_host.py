"""The pack's use of ComfyUI's modules (folder_paths, model management, progress bar, Cancel), against small fakes
of those modules put into sys.modules: what is called, with what, and what happens without them."""

from __future__ import annotations

import os
import sys
import types

import pytest
import torch

from triergon import NODE_CLASS_MAPPINGS
from triergon.comfy_nodes import host
from triergon.comfy_nodes.nodes_inputs import file_signature


class Interrupted(Exception):
    pass


@pytest.fixture
def fake_comfy(tmp_path, monkeypatch):
    """Minimal stand-ins for folder_paths, comfy.model_management, comfy.model_patcher and comfy.utils."""
    calls = {"load_models_gpu": [], "progress": [], "interrupt": False}
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(tmp_path / "models")
    fp.folder_names_and_paths = {"triergon": ([str(tmp_path / "extra")], set())}  # from extra_model_paths.yaml
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_input_directory = lambda: str(tmp_path / "input")
    fp.get_annotated_filepath = lambda name: str(tmp_path / "input" / name.removesuffix(" [input]"))
    fp.get_temp_directory = lambda: str(tmp_path / "temp")

    mm = types.ModuleType("comfy.model_management")
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.unet_dtype = lambda device, supported_dtypes: torch.float32
    mm.load_models_gpu = lambda patchers: calls["load_models_gpu"].append([p.model for p in patchers])

    def throw():
        if calls["interrupt"]:
            raise Interrupted

    mm.throw_exception_if_processing_interrupted = throw

    class ModelPatcher:
        def __init__(self, model, load_device, offload_device):
            self.model, self.load_device, self.offload_device = model, load_device, offload_device
            model.device = offload_device  # as ComfyUI does: refused by Hugging Face models

    mp = types.ModuleType("comfy.model_patcher")
    mp.ModelPatcher = ModelPatcher

    class ProgressBar:
        def __init__(self, total):
            self.total = total

        def update_absolute(self, value, total=None, preview=None):
            calls["progress"].append((value, total))

    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.model_patcher, comfy.utils = mm, mp, utils
    for name, module in {"folder_paths": fp, "comfy": comfy, "comfy.model_management": mm,
                         "comfy.model_patcher": mp, "comfy.utils": utils}.items():
        monkeypatch.setitem(sys.modules, name, module)
    return fp, calls


def test_models_folder_keeps_user_paths_and_sets_extensions(fake_comfy, tmp_path):
    fp, _ = fake_comfy
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "mine.safetensors").write_bytes(b"x")
    (tmp_path / "extra" / "readme.md").write_text("x")
    host.register_model_folder()
    paths, extensions = fp.folder_names_and_paths["triergon"]
    assert paths == [str(tmp_path / "extra"), os.path.join(fp.models_dir, "triergon")]
    assert extensions == {".safetensors", ".ckpt", ".pt", ".pth"}
    host.register_model_folder()  # idempotent
    assert fp.folder_names_and_paths["triergon"][0] == paths
    choices = NODE_CLASS_MAPPINGS["TriErgonModelLoader"].INPUT_TYPES()["required"]["checkpoint"][0]
    assert "mine.safetensors" in choices and "readme.md" not in choices


def test_nodes_load_models_through_model_management_and_report_progress(fake_comfy):
    _, calls = fake_comfy
    loader, encode = NODE_CLASS_MAPPINGS["TriErgonModelLoader"], NODE_CLASS_MAPPINGS["TriErgonEncodeConditions"]
    sample, decode = NODE_CLASS_MAPPINGS["TriErgonSample"], NODE_CLASS_MAPPINGS["TriErgonDecode"]
    model, _, _ = loader().load("preset: tiny (random weights)")
    (cond,) = encode().encode(model, text="rain", duration=0.5)
    (latent,) = sample().sample(model, cond, steps=3)
    decode().decode(model, latent)
    loaded = [[holder.inner for holder in group] for group in calls["load_models_gpu"]]
    towers = [tower.model for tower in model.encoders._towers.values()]
    assert loaded[0] == towers  # the encoders, for Encode Conditions
    assert loaded[1] == [model.model.dit, model.model.conditioner]  # the DiT alone while sampling
    assert loaded[2] == [model.model.vae]
    assert calls["progress"][:3] == [(1, 3), (2, 3), (3, 3)]


def test_cancel_stops_sampling(fake_comfy):
    _, calls = fake_comfy
    model, _, _ = NODE_CLASS_MAPPINGS["TriErgonModelLoader"]().load("preset: tiny (random weights)")
    (cond,) = NODE_CLASS_MAPPINGS["TriErgonEncodeConditions"]().encode(model, duration=0.5)
    calls["interrupt"] = True
    with pytest.raises(Interrupted):
        NODE_CLASS_MAPPINGS["TriErgonSample"]().sample(model, cond, steps=50)
    assert calls["progress"] == []  # stopped at the first step


def test_without_comfyui_models_use_the_plain_device():
    assert "comfy" not in sys.modules
    module = torch.nn.Linear(2, 2)
    assert host.load([host.Managed(module, name="x")]) == host.plain_device()
    callback = host.progress(3)
    callback(1, 3)  # no bar, no Cancel: nothing happens


def test_is_changed_follows_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIERGON_INPUT_DIR", str(tmp_path))
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"one")
    load_video = NODE_CLASS_MAPPINGS["TriErgonLoadVideo"]
    first = load_video.IS_CHANGED("clip.mp4")
    assert first == file_signature(path) == load_video.IS_CHANGED("clip.mp4")
    path.write_bytes(b"longer")
    assert load_video.IS_CHANGED("clip.mp4") != first
    assert load_video.VALIDATE_INPUTS("clip.mp4") is True
    assert "not found" in load_video.VALIDATE_INPUTS("other.mp4")


def test_loader_is_changed_follows_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TRIERGON_MODELS_DIR", str(tmp_path))
    loader = NODE_CLASS_MAPPINGS["TriErgonModelLoader"]
    assert loader.IS_CHANGED("preset: tiny (random weights)") == loader.IS_CHANGED("preset: tiny (random weights)")
    missing = loader.IS_CHANGED("model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"1")
    present = loader.IS_CHANGED("model.safetensors")
    os.utime(tmp_path / "model.safetensors", ns=(1, 1))
    assert len({missing, present, loader.IS_CHANGED("model.safetensors")}) == 3


def test_pyproject_carries_the_registry_fields():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    data = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    comfy = data["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] and comfy["requires-comfyui"].startswith(">=")
    assert data["project"]["urls"]["Repository"]
