"""Whole example graphs (read from example_workflows/*.api.json) run node by node as ComfyUI would, on the tiny
preset: exact audio lengths at NTSC and PAL rates, IMAGE + fps input, silent video, Mapping AUDIO, mono 48 kHz."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch
from _comfy_graph import EXAMPLES, load_api, run_prompt
from _videos import write_video
from test_comfy_nodes import LazyAudio

from triergon.triergon_core.audio import load_audio, write_audio
from triergon.triergon_core.video import probe_video

FAST = 6  # sampling steps for the graphs that test lengths and types (the files say 100, the paper's setting)


@pytest.fixture
def comfy_dirs(tmp_path, monkeypatch):
    inputs = tmp_path / "input"
    inputs.mkdir()
    monkeypatch.setenv("TRIERGON_INPUT_DIR", str(inputs))
    monkeypatch.setenv("TRIERGON_TEMP_DIR", str(tmp_path / "temp"))
    t = torch.arange(48000 * 3) / 48000
    write_audio(inputs / "triergon_example.wav", (0.3 * torch.sin(2 * torch.pi * 330 * t))[None], sample_rate=48000)
    return inputs, tmp_path / "output"


def example_video(inputs: Path, fps: Fraction, seconds: float = 1.5, audio: bool = True) -> float:
    """Write input/triergon_example.mp4; returns its duration from the timestamps."""
    path = inputs / "triergon_example.mp4"
    write_video(path, fps=fps, num_frames=round(seconds * fps), audio=audio, size=(36, 50))
    return probe_video(path).duration


def audio_stream_seconds(path: Path) -> tuple[float, int]:
    """(end of the last audio packet in seconds, channels): the length the file records for its audio."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        ends = [float((p.pts + p.duration) * p.time_base) for p in c.demux(stream) if p.size]
        return max(ends), stream.codec_context.channels


def fast(prompt: dict, **extra) -> dict:
    return {nid: {"steps": FAST} for nid, node in prompt.items() if node["class_type"] == "TriErgonSample"} | extra


def test_example_files_are_twins():
    """Each UI-format workflow has the API twin's nodes, links and widget values."""
    names = sorted(p.name.removesuffix(".api.json") for p in EXAMPLES.glob("*.api.json"))
    assert names == ["triergon_frames_fps", "triergon_text_reference_audio", "triergon_video_lufs_edit"]
    for name in names:
        api, ui = load_api(name), json.loads((EXAMPLES / f"{name}.json").read_text())
        nodes = {str(n["id"]): n for n in ui["nodes"]}
        assert {k: v["class_type"] for k, v in api.items()} == {k: n["type"] for k, n in nodes.items()}
        links = {(str(src), slot, str(dst)) for _, src, slot, dst, _, _ in ui["links"]}
        api_links = {(v[0], v[1], nid) for nid, node in api.items() for v in node["inputs"].values()
                     if isinstance(v, list)}
        assert links == api_links
        for nid, node in api.items():
            assert widget_values(node["class_type"], nodes[nid]["widgets_values"]) | {
                k: v for k, v in node["inputs"].items() if not isinstance(v, list)} == widget_values(
                node["class_type"], nodes[nid]["widgets_values"]), (name, nid)


def widget_values(class_type: str, values: list) -> dict:
    """UI widgets_values by input name, in INPUT_TYPES order (a seed's control_after_generate value skipped)."""
    from _comfy_graph import CORE

    from triergon import NODE_CLASS_MAPPINGS

    spec = (NODE_CLASS_MAPPINGS.get(class_type) or CORE[class_type]).INPUT_TYPES()
    named, values = {}, list(values)
    for name, entry in {**spec.get("required", {}), **spec.get("optional", {})}.items():
        if isinstance(entry[0], list) or entry[0] in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            named[name] = values.pop(0)
            if len(entry) > 1 and entry[1].get("control_after_generate"):
                assert values.pop(0) in ("fixed", "increment", "decrement", "randomize")
    assert not values, f"{class_type}: widgets_values left over: {values}"
    assert not any(isinstance(v, list) for v in named.values()), named
    return named


