"""Checkpoints: safetensors round trip, refusal of checkpoints that do not fit, pickles, atomic saves."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import stat

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from triergon.triergon_core import checkpoint as ckpt_module
from triergon.triergon_core.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    check_state_dict,
    checkpoint_sampling_of,
    load_checkpoint,
    read_state_dict,
    save_checkpoint,
)
from triergon.triergon_core.config import ModelConfig
from triergon.triergon_core.model import build_model
from triergon.triergon_core.presets import get_preset
from triergon.triergon_core.sampling import PAPER_SAMPLING, SAMPLING_KEY, SamplingSettings

SEED = 1234


@pytest.fixture(scope="module")
def tiny_model():
    return build_model("tiny", seed=SEED)


@pytest.fixture(scope="module")
def tiny_state(tiny_model):
    return {k: v.detach().clone() for k, v in tiny_model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny_file(tiny_model, tmp_path_factory):
    return save_checkpoint(tiny_model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def assert_same_tensors(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert set(state) == set(expected)
    different = [k for k, v in expected.items() if not torch.equal(state[k].cpu(), v)]
    assert not different, different[:5]


def misshaped_lines(message: str) -> list[str]:
    """The entries listed under the "mis-shaped" heading of a CheckpointError message."""
    lines = message.splitlines()
    start = next(i for i, line in enumerate(lines) if re.fullmatch(r"\s+\d+ mis-shaped key\(s\):", line))
    entries = []
    for line in lines[start + 1:]:
        if not line.startswith("    "):
            break
        entries.append(line.strip())
    return entries


# --- round trip ---------------------------------------------------------------------------------------


def test_round_trip_keeps_every_tensor_the_config_and_the_metadata(tiny_model, tiny_state, tmp_path):
    path = save_checkpoint(tiny_model, tmp_path / "sub" / "model.safetensors",
                           metadata={"source": "unit-test", "note": "extra"})
    assert path == tmp_path / "sub" / "model.safetensors" and path.is_file()

    loaded = load_checkpoint(path)
    assert isinstance(loaded.config, ModelConfig)
    assert loaded.config == tiny_model.config == get_preset("tiny")
    assert_same_tensors(loaded, tiny_state)
    assert not loaded.training
    # the comparison is not vacuous: another seed gives other weights
    other = build_model("tiny", seed=SEED + 1).state_dict()
    assert any(not torch.equal(other[k], v) for k, v in tiny_state.items())

    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT == "triergon"
    assert meta["format_version"] == FORMAT_VERSION
    assert ModelConfig.from_json(meta["config"]) == tiny_model.config
    assert meta["source"] == "unit-test" and meta["note"] == "extra"

    state, read_meta = read_state_dict(path)
    assert read_meta == meta
    assert set(state) == set(tiny_state)


def test_recommended_sampling_is_stored_read_back_and_checked(tiny_state, tmp_path):
    """A model's `sampling` other than the paper's goes into the file (metadata "sampling") and comes back in
    load_checkpoint and checkpoint_sampling_of; the paper's is not written; unusable settings are refused."""
    model = build_model("tiny", seed=SEED)
    plain = save_checkpoint(model, tmp_path / "plain.safetensors")
    with safe_open(plain, framework="pt") as f:
        assert SAMPLING_KEY not in f.metadata()
    assert load_checkpoint(plain).sampling == PAPER_SAMPLING == checkpoint_sampling_of(plain)

    model.sampling = SamplingSettings(steps=40, cfg_scale=3.0, sampler="ddim")
    tuned = save_checkpoint(model, tmp_path / "tuned.safetensors")
    with safe_open(tuned, framework="pt") as f:
        assert json.loads(f.metadata()[SAMPLING_KEY]) == {"steps": 40, "cfg_scale": 3.0, "sampler": "ddim"}
    loaded = load_checkpoint(tuned)
    assert loaded.sampling == model.sampling == checkpoint_sampling_of(tuned)
    assert_same_tensors(loaded, tiny_state)

    def with_sampling(name, text):
        path = tmp_path / name
        save_file(tiny_state, path, metadata={"config": model.config.to_json(), SAMPLING_KEY: text})
        return path

    partial = with_sampling("partial.safetensors", '{"cfg_scale": 4.5}')  # what it leaves out is the paper's
    assert checkpoint_sampling_of(partial) == SamplingSettings(cfg_scale=4.5)
    for text, words in (('{"cfg": 3}', "unknown sampling settings cfg"), ("3.0", "JSON object"),
                        ("{not json", "not JSON"), ('{"steps": 0}', "steps must be"),
                        ('{"sampler": "euler"}', "unknown sampler")):
        bad = with_sampling("bad.safetensors", text)
        for read in (load_checkpoint, checkpoint_sampling_of):
            with pytest.raises(CheckpointError, match=words):
                read(bad)
    with pytest.raises(FileNotFoundError):
        checkpoint_sampling_of(tmp_path / "none.safetensors")


