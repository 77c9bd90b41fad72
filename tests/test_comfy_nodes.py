"""The ComfyUI nodes without ComfyUI: INPUT_TYPES schemas, node behaviour, media conversions, edit text format."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

import pytest
import torch

from triergon import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from triergon.comfy_nodes.media import audio_stereo, fps_fraction, resolve_video
from triergon.triergon_core.lufs_curve import LufsCurve
from triergon.triergon_core.lufs_edit_text import edit_curve, parse_edits

NODE_IDS = {"TriErgonModelLoader", "TriErgonLoadVideo", "TriErgonEncodeConditions", "TriErgonPredictLUFS",
            "TriErgonMeasureLUFS", "TriErgonEditLUFSCurve", "TriErgonPlotLUFS", "TriErgonSample", "TriErgonDecode",
            "TriErgonMuxVideo"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
LINK_TYPES = {"TRIERGON_MODEL", "TRIERGON_CONDITIONS", "LUFS_CURVE", "TRIERGON_LATENT", "VIDEO", "AUDIO", "IMAGE"}
OPTION_KEYS = {"default", "min", "max", "step", "round", "multiline", "tooltip", "control_after_generate",
               "video_upload", "forceInput"}


def test_node_ids_and_display_names():
    assert set(NODE_CLASS_MAPPINGS) == NODE_IDS
    assert set(NODE_DISPLAY_NAME_MAPPINGS) == NODE_IDS
    for node_id, name in NODE_DISPLAY_NAME_MAPPINGS.items():
        assert name and "_" not in name and not name.startswith("TriErgon"), (node_id, name)


@pytest.mark.parametrize("node_id", sorted(NODE_IDS))
def test_input_types_follow_comfyui_schema(node_id):
    cls = NODE_CLASS_MAPPINGS[node_id]
    assert cls.CATEGORY == "Tri-Ergon"
    assert isinstance(cls.FUNCTION, str) and callable(getattr(cls, cls.FUNCTION))
    assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
    assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    method_args = set(list(__import__("inspect").signature(getattr(cls, cls.FUNCTION)).parameters)[1:])
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            assert name in method_args, f"{node_id}.{name} is not a parameter of {cls.FUNCTION}"
            assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, (name, entry)
            kind, options = entry[0], (entry[1] if len(entry) == 2 else {})
            assert isinstance(options, dict) and set(options) <= OPTION_KEYS, (name, options)
            if isinstance(kind, list):  # combo
                assert all(isinstance(x, str) for x in kind), (name, kind)
                if "default" in options:
                    assert options["default"] in kind, (name, options["default"], kind)
            elif kind in WIDGET_TYPES:
                default = options["default"]
                py = {"INT": int, "FLOAT": float, "STRING": str, "BOOLEAN": bool}[kind]
                assert type(default) is py, (name, default)
                if kind in ("INT", "FLOAT"):
                    assert options["min"] <= default <= options["max"], (name, options)
                    assert type(options["min"]) is py and type(options["max"]) is py, (name, options)
            else:
                assert kind in LINK_TYPES, (name, kind)
    # optional args of the method have defaults (ComfyUI leaves absent optional inputs out)
    params = __import__("inspect").signature(getattr(cls, cls.FUNCTION)).parameters
    for name in spec.get("optional", {}):
        assert params[name].default is not params[name].empty, f"{node_id}.{name} needs a default"


def test_importing_the_pack_imports_no_comfyui():
    import subprocess
    import sys

    code = ("import sys, triergon; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('comfy', 'folder_paths', 'comfy_api', 'triton')]; print(bad); assert not bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


@pytest.mark.parametrize(("fps", "exact"), [(23.976, Fraction(24000, 1001)), (25.0, Fraction(25)),
                                            (29.97, Fraction(30000, 1001)), (59.94, Fraction(60000, 1001)),
                                            (29.970029970029973, Fraction(30000, 1001)), (12.5, Fraction(25, 2))])
def test_fps_becomes_the_exact_rate(fps, exact):
    assert fps_fraction(fps) == exact


def test_frames_without_fps_are_refused_with_advice():
    with pytest.raises(ValueError, match="loaded_fps"):
        resolve_video(images=torch.zeros(4, 8, 8, 3))
    with pytest.raises(ValueError, match="positive"):
        fps_fraction(-1.0)


class LazyAudio(Mapping):
    """A Mapping AUDIO like VideoHelperSuite's lazy one (not a dict)."""

    def __init__(self, wave, rate):
        self._d = {"waveform": wave, "sample_rate": rate}

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return 2


