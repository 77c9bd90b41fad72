"""T_LUFS: DINOv2 loading (local folders only), the predictor, its weights, and prediction from video."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from _videos import write_video
from transformers import BertConfig, BertModel

from triergon.triergon_core.checkpoint import CheckpointError
from triergon.triergon_core.lufs_curve import LufsCurve
from triergon.triergon_core.lufs_predictor import (
    LUFS_PREDICTOR_PRESETS,
    LufsPredictor,
    load_dinov2,
    load_predictor,
    predict_lufs,
)


def test_paper_sizes():
    counts = {name: sum(p.numel() for p in LufsPredictor(config=cfg).parameters())
              for name, cfg in LUFS_PREDICTOR_PRESETS.items() if name in ("s", "l")}
    print({k: f"{v:,}" for k, v in counts.items()})
    s, large = LUFS_PREDICTOR_PRESETS["s"], LUFS_PREDICTOR_PRESETS["l"]
    assert (s.depth, s.heads, s.dim) == (12, 8, 768) and (large.depth, large.heads, large.dim) == (14, 12, 768)
    assert s.max_frames == large.max_frames == 360  # 60 s at 6 fps
    assert counts["l"] > counts["s"]


def test_predictor_outputs_and_limits():
    model = LufsPredictor(config=LUFS_PREDICTOR_PRESETS["tiny"]).eval()
    feats = torch.randn(2, 30, 32)
    with torch.no_grad():
        out = model(feats)
        assert out.shape == (2, 2, 30) and ((out > 0) & (out < 1)).all()
        # padded frames do not change the others
        mask = torch.zeros(2, 40, dtype=torch.bool)
        mask[:, 30:] = True
        padded = model(torch.cat([feats, torch.randn(2, 10, 32)], dim=1), padding_mask=mask)
        torch.testing.assert_close(padded[..., :30], out, rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="more than T_LUFS's 360"):
            model(torch.randn(1, 361, 32))


def test_weights_round_trip_and_refusals(tlufs_weights, tmp_path):
    model = load_predictor(tlufs_weights)
    assert model.config == LUFS_PREDICTOR_PRESETS["tiny"] and not model.training
    with pytest.raises(FileNotFoundError):
        load_predictor(tmp_path / "missing.safetensors")
    other = tmp_path / "not-tlufs.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="not a Tri-Ergon LUFS predictor"):
        load_predictor(other)


def test_dinov2_folder_checks(dinov2_dir, tmp_path):
    features = load_dinov2(dinov2_dir)
    assert features.feature_dim == 32 and (features.resize, features.crop) == (64, 56)
    with pytest.raises(FileNotFoundError, match="DINOv2 folder not found"):
        load_dinov2(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"has no config\.json"):
        load_dinov2(empty)
    bert = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=100)).save_pretrained(bert)
    with pytest.raises(ValueError, match="holds a 'bert' model, not DINOv2"):
        load_dinov2(bert)


def test_preprocessing(dinov2_dir):
    features = load_dinov2(dinov2_dir)
    assert features.frame_size(1080, 1920) == (64, 114)  # short side to 64, aspect kept
    frames = torch.full((3, 64, 114, 3), 255, dtype=torch.uint8)
    x = features.preprocess(frames)
    assert x.shape == (3, 3, 56, 56)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x[0, :, 10, 10], expected)
    assert features(frames).shape == (3, 32)


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), 25])
def test_predict_from_video(dinov2_dir, tlufs_weights, tmp_path, fps):
    video = write_video(tmp_path / "clip.mp4", fps=fps, num_frames=int(2.5 * fps) + 1, size=(72, 96))
    curve = predict_lufs(video, features=load_dinov2(dinov2_dir), predictor=load_predictor(tlufs_weights))
    assert isinstance(curve, LufsCurve) and curve.channels == ("L", "R") and curve.rate == 6.0
    assert curve.num_frames == 16  # ceil(6 * duration), duration just over 2.5 s
    values = curve.values
    assert ((values >= -70) & (values <= 0)).all()


def test_predict_refuses_mismatched_features_and_long_videos(dinov2_dir, tmp_path):
    big = LufsPredictor(config=LUFS_PREDICTOR_PRESETS["s"])
    video = write_video(tmp_path / "clip.mp4", fps=6, num_frames=6)
    with pytest.raises(ValueError, match="reads 768-d features but this DINOv2 gives 32-d"):
        predict_lufs(video, features=load_dinov2(dinov2_dir), predictor=big)


def test_cls_grid_pooling_is_the_cls_output_and_the_image_quarters(dinov2_dir):
    """"cls+grid": the pooled CLS output, then the mean patch token of the top-left, top-right, bottom-left and
    bottom-right quarters (the tiny DINOv2: 56 x 56 in 4 x 4 patches of 14, so each quarter is 2 x 2 patches)."""
    features = load_dinov2(dinov2_dir, pooling="cls+grid")
    assert features.feature_dim == 5 * 32
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    grid = features(frames)
    assert grid.shape == (3, 160)
    torch.testing.assert_close(grid[:, :32], features(frames, pooling="cls"))
    with torch.inference_mode():
        tokens = features.model(pixel_values=features.preprocess(frames)).last_hidden_state[:, 1:]  # [3, 16, 32]
    patches = tokens.unflatten(1, (4, 4))  # [3, row, column, 32]
    quarters = [patches[:, r:r + 2, c:c + 2].mean((1, 2)) for r in (0, 2) for c in (0, 2)]
    torch.testing.assert_close(grid[:, 32:], torch.cat(quarters, 1))
    with pytest.raises(ValueError, match="unknown frame pooling 'mean'"):
        features(frames, pooling="mean")


def test_predict_uses_the_predictors_frame_pooling(dinov2_dir, tmp_path):
    """A T_LUFS trained on "cls+grid" features gets them from a DINOv2 loaded with the default pooling, and its
    curve is the one computed by hand from those features."""
    import dataclasses

    config = dataclasses.replace(LUFS_PREDICTOR_PRESETS["tiny"], feature_dim=160, frame_pooling="cls+grid")
    torch.manual_seed(2)
    predictor = LufsPredictor(config=config).eval()
    video = write_video(tmp_path / "clip.mp4", fps=6, num_frames=12, size=(64, 64))
    features = load_dinov2(dinov2_dir)
    curve = predict_lufs(video, features=features, predictor=predictor)
    from triergon.triergon_core.video import read_frames

    frames = read_frames(video, fps=6, size=(64, 64)).frames
    with torch.inference_mode():
        expected = predictor(features(frames, pooling="cls+grid")[None])[0]
    torch.testing.assert_close(curve.values, LufsCurve.from_normalized(expected, rate=6.0).values)
    with pytest.raises(ValueError, match="unknown frame pooling"):
        LufsPredictor(config=dataclasses.replace(config, frame_pooling="grid"))