@pytest.mark.parametrize("fps", [Fraction(24000, 1001), Fraction(25), Fraction(30000, 1001), Fraction(60000, 1001)],
                         ids=["23.976", "25", "29.97", "59.94"])
def test_video_graph_audio_lasts_the_video_at_any_rate(comfy_dirs, fps):
    inputs, out = comfy_dirs
    duration = example_video(inputs, fps)
    assert duration == pytest.approx(round(1.5 * fps) / fps, abs=1e-9)
    prompt = load_api("triergon_video_lufs_edit")
    results = run_prompt(prompt, out, overrides=fast(prompt))
    audio = results["7"][0]
    assert audio["sample_rate"] == 44100 and audio["waveform"].dtype == torch.float32
    assert audio["waveform"].shape == (1, 2, round(duration * 44100))
    assert results["3"][0].num_frames == results["4"][0].num_frames == -(-round(duration * 6 * 1e6) // 10**6)
    (saved,) = out.rglob("*.mp4")
    assert probe_video(saved).duration == pytest.approx(duration, abs=1e-6)
    seconds, channels = audio_stream_seconds(saved)
    assert channels == 2 and seconds == pytest.approx(duration, abs=1 / 44100)
    assert results["11"][0].shape[0] == 1 and results["11"][0].shape[-1] == 3  # the plot, an IMAGE


@pytest.mark.parametrize("fps", [Fraction(30000, 1001), Fraction(60000, 1001)], ids=["29.97", "59.94"])
def test_frames_and_fps_graph(comfy_dirs, fps):
    inputs, out = comfy_dirs
    duration = example_video(inputs, fps, seconds=1.0)
    prompt = load_api("triergon_frames_fps")
    results = run_prompt(prompt, out, overrides=fast(prompt, **{"7": {"codec": "flac"}}))
    takes = results["6"][0]["waveform"]
    assert takes.shape == (2, 2, round(duration * 44100))
    assert not torch.equal(takes[0], takes[1])  # two takes, two seeds
    (saved,) = out.rglob("*.mp4")
    assert probe_video(saved).duration == pytest.approx(duration, abs=1e-6)
    seconds, _ = audio_stream_seconds(saved)
    assert seconds == pytest.approx(duration, abs=1 / 44100)
    muxed = load_audio(saved)  # 16-bit FLAC: take 1 to within a code
    assert muxed.shape == takes[1].shape
    assert (muxed - takes[1].clamp(-1, 1)).abs().max() < 1 / 32768 + 1e-6


def test_silent_video_graph(comfy_dirs):
    inputs, out = comfy_dirs
    duration = example_video(inputs, Fraction(25), seconds=1.0, audio=False)
    prompt = load_api("triergon_video_lufs_edit")
    results = run_prompt(prompt, out, overrides=fast(prompt))
    assert results["2"][1] is None  # LoadVideo's AUDIO of a silent video
    assert results["7"][0]["waveform"].shape[-1] == round(duration * 44100)
    (saved,) = out.rglob("*.mp4")
    assert audio_stream_seconds(saved)[0] == pytest.approx(duration, abs=1 / 44100)


def test_text_and_reference_audio_graph_as_saved(comfy_dirs):
    """The example exactly as the file says (100 steps), with its mono 48 kHz reference recording."""
    _, out = comfy_dirs
    results = run_prompt(load_api("triergon_text_reference_audio"), out)
    assert results["2"][0]["waveform"].shape == (1, 1, 144000)  # mono 48 kHz, as core LoadAudio gives it
    assert results["6"][0]["waveform"].shape == (1, 2, 44100)
    (saved,) = out.rglob("*.flac")
    with av.open(str(saved)) as c:
        stream = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(stream))
        assert (stream.codec_context.channels, stream.codec_context.sample_rate, samples) == (2, 44100, 44100)