def test_mapping_audio_and_mono_48k_become_stereo_44k_without_touching_the_input():
    wave = torch.randn(1, 1, 48000) * 0.1
    before = wave.clone()
    out = audio_stereo(LazyAudio(wave, 48000))
    assert out.shape == (2, 44100)
    assert torch.equal(out[0], out[1])
    assert torch.equal(wave, before)
    with pytest.raises(ValueError, match="take"):
        audio_stereo({"waveform": wave, "sample_rate": 48000}, take=1)
    with pytest.raises(ValueError, match="AUDIO"):
        audio_stereo(wave)


def test_edit_text_format_calls_the_curve_methods():
    curve = LufsCurve.constant(-20.0, duration=6.0)
    got = edit_curve(curve, "offset -6 start=2 end=4 channels=L  # quieter\n\nset-level -30 start=5\nswap\n"
                            "copy R:L\nclamp lo=-40 hi=-22")
    want = (curve.offset(-6, start=2, end=4, channels="L").set_level(-30, start=5, end=None).swap_channels()
            .copy_channel("R", "L").clamp(-40, -22))
    assert got == want
    assert edit_curve(curve, "pan -0.5\nfade_in 1 floor=-60\nsmooth 0.5\nresample 3") == \
        curve.pan(-0.5).fade_in(1, floor=-60).smooth(0.5).resample(3)


@pytest.mark.parametrize(("text", "message"), [
    ("ofset -6", "line 1.*unknown edit 'ofset'"),
    ("offset\n", "offset needs db"),
    ("offset x", "not a number"),
    ("offset -6 channels=C", "not L or R"),
    ("clamp -40 -10 start=2", "does not take start="),  # clamp and resample act on the whole curve
    ("\n\npan 1 2", "line 3.*takes <amount>"),
])
def test_edit_text_errors_name_the_line(text, message):
    with pytest.raises(ValueError, match=message):
        parse_edits(text)


def test_edit_node_validates_text_and_never_changes_its_input():
    node = NODE_CLASS_MAPPINGS["TriErgonEditLUFSCurve"]
    assert node.VALIDATE_INPUTS(edits="offset -6 start=2") is True
    assert "unknown edit" in node.VALIDATE_INPUTS(edits="louder 3")
    curve = LufsCurve.constant(-20.0, duration=3.0)
    copy = LufsCurve(curve.values, rate=curve.rate)
    (out,) = node().edit(curve, offset_db=-6.0, end=1.0, channels="R", edits="pan 0.5")
    assert curve == copy and out != curve
    assert out == curve.offset(-6, end=1, channels="R").pan(0.5)
    with pytest.raises(ValueError, match=r"line 1 .*pan amount"):
        node().edit(curve, edits="pan 2")


def test_validate_inputs_refuse_bad_fps_and_long_durations():
    encode = NODE_CLASS_MAPPINGS["TriErgonEncodeConditions"]
    assert encode.VALIDATE_INPUTS(duration=5.0, fps=29.97) is True
    assert encode.VALIDATE_INPUTS() is True  # linked inputs are not passed
    assert "fps" in encode.VALIDATE_INPUTS(duration=1.0, fps=-25.0)
    assert "60" in encode.VALIDATE_INPUTS(duration=75.0)
    assert "fps" in NODE_CLASS_MAPPINGS["TriErgonMuxVideo"].VALIDATE_INPUTS(fps=-1.0)


