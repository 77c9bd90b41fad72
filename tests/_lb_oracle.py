"""The `languagebind` package (0.1.0) as the towers' test oracle: its model, config and tokenizer classes.

The test set-up installs it with `--no-deps`. Its `__init__` imports every processor (torchvision, pytorchvideo,
OpenCV, decord), so its modules are imported as `_lb_oracle_pkg.*`: a private package whose search path is the
installed package's folder and whose `__init__` never runs; the models' one absolute import
(`languagebind._compat`) points at the private copy only while they import. `_lb_shim.shim_modules` patches
what the package's code needs to run correctly under transformers 5.x (see its doc; `patched` lists it).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import threading
import types
from pathlib import Path

import pytest
from _lb_shim import shim_modules

_PRIVATE = "_lb_oracle_pkg"
_LOCK = threading.Lock()


def oracle() -> types.SimpleNamespace:
    """The package's classes (`LanguageBindVideo`, `LanguageBindVideoConfig`, `LanguageBindAudio`,
    `LanguageBindAudioConfig`, `LanguageBindVideoTokenizer`, `LanguageBindAudioTokenizer`, `video_module`,
    `audio_module`, `patched`); skips the calling test when the package is not installed."""
    with _LOCK:
        pkg = sys.modules.get(_PRIVATE)
        if pkg is not None and hasattr(pkg, "classes"):
            return pkg.classes
        spec = importlib.machinery.PathFinder.find_spec("languagebind")  # finds, never executes, the package
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("the test oracle `languagebind==0.1.0` is not installed (pip install --no-deps languagebind)")
        locations = list(spec.submodule_search_locations)
        pkg = types.ModuleType(_PRIVATE, "private import of the `languagebind` package's model modules")
        pkg.__path__ = locations
        pkg.__spec__ = importlib.machinery.ModuleSpec(_PRIVATE, None, is_package=True)
        pkg.__spec__.submodule_search_locations = locations
        sys.modules[_PRIVATE] = pkg
        alias = None
        try:
            if any((Path(loc) / "_compat.py").is_file() for loc in locations):
                compat = importlib.import_module(f"{_PRIVATE}._compat")
                if "languagebind._compat" not in sys.modules:
                    alias = sys.modules["languagebind._compat"] = compat
            mods = {name: importlib.import_module(f"{_PRIVATE}.{name}") for name in (
                "video.modeling_video", "video.tokenization_video", "audio.modeling_audio",
                "audio.tokenization_audio")}
        except Exception:
            for name in [n for n in sys.modules if n == _PRIVATE or n.startswith(_PRIVATE + ".")]:
                del sys.modules[name]
            raise
        finally:
            if alias is not None and sys.modules.get("languagebind._compat") is alias:
                del sys.modules["languagebind._compat"]
        video, audio = mods["video.modeling_video"], mods["audio.modeling_audio"]
        patched = shim_modules(video, audio)
        pkg.classes = types.SimpleNamespace(
            LanguageBindVideo=video.LanguageBindVideo, LanguageBindVideoConfig=video.LanguageBindVideoConfig,
            LanguageBindAudio=audio.LanguageBindAudio, LanguageBindAudioConfig=audio.LanguageBindAudioConfig,
            LanguageBindVideoTokenizer=mods["video.tokenization_video"].LanguageBindVideoTokenizer,
            LanguageBindAudioTokenizer=mods["audio.tokenization_audio"].LanguageBindAudioTokenizer,
            video_module=video, audio_module=audio, patched=patched,
        )
        return pkg.classes


def eager_reference(model, kind: str):
    """The package's model set up as the reference run: eager attention in both sub-configs (they carry none),
    and for the audio tower the package's own patch embedding (transformers' refuses the 112 x 1036 image)."""
    lb = oracle()
    for sub in (model.config.text_config, model.config.vision_config):
        sub._attn_implementation = "eager"
    if kind == "audio":
        emb = model.vision_model.embeddings
        emb.forward = types.MethodType(lb.video_module.CLIPVisionEmbeddings.forward, emb)
    return model