def test_mapping_audio_from_another_pack(comfy_dirs):
    _, out = comfy_dirs
    prompt = load_api("triergon_text_reference_audio")
    lazy = LazyAudio(torch.randn(1, 2, 16000) * 0.1, 32000)
    overrides = fast(prompt, **{"3": {"reference_audio": lazy}, "4": {"audio": lazy}})
    results = run_prompt(prompt, out, overrides=overrides)
    assert results["6"][0]["waveform"].shape == (1, 2, 44100)
    assert results["4"][0].num_frames == 3  # the 0.5 s reference's curve, resampled to 1 s by the Sample node


def test_graph_inputs_are_not_mutated(comfy_dirs):
    from triergon import NODE_CLASS_MAPPINGS as nodes

    inputs, _ = comfy_dirs
    example_video(inputs, Fraction(25), seconds=1.0)
    model, _, _ = nodes["TriErgonModelLoader"]().load("preset: tiny (random weights)")
    frames = torch.rand(25, 20, 30, 3)
    before = frames.clone()
    (cond,) = nodes["TriErgonEncodeConditions"]().encode(model, text="x", images=frames, fps=25.0)
    (latent,) = nodes["TriErgonSample"]().sample(model, cond, steps=2)
    latents = latent.latents.clone()
    (audio,) = nodes["TriErgonDecode"]().decode(model, latent)
    wave = audio["waveform"].clone()
    nodes["TriErgonMuxVideo"]().mux(audio, images=frames, fps=25.0)
    nodes["TriErgonMeasureLUFS"]().measure(audio)
    assert torch.equal(frames, before) and torch.equal(latent.latents, latents)
    assert torch.equal(audio["waveform"], wave)
    assert cond.seconds == 1.0 and wave.shape[-1] == 44100


class VideoFromComponents:
    """Like comfy_api's: frames and a Fraction rate, no file (its stream source would re-encode every frame)."""

    def __init__(self, images, rate):
        self.images, self.rate = images, rate

    def get_components(self):
        from triergon.comfy_nodes.video_type import Components

        return Components(self.images, self.rate)

    def get_stream_source(self):
        raise AssertionError("the nodes read a components video by its components")


class BytesVideo:
    def __init__(self, data: bytes):
        self.data = data

    def get_components(self):
        raise AssertionError("the nodes read a file video by its stream")

    def get_stream_source(self):
        import io

        return io.BytesIO(self.data)


def test_core_video_kinds_components_and_bytes(comfy_dirs):
    from triergon import NODE_CLASS_MAPPINGS as nodes

    inputs, _ = comfy_dirs
    duration = example_video(inputs, Fraction(30000, 1001), seconds=1.0)
    audio = {"waveform": torch.zeros(1, 2, 44100 * 2), "sample_rate": 44100}
    (muxed,) = nodes["TriErgonMuxVideo"]().mux(audio, video=BytesVideo((inputs / "triergon_example.mp4").read_bytes()))
    assert probe_video(muxed.get_stream_source()).duration == pytest.approx(duration, abs=1e-9)
    frames = torch.rand(30, 20, 30, 3)
    (muxed,) = nodes["TriErgonMuxVideo"]().mux(audio, video=VideoFromComponents(frames, Fraction(30000, 1001)))
    path = muxed.get_stream_source()
    assert probe_video(path).duration == pytest.approx(30 * 1001 / 30000, abs=1e-9)
    assert audio_stream_seconds(Path(path))[0] == pytest.approx(30 * 1001 / 30000, abs=1 / 44100)


def test_video_longer_than_the_window_is_refused_with_the_limit(comfy_dirs):
    from triergon import NODE_CLASS_MAPPINGS as nodes

    inputs, _ = comfy_dirs
    path = inputs / "long.mp4"
    write_video(path, fps=1, num_frames=61, size=(16, 16))
    model, _, _ = nodes["TriErgonModelLoader"]().load("preset: tiny (random weights)")
    (video, audio, fps, seconds) = nodes["TriErgonLoadVideo"]().load("long.mp4")
    assert audio is None and seconds == pytest.approx(61.0) and fps == pytest.approx(1.0)
    with pytest.raises(ValueError, match="60 s window"):
        nodes["TriErgonEncodeConditions"]().encode(model, video=video)