def test_models_folder_lists_checkpoints_and_names_the_folder_when_missing(tmp_path, monkeypatch):
    from triergon.comfy_nodes import host

    (tmp_path / "lufs_predictor").mkdir()
    (tmp_path / "a.safetensors").write_bytes(b"x")
    (tmp_path / "lufs_predictor" / "t.safetensors").write_bytes(b"x")
    (tmp_path / "languagebind" / "lb1").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("x")
    monkeypatch.setenv("TRIERGON_MODELS_DIR", str(tmp_path))
    assert host.checkpoint_files() == ["a.safetensors"]
    assert host.predictor_files() == ["t.safetensors"]
    assert host.model_subfolders("languagebind") == ["lb1"]
    spec = NODE_CLASS_MAPPINGS["TriErgonModelLoader"].INPUT_TYPES()
    assert "a.safetensors" in spec["required"]["checkpoint"][0]
    assert "lb1" in spec["optional"]["languagebind"][0]
    with pytest.raises(FileNotFoundError, match=f"put it in {tmp_path}"):
        NODE_CLASS_MAPPINGS["TriErgonModelLoader"]().load("b.safetensors")


def test_loader_outputs_the_checkpoints_recommended_cfg_and_steps(tmp_path, monkeypatch):
    """Load Tri-Ergon Model's cfg / steps outputs: what the checkpoint recommends, the paper's when it names none;
    Sample's cfg and steps take FLOAT / INT links from them."""
    from triergon.triergon_core.checkpoint import save_checkpoint
    from triergon.triergon_core.model import build_model
    from triergon.triergon_core.sampling import SamplingSettings

    loader = NODE_CLASS_MAPPINGS["TriErgonModelLoader"]
    assert loader.RETURN_TYPES == ("TRIERGON_MODEL", "FLOAT", "INT") and loader.RETURN_NAMES[1:] == ("cfg", "steps")
    sample_spec = NODE_CLASS_MAPPINGS["TriErgonSample"].INPUT_TYPES()["required"]
    assert (sample_spec["cfg"][0], sample_spec["steps"][0]) == ("FLOAT", "INT")
    monkeypatch.setenv("TRIERGON_MODELS_DIR", str(tmp_path))
    model = build_model("tiny", seed=0)
    model.sampling = SamplingSettings(steps=40, cfg_scale=2.5)
    save_checkpoint(model, tmp_path / "tuned.safetensors")
    _, cfg, steps = loader().load("tuned.safetensors")
    assert (cfg, steps) == (2.5, 40) and isinstance(cfg, float) and isinstance(steps, int)
    assert loader().load("preset: tiny (random weights)")[1:] == (7.0, 100)


def test_predict_without_lufs_models_says_what_to_choose():
    loader, predict = NODE_CLASS_MAPPINGS["TriErgonModelLoader"], NODE_CLASS_MAPPINGS["TriErgonPredictLUFS"]
    model, _, _ = loader().load("preset: tiny (random weights)")
    assert model.random_weights and math.isclose(model.config.sequence.max_seconds, 60.0)
    with pytest.raises(ValueError, match="DINOv2 and T_LUFS"):
        predict().predict(model, images=torch.zeros(3, 8, 8, 3), fps=25.0)


def test_conditions_without_towers_say_where_to_put_them():
    from dataclasses import replace

    model, _, _ = NODE_CLASS_MAPPINGS["TriErgonModelLoader"]().load("preset: tiny (random weights)")
    bare = replace(model, encoders=None)
    encode = NODE_CLASS_MAPPINGS["TriErgonEncodeConditions"]()
    with pytest.raises(ValueError, match=r"text conditioning needs LanguageBind.*models/triergon/languagebind"):
        encode.encode(bare, text="rain", duration=1.0)
    (cond,) = encode.encode(bare, duration=1.0)  # no condition but the duration: no towers needed
    assert cond.seconds == 1.0 and cond.conditions.text is None