def test_saved_file_has_ordinary_permissions(tiny_model, tmp_path):
    # A checkpoint is an ordinary output file: its mode follows the umask like any file `open(..., "w")`
    # writes, not the 0600 of the temporary file it was staged in.
    umask = os.umask(0)
    os.umask(umask)
    path = save_checkpoint(tiny_model, tmp_path / "model.safetensors")
    reference = tmp_path / "plain.txt"
    reference.write_text("x")
    assert stat.S_IMODE(reference.stat().st_mode) == 0o666 & ~umask
    mode, want = stat.S_IMODE(path.stat().st_mode), stat.S_IMODE(reference.stat().st_mode)
    assert mode == want, f"checkpoint written with mode {mode:#o}, {want:#o} expected (umask {umask:#o})"


# --- checkpoints that do not fit ----------------------------------------------------------------------


def _tiny_with_sao_vae() -> ModelConfig:
    """The tiny model with SAO's full-size VAE: the same module tree as tiny, other widths."""
    tiny = get_preset("tiny")
    return dataclasses.replace(tiny, name="tiny-sao-vae", vae=get_preset("sao-1.0").vae,
                               dit=dataclasses.replace(tiny.dit, io_channels=64))


def test_weights_of_another_preset_are_refused_listing_both_shapes(tiny_file, tiny_state):
    other = _tiny_with_sao_vae()
    expected = {k: tuple(v.shape) for k, v in build_model(other, device="meta").state_dict().items()}
    assert set(expected) == set(tiny_state)  # same module tree, other widths: only mis-shaped keys
    bad = sorted(k for k, v in tiny_state.items() if tuple(v.shape) != expected[k])
    assert len(bad) > 20

    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_file, preset=other)
    message = str(info.value)
    assert "does not fit the model" in message
    assert "missing" not in message and "unexpected" not in message
    assert f"{len(bad)} mis-shaped key(s):" in message
    entries = misshaped_lines(message)
    assert len(entries) == 21 and entries[-1] == f"... and {len(bad) - 20} more"
    for entry in entries[:-1]:
        key = entry.split(":", 1)[0]
        assert key in bad
        got, want = tuple(tiny_state[key].shape), expected[key]
        assert entry.startswith(f"{key}: {got} in the checkpoint ") and entry.endswith(f", {want} expected")
    # e.g. the decoder's first conv: 16 -> 64 channels in tiny, 64 -> 2048 in SAO
    assert "vae.decoder.layers.0.weight_v: (64, 16, 7) in the checkpoint" in message
    assert "(2048, 64, 7) expected" in message


def test_missing_and_unexpected_keys_are_named(tiny_state, tmp_path):
    state = dict(tiny_state)
    del state["vae.encoder.layers.0.bias"]
    state["vae.encoder.extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.safetensors"
    save_file(state, path, metadata={"config": get_preset("tiny").to_json()})

    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "1 missing key(s):\n    vae.encoder.layers.0.bias" in message
    assert "1 unexpected key(s):\n    vae.encoder.extra.weight" in message
    assert "mis-shaped" not in message and "more" not in message


def test_long_lists_are_truncated():
    expected = {f"k{i:02d}": (1,) for i in range(25)}
    with pytest.raises(CheckpointError) as info:
        check_state_dict(expected, {}, what="test state")
    message = str(info.value)
    assert message.startswith("the test state does not fit the model:")
    assert "25 missing key(s):" in message
    assert "k19" in message and "k20" not in message
    assert message.rstrip().endswith("... and 5 more")
    check_state_dict(expected, {k: torch.zeros(1) for k in expected})  # fits: returns quietly


# --- files without a config, pickles ------------------------------------------------------------------


def test_safetensors_without_config_needs_the_preset(tiny_state, tmp_path):
    path = tmp_path / "bare.safetensors"
    save_file(tiny_state, path)
    with pytest.raises(CheckpointError, match="stores no model config; pass the preset"):
        load_checkpoint(path)
    model = load_checkpoint(path, preset="tiny")
    assert model.config == get_preset("tiny")
    assert_same_tensors(model, tiny_state)


@pytest.mark.parametrize("wrapped", [True, False], ids=["state_dict-entry", "bare-dict"])
def test_pickled_checkpoint_loads_with_a_preset(tiny_state, tmp_path, wrapped):
    path = tmp_path / ("model.ckpt" if wrapped else "model.pt")
    torch.save({"state_dict": tiny_state, "global_step": 7} if wrapped else tiny_state, path)
    model = load_checkpoint(path, preset="tiny")
    assert_same_tensors(model, tiny_state)
    with pytest.raises(CheckpointError, match="pass the preset"):
        load_checkpoint(path)


class _TouchOnUnpickle:
    """Unpickling this (without weights_only) runs `Path.touch(sentinel)`."""

    def __init__(self, sentinel: pathlib.Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path.touch, (self.sentinel,))


def test_pickle_that_runs_code_is_refused_and_the_code_never_runs(tiny_state, tmp_path):
    sentinel = tmp_path / "sentinel"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {**tiny_state, "vae.payload": _TouchOnUnpickle(sentinel)}}, path)

    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(path, preset="tiny")
    assert not sentinel.exists()

    # control: the payload is live, an unrestricted unpickle does run it
    control = tmp_path / "control"
    torch.save(_TouchOnUnpickle(control), tmp_path / "control.ckpt")
    torch.load(tmp_path / "control.ckpt", weights_only=False)
    assert control.exists()


