"""DINOv2 folders written by `save_dinov2` (the demo's trained DINOv2, `train export`) load the same weights in
every transformers generation: they use the released checkpoints' key layout, which transformers 4.x and early
5.x read as it is and recent 5.x renames on load. `load_dinov2` refuses a file whose weights do not all load,
where transformers itself only warns and leaves them random. Marked `encoders`, so `scripts/test.sh` also runs
these under transformers 4.57.
"""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import Dinov2Config, Dinov2Model

from triergon.triergon_core.demo import DemoFiles
from triergon.triergon_core.lufs_predictor import FrameFeatures, load_dinov2, save_dinov2

pytestmark = pytest.mark.encoders

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
         "image_size": 56, "patch_size": 14}


def _features(**config) -> FrameFeatures:
    torch.manual_seed(0)
    model = Dinov2Model(Dinov2Config(**SIZES, **config)).eval()
    return FrameFeatures(model, resize=64, crop=56, config_json={"model_type": "dinov2", **SIZES, **config})


@pytest.mark.parametrize("config", [{}, {"use_swiglu_ffn": True}], ids=["mlp", "swiglu"])
def test_saved_in_the_released_layout_and_loaded_back_exactly(config, tmp_path):
    features = _features(**config)
    save_dinov2(features, tmp_path / "ours", metadata={"trained_by": "a test"})
    features.model.save_pretrained(tmp_path / "theirs")  # the released layout in every transformers version
    ours, theirs = (load_file(tmp_path / name / "model.safetensors") for name in ("ours", "theirs"))
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert torch.equal(ours[key], value.float()), key
    loaded = load_dinov2(tmp_path / "ours")
    images = torch.rand(2, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loaded(images), features(images), rtol=0, atol=0)


def test_refuses_weights_that_do_not_load(tmp_path):
    save_dinov2(_features(), tmp_path)
    file = tmp_path / "model.safetensors"
    state = {k.replace(".attention.attention.query.", ".attention.q_renamed."): v for k, v in load_file(file).items()}
    save_file(state, file, metadata={"format": "pt"})
    message = r"4 DINOv2 weights do not load into transformers .*(attention\.query|q_proj).*q_renamed"
    with pytest.raises(ValueError, match=message):
        load_dinov2(tmp_path)


def test_the_shipped_dinov2_is_in_the_released_layout_and_loads():
    folder = DemoFiles().dinov2
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert sum(".attention.attention.query.weight" in k for k in keys) == 2  # its two blocks
    assert not [k for k in keys if "_proj." in k]
    load_dinov2(folder)  # every weight loads (else ValueError)
