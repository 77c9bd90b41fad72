from __future__ import annotations

import json
import logging

import pytest
import torch
from _helpers import import_triton_for_kernel_tests

from triergon.triergon_core.lufs_predictor import LUFS_PREDICTOR_PRESETS, LufsPredictor, save_predictor

# Before any test module: some import Triton for the GPU on the way (transformers' models do), and the kernel
# tests need it built for the interpreter when there is no GPU, whatever order the files run in.
import_triton_for_kernel_tests()


@pytest.fixture(autouse=True)
def _restore_root_logging():
    """The CLI's `main` adds its stderr handler to the root logger: each test leaves the root logger as it found it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(h)
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


# --- a tiny DINOv2 folder and tiny T_LUFS weights (no downloads) ------------------------------------------


@pytest.fixture(scope="session")
def dinov2_dir(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model  # a slow import: only for the tests that need it

    folder = tmp_path_factory.mktemp("dinov2-tiny")
    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=56, patch_size=14)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "size": {"shortest_edge": 64}, "crop_size": {"height": 56, "width": 56},
        "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225],
    }))
    return folder


@pytest.fixture(scope="session")
def tlufs_weights(tmp_path_factory):
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tlufs") / "tlufs-tiny.safetensors"
    save_predictor(LufsPredictor(config=LUFS_PREDICTOR_PRESETS["tiny"]).eval(), path)
    return path




@pytest.fixture(scope="session")
def train_data(tmp_path_factory, dinov2_dir):
    """Shards and a cache of 5 short clips for the trainer tests (see _train_data.py)."""
    from _train_data import build

    return build(tmp_path_factory.mktemp("train-data"), dinov2_dir)