@pytest.mark.parametrize("name", ["absent.safetensors", "absent.ckpt"])
def test_missing_file_raises_file_not_found(tmp_path, name):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / name, preset="tiny")


@pytest.mark.parametrize("name", ["garbage.safetensors", "garbage.ckpt"])
def test_garbage_bytes_raise_checkpoint_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(os.urandom(64) + b"\x00" * 64)
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_checkpoint(path, preset="tiny")


# --- atomic save --------------------------------------------------------------------------------------


def _failing_save_file(exc: BaseException):
    def save_file(tensors, filename, metadata=None):
        pathlib.Path(filename).write_bytes(b"partial")  # fail half-way, after writing something
        raise exc
    return save_file


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "KeyboardInterrupt"])
def test_failed_save_leaves_no_file_behind(tiny_model, tmp_path, monkeypatch, exc):
    folder = tmp_path / "out"
    folder.mkdir()
    monkeypatch.setattr(ckpt_module, "save_file", _failing_save_file(exc))
    with pytest.raises(type(exc)):
        save_checkpoint(tiny_model, folder / "model.safetensors")
    assert os.listdir(folder) == []


def test_failed_save_keeps_the_existing_checkpoint(tiny_model, tiny_state, tmp_path, monkeypatch):
    path = save_checkpoint(tiny_model, tmp_path / "model.safetensors")
    before = path.read_bytes()
    monkeypatch.setattr(ckpt_module, "save_file", _failing_save_file(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(build_model("tiny", seed=SEED + 1), path)
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert path.read_bytes() == before
    monkeypatch.undo()
    assert_same_tensors(load_checkpoint(path), tiny_state)


# --- dtype and device ---------------------------------------------------------------------------------


def test_load_with_dtype_and_device(tiny_file, tiny_state):
    model = load_checkpoint(tiny_file, dtype=torch.float64, device="cpu")
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert tensors
    assert all(t.dtype == torch.float64 and t.device == torch.device("cpu") for t in tensors.values())
    for k, v in model.state_dict().items():
        assert torch.equal(v, tiny_state[k].double()), k


def test_nothing_is_left_on_the_meta_device(tiny_file):
    for kwargs in ({}, {"device": "cpu"}, {"preset": "tiny", "dtype": torch.float32}):
        model = load_checkpoint(tiny_file, **kwargs)
        on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        assert not on_meta, (kwargs, on_meta[:5])
        assert all(p.dtype == torch.float32 for p in model.parameters())
        # and the loaded model runs
        with torch.no_grad():
            audio = model.vae.decode(torch.zeros(1, model.config.vae.latent_dim, 2), chunk_frames=None)
        assert audio.shape == (1, 2, 2 * model.config.vae.downsampling_ratio)
        assert torch.isfinite(audio).all()


def test_loaded_weights_are_aligned_whatever_the_metadata_length(tmp_path):
    """safetensors places tensors at offsets set by the header's length; loaded weights are copied to aligned
    memory, so outputs do not depend on the metadata (misaligned data takes other BLAS paths)."""
    model = build_model("tiny", seed=0)
    x = torch.randn(1, 16, 30, generator=torch.Generator().manual_seed(0))
    outputs = []
    for pad in range(4):
        path = save_checkpoint(model, tmp_path / f"m{pad}.safetensors", metadata={"note": "x" * (8 * pad + 3)})
        loaded = load_checkpoint(path)
        assert all(p.data_ptr() % 64 == 0 for p in loaded.parameters())
        with torch.inference_mode():
            outputs.append(loaded.vae.decode(x))
    assert all(torch.equal(outputs[0], o) for o in outputs[1:])
