"""Run ComfyUI API-format workflows without ComfyUI: nodes in graph order, values passed as ComfyUI passes them.

As ComfyUI's executor: each node's inputs are its widget values and, for links `[node_id, output_index]`, the
linked node's output; FLOAT/INT/STRING widgets are converted to their types; optional inputs that are absent
are not passed; VALIDATE_INPUTS gets the widget values it names (not linked ones) and must return True.
Core nodes the examples use (LoadVideo, GetVideoComponents, LoadAudio, SaveVideo, SaveAudio, PreviewImage) are
small stand-ins with the same inputs and outputs.
"""

from __future__ import annotations

import inspect
import json
from fractions import Fraction
from pathlib import Path

import av
import torch

from triergon import NODE_CLASS_MAPPINGS
from triergon.comfy_nodes import host
from triergon.comfy_nodes.video_type import Components, FileVideo
from triergon.triergon_core.audio import write_audio
from triergon.triergon_core.video import probe_video, read_frames

EXAMPLES = Path(__file__).resolve().parents[1] / "example_workflows"


class LoadVideo:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"file": ([], {"video_upload": True})}}

    RETURN_TYPES, FUNCTION = ("VIDEO",), "run"

    def run(self, file):
        return (FileVideo(host.input_path(file)),)


class GetVideoComponents:
    """As core: every frame at full size, the audio as decoded (native rate/channels), fps as a float."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO",)}}

    RETURN_TYPES, FUNCTION = ("IMAGE", "AUDIO", "FLOAT"), "run"

    def run(self, video):
        path = video.get_stream_source()
        info = probe_video(path)
        with av.open(str(path)) as c:
            rate = Fraction(c.streams.video[0].average_rate)
        frames = read_frames(path, fps=float(rate)).to_float()
        parts = Components(frames, rate, None)
        return parts.images, parts.audio if info.has_audio else None, float(parts.frame_rate)


class LoadAudio:
    """As core: the file's native rate and channel count, float32 [1, C, N]."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ([], {"audio_upload": True})}}

    RETURN_TYPES, FUNCTION = ("AUDIO",), "run"

    def run(self, audio):
        with av.open(str(host.input_path(audio))) as c:
            stream = c.streams.audio[0]
            chunks = [f.to_ndarray() for f in c.decode(stream)]
            rate = stream.codec_context.sample_rate
        import numpy as np

        wave = torch.from_numpy(np.concatenate(chunks, axis=-1)).float()
        if wave.dtype != torch.float32 or wave.abs().max() > 1.5:  # integer PCM
            wave = wave / 32768.0
        return ({"waveform": wave[None], "sample_rate": rate},)


class _Saver:
    def __init__(self, out: Path) -> None:
        self.out = out

    def path(self, prefix: str, ext: str) -> Path:
        path = self.out / f"{prefix}_{len(list(self.out.rglob('*'))):05}_.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path


class SaveVideo:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"video": ("VIDEO",), "filename_prefix": ("STRING", {"default": "video/ComfyUI"}),
                             "format": (["auto", "mp4"],), "codec": (["auto", "h264"],)}}

    RETURN_TYPES, FUNCTION, OUTPUT_NODE = (), "run", True
    saver: _Saver

    def run(self, video, filename_prefix, format, codec):
        video.save_to(self.saver.path(filename_prefix, "mp4"), format=format, codec=codec)
        return ()


class SaveAudio:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"audio": ("AUDIO",), "filename_prefix": ("STRING", {"default": "audio/ComfyUI"})}}

    RETURN_TYPES, FUNCTION, OUTPUT_NODE = (), "run", True
    saver: _Saver

    def run(self, audio, filename_prefix):
        for wave in audio["waveform"]:
            write_audio(self.saver.path(filename_prefix, "flac"), wave, sample_rate=audio["sample_rate"])
        return ()


class PreviewImage:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}}

    RETURN_TYPES, FUNCTION, OUTPUT_NODE = (), "run", True
    shown: list

    def run(self, images):
        assert images.dim() == 4 and images.shape[-1] == 3, images.shape
        self.shown.append(images)
        return ()


CORE = {cls.__name__: cls for cls in (LoadVideo, GetVideoComponents, LoadAudio, SaveVideo, SaveAudio, PreviewImage)}


def load_api(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.api.json").read_text())


def graph_order(prompt: dict) -> list[str]:
    order, seen = [], set()

    def visit(node_id: str) -> None:
        if node_id in seen:
            return
        seen.add(node_id)
        for value in prompt[node_id]["inputs"].values():
            if _is_link(value):
                visit(str(value[0]))
        order.append(node_id)

    for node_id in prompt:
        visit(node_id)
    return order


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and isinstance(value[0], str)


def _convert(value, spec):
    kind = spec[0] if isinstance(spec, tuple) else spec
    return {"FLOAT": float, "INT": int, "STRING": str, "BOOLEAN": bool}.get(kind, lambda v: v)(value) \
        if isinstance(kind, str) else value


def run_prompt(prompt: dict, out: Path, *, overrides: dict | None = None) -> dict[str, tuple]:
    """Execute `prompt`; returns each node's outputs. `overrides` replaces inputs: {node_id: {name: value}}."""
    results: dict[str, tuple] = {}
    saver, shown = _Saver(out), []
    for node_id in graph_order(prompt):
        node = prompt[node_id]
        cls = NODE_CLASS_MAPPINGS.get(node["class_type"]) or CORE[node["class_type"]]
        spec = cls.INPUT_TYPES()
        specs = {**spec.get("required", {}), **spec.get("optional", {})}
        inputs = {**node["inputs"], **(overrides or {}).get(node_id, {})}
        unknown = set(inputs) - set(specs)
        assert not unknown, f"node {node_id} ({node['class_type']}) has unknown inputs {unknown}"
        missing = set(spec.get("required", {})) - set(inputs)
        assert not missing, f"node {node_id} misses required inputs {missing}"
        kwargs, widgets = {}, {}
        for name, value in inputs.items():
            if _is_link(value):
                kwargs[name] = results[value[0]][value[1]]
            else:
                kwargs[name] = widgets[name] = _convert(value, specs[name])
        validate = getattr(cls, "VALIDATE_INPUTS", None)
        if validate is not None:
            wanted = inspect.signature(validate).parameters
            verdict = validate(**{k: v for k, v in widgets.items() if k in wanted})
            assert verdict is True, f"node {node_id} ({node['class_type']}) failed validation: {verdict}"
        obj = cls()
        if cls is SaveVideo or cls is SaveAudio:
            obj.saver = saver
        if cls is PreviewImage:
            obj.shown = shown
        results[node_id] = tuple(getattr(obj, cls.FUNCTION)(**kwargs))
        assert len(results[node_id]) == len(cls.RETURN_TYPES), (node_id, cls.RETURN_TYPES)
    return results
