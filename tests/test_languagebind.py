"""LanguageBind encoders on tiny checkpoints written by the package's own classes (the test oracle, `_lb_oracle`).

Preprocessing parity: the package's processor code runs where it can (its audio transform and text path, with
OpenCV / torchvision stubbed out of the import; its video loader with a fake decord reader and the torchvision /
pytorchvideo primitives restated here from their sources), and the rest is checked by hand.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import math
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from _helpers import assert_unit_embeddings, condition_clips, perturb_
from _lb_oracle import eager_reference, oracle
from _lb_shim import repair_from_pretrained, skip_processor_init_check
from _videos import read_index, write_video

import triergon
from triergon.triergon_core.generate import prepare_conditions
from triergon.triergon_core.languagebind import LanguageBindEncoders, bytes_to_unicode, load_languagebind
from triergon.triergon_core.languagebind_preprocess import (
    OPENAI_DATASET_MEAN,
    OPENAI_DATASET_STD,
    center_crop,
    frame_indices,
    frame_times,
    preprocess_audio,
    preprocess_video,
    short_side_scale,
)
from triergon.triergon_core.presets import get_preset

pytestmark = pytest.mark.encoders

D = 64  # tiny projection size: the tiny preset's conditioning embed_dim
MERGES = [("r", "a"), ("ra", "i"), ("rai", "n</w>"), ("o", "n</w>")]
VOCAB = [*bytes_to_unicode().values()]
VOCAB = [*VOCAB, *(c + "</w>" for c in VOCAB), *("".join(m) for m in MERGES), "<|startoftext|>", "<|endoftext|>"]
TEXT = {"vocab_size": len(VOCAB), "hidden_size": 32, "intermediate_size": 64, "projection_dim": D,
        "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 77,
        "bos_token_id": len(VOCAB) - 2, "eos_token_id": len(VOCAB) - 1, "pad_token_id": len(VOCAB) - 1}
VISION = {"hidden_size": 32, "intermediate_size": 64, "projection_dim": D, "num_hidden_layers": 2,
          "num_attention_heads": 2, "image_size": 32, "patch_size": 16}
VIDEO = {**VISION, "add_time_attn": True, "num_frames": 8, "lora_r": 0}
AUDIO = {**VISION, "num_frames": 1, "num_mel_bins": 32, "target_length": 64, "audio_mean": -4.27,
         "audio_std": 4.57, "lora_r": 2}
PROMPTS = ["rain on a tin roof", "a dog barks twice far away", "on"]


def _write_tokenizer(folder: Path) -> None:
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(VOCAB)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))


def _save_tower(folder: Path, kind: str, vision: dict, seed: int) -> None:
    lb = oracle()
    config_cls = lb.LanguageBindVideoConfig if kind == "video" else lb.LanguageBindAudioConfig
    model_cls = lb.LanguageBindVideo if kind == "video" else lb.LanguageBindAudio
    config = config_cls(text_config=TEXT, vision_config=vision, projection_dim=D)
    pristine = copy.deepcopy(config)  # the audio model's init rewrites vision_config.image_size as a list
    torch.manual_seed(seed)
    perturb_(model_cls(config), std=0.05, seed=seed).save_pretrained(folder)  # perturbed: LoRA B is 0 at init
    pristine.save_pretrained(folder)
    _write_tokenizer(folder)


def _package_model(folder: Path, kind: str):
    """The package's model as it loads itself, with only what transformers 4.5x / 5.x need to run it right."""
    lb = oracle()
    cls = lb.LanguageBindVideo if kind == "video" else lb.LanguageBindAudio
    model = cls.from_pretrained(folder, local_files_only=True).eval()
    repaired = repair_from_pretrained(model, folder)
    assert not repaired or int(transformers.__version__.split(".")[0]) >= 5, repaired  # 4.x loads it right
    return eager_reference(model, kind)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = tmp_path_factory.mktemp("languagebind")
    _save_tower(folder / "video", "video", VIDEO, seed=1)
    _save_tower(folder / "audio", "audio", AUDIO, seed=2)
    return folder


@pytest.fixture(scope="module")
def enc(root):
    return load_languagebind(root)


@pytest.fixture(scope="module")
def clips():
    return condition_clips()



# --- the package's processors, imported with their unavailable dependencies stubbed ------------------------


def _stub(monkeypatch, name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    monkeypatch.setitem(sys.modules, name, module)
    return module


def _load_processing(kind: str):
    """Execute the package's processing_<kind>.py by path (under a throwaway name, never in sys.modules)."""
    path = Path(inspect.getfile(oracle().LanguageBindVideo)).parents[1] / kind / f"processing_{kind}.py"
    spec = importlib.util.spec_from_file_location(f"_lb_test_processing_{kind}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Dummy:
    def __init__(self, *args, **kwargs):
        pass


# torchvision / pytorchvideo primitives as their sources define them (torchvision.transforms._functional_video,
# pytorchvideo.transforms.functional.short_side_scale); the flip is the identity (see the preprocessing module).
class _Compose:
    def __init__(self, transforms):
        self.transforms = transforms

    def __call__(self, x):
        for t in self.transforms:
            x = t(x)
        return x


class _Lambda:
    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x):
        return self.fn(x)


class _NormalizeVideo:
    def __init__(self, mean, std, inplace=False):
        self.mean, self.std = mean, std

    def __call__(self, clip):
        clip = clip.clone()
        mean = torch.as_tensor(self.mean, dtype=clip.dtype)
        std = torch.as_tensor(self.std, dtype=clip.dtype)
        return clip.sub_(mean[:, None, None, None]).div_(std[:, None, None, None])


class _ShortSideScale:
    def __init__(self, size):
        self.size = size

    def __call__(self, x):
        _c, _t, h, w = x.shape
        if w < h:
            new_h, new_w = int(math.floor((float(h) / w) * self.size)), self.size  # noqa: RUF046 (as pytorchvideo)
        else:
            new_h, new_w = self.size, int(math.floor((float(w) / h) * self.size))  # noqa: RUF046
        return torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


class _CenterCropVideo:
    def __init__(self, crop_size):
        self.crop_size = (crop_size, crop_size)

    def __call__(self, clip):
        h, w = clip.size(-2), clip.size(-1)
        th, tw = self.crop_size
        i, j = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))  # noqa: RUF046 (as torchvision)
        return clip[..., i:i + th, j:j + tw]


class _NoFlip:
    def __init__(self, p=0.5):
        pass

    def __call__(self, clip):
        return clip


@pytest.fixture
def processing_audio(monkeypatch):
    _stub(monkeypatch, "cv2")
    transforms = _stub(monkeypatch, "torchvision.transforms")
    _stub(monkeypatch, "torchvision", transforms=transforms)
    skip_processor_init_check(monkeypatch)
    return _load_processing("audio")


@pytest.fixture
def processing_video(monkeypatch):
    videos: dict[str, torch.Tensor] = {}

    class VideoReader:  # decord's, with the torch bridge: uint8 [T, H, W, 3]
        def __init__(self, path, ctx=None):
            self.frames = videos[path]

        def __len__(self):
            return self.frames.shape[0]

        def get_batch(self, ids):
            return self.frames[torch.as_tensor(ids)]

    _stub(monkeypatch, "cv2")
    _stub(monkeypatch, "decord", VideoReader=VideoReader, cpu=lambda i: None,
          bridge=types.SimpleNamespace(set_bridge=lambda name: None))
    transforms = _stub(monkeypatch, "torchvision.transforms", Compose=_Compose, Lambda=_Lambda, ToTensor=_Dummy)
    _stub(monkeypatch, "torchvision.transforms._transforms_video", NormalizeVideo=_NormalizeVideo,
          RandomCropVideo=_Dummy, RandomHorizontalFlipVideo=_NoFlip, CenterCropVideo=_CenterCropVideo)
    _stub(monkeypatch, "torchvision", transforms=transforms)
    _stub(monkeypatch, "pytorchvideo")
    _stub(monkeypatch, "pytorchvideo.data")
    _stub(monkeypatch, "pytorchvideo.data.encoded_video", EncodedVideo=_Dummy)
    _stub(monkeypatch, "pytorchvideo.transforms", ApplyTransformToKey=_Dummy, ShortSideScale=_ShortSideScale,
          UniformTemporalSubsample=_Dummy)
    skip_processor_init_check(monkeypatch)
    module = _load_processing("video")
    module.fake_videos = videos
    return module


# --- import --------------------------------------------------------------------------------------------------


def test_runtime_never_imports_the_package(root, tmp_path):
    """Loading and running the towers imports neither `languagebind` nor `peft` (our own modules)."""
    code = ("import sys, torch; from triergon.triergon_core.languagebind import load_languagebind; "
            f"e = load_languagebind({str(root)!r}); e.encode_text(['rain']); e.encode_audio(torch.randn(1, 2, 8000)); "
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('languagebind', 'peft', '_lb_oracle_pkg')))")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"


# --- preprocessing parity and hand-computed expectations ----------------------------------------------------


@pytest.mark.parametrize("seconds", [0.3, 0.655, 2.0, 7.3])
def test_audio_matches_package_transform(processing_audio, monkeypatch, seconds):
    # 0.3 s: tiled; 0.655 s: 64 frames exactly; 2 s and 7.3 s: 3 chunks (np.random.choice -> middle element)
    monkeypatch.setattr(np.random, "choice", lambda a: a[len(a) // 2])
    g = torch.Generator().manual_seed(3)
    wave = torch.randn(2, round(seconds * 44100), generator=g) * torch.tensor([[0.2], [0.05]]) + 0.01
    config = types.SimpleNamespace(vision_config=types.SimpleNamespace(
        audio_sample_rate=16000, num_mel_bins=32, target_length=64, audio_mean=-4.27, audio_std=4.57))
    expected = processing_audio.get_audio_transform(config)((wave.clone(), 44100))
    ours = preprocess_audio(wave, 44100, num_mel_bins=32, target_length=64, audio_mean=-4.27, audio_std=4.57)
    assert ours.shape == expected.shape == (3, 32, 64)
    assert (ours - expected).abs().max() <= 1e-6
    if seconds > 1:  # the chunks differ, and only the first channel is read
        assert not torch.equal(ours[0], ours[2])
        swapped = preprocess_audio(wave.flip(0), 44100, num_mel_bins=32, target_length=64)
        assert not torch.allclose(swapped, preprocess_audio(wave, 44100, num_mel_bins=32, target_length=64))


def test_audio_too_short_is_a_clear_error():
    with pytest.raises(ValueError, match="shorter than one 25 ms"):
        preprocess_audio(torch.zeros(2, 1000), 44100)


def test_text_matches_package_processor(processing_audio, root, enc):
    tokenizer = oracle().LanguageBindAudioTokenizer.from_pretrained(root / "audio")
    config = types.SimpleNamespace(vision_config=types.SimpleNamespace(
        audio_sample_rate=16000, num_mel_bins=32, target_length=64, audio_mean=0.0, audio_std=1.0))
    texts = [*PROMPTS, "Rain " * 90]  # the last one is truncated to 77 tokens, ending with <|endoftext|>
    expected = processing_audio.LanguageBindAudioProcessor(config, tokenizer)(text=texts, return_tensors="pt")
    ours = enc.tokenize(texts)
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(ours[key], expected[key])
    assert ours["input_ids"].shape == (4, 77) and ours["input_ids"][3, -1] == TEXT["eos_token_id"]
    assert ours["input_ids"][0, :4].tolist() == [TEXT["bos_token_id"], VOCAB.index("rain</w>"),
                                                 VOCAB.index("on</w>"), VOCAB.index("a</w>")]


@pytest.mark.parametrize("shape", [(20, 240, 320), (5, 300, 225), (9, 230, 231)])
def test_video_matches_package_loader(processing_video, shape):
    g = torch.Generator().manual_seed(4)
    frames = torch.randint(0, 256, (*shape, 3), generator=g, dtype=torch.uint8)
    processing_video.fake_videos["clip.mp4"] = frames
    config = types.SimpleNamespace(vision_config=types.SimpleNamespace(video_decode_backend="decord"))
    transform = processing_video.get_video_transform(config)
    expected = processing_video.load_and_transform_video("clip.mp4", transform, video_decode_backend="decord",
                                                         num_frames=8)
    ours = preprocess_video(frames.float() / 255, num_frames=8, size=224)  # float frames in [0, 1]
    assert ours.shape == expected.shape == (3, 8, 224, 224)
    assert (ours - expected).abs().max() <= 1e-5
    assert torch.equal(preprocess_video(frames, size=224), ours)  # uint8 input: the same


def test_video_preprocessing_by_hand():
    assert frame_indices(20).tolist() == [0, 2, 5, 8, 10, 13, 16, 19]  # first and last frame, truncated
    assert frame_indices(3).tolist() == [0, 0, 0, 0, 1, 1, 1, 2]  # i * 2 / 7, truncated
    # short side to the size, long side floored; no antialias: [1, 2, 3, 4] halves to [1.5, 3.5]
    row = torch.tensor([1.0, 2, 3, 4]).expand(1, 1, 2, 4)
    torch.testing.assert_close(short_side_scale(row, 1), torch.tensor([[[[1.5, 3.5]]]]))
    assert short_side_scale(torch.zeros(3, 1, 240, 320), 224).shape[-2:] == (224, 298)
    assert short_side_scale(torch.zeros(3, 1, 321, 240), 224).shape[-2:] == (299, 224)
    # crop offsets round half to even, as Python's round: 225 -> 0 (0.5), 227 -> 2 (1.5)
    x = torch.arange(227.0).expand(1, 1, 224, 227)
    assert center_crop(x[..., :225], 224)[0, 0, 0, 0] == 0 and center_crop(x, 224)[0, 0, 0, 0] == 2
    # a grey frame: (v - mean) / std in each channel
    grey = torch.full((4, 50, 60, 3), 0.5)
    out = preprocess_video(grey, size=32)
    want = (0.5 - torch.tensor(OPENAI_DATASET_MEAN)) / torch.tensor(OPENAI_DATASET_STD)
    torch.testing.assert_close(out.mean((1, 2, 3)), want)
    # frame times: the middle of each picked frame's display interval
    np.testing.assert_allclose(frame_times(1.0, 25, 8), (frame_indices(25) + 0.5) / 25)


# --- the encoders --------------------------------------------------------------------------------------------


def test_shapes_norms_determinism(enc, clips):
    for name, fn, x in (("text", enc.encode_text, PROMPTS), ("audio", enc.encode_audio, clips["audio"]),
                        ("video", enc.encode_video, clips["video"])):
        out = fn(x)
        assert_unit_embeddings(out, 3, D)
        assert torch.equal(out, fn(x)), name
        assert not torch.allclose(out[0], out[1]), name


def test_batch_equals_singles(enc, clips):
    for fn, x in ((enc.encode_text, PROMPTS), (enc.encode_audio, clips["audio"]), (enc.encode_video, clips["video"])):
        batch = fn(x)
        singles = torch.cat([fn(x[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)


def test_matches_package_models(root, enc, clips, processing_audio, monkeypatch):
    """Our encoders == the package's processors + models (eager attention) + L2 normalisation."""
    monkeypatch.setattr(np.random, "choice", lambda a: a[len(a) // 2])
    video, audio = _package_model(root / "video", "video"), _package_model(root / "audio", "audio")
    with torch.no_grad():
        ids = video.get_text_features(**enc.tokenize(PROMPTS))
        config = types.SimpleNamespace(vision_config=audio.config.vision_config)
        transform = processing_audio.get_audio_transform(config)
        mels = torch.stack([transform((wave.clone(), 44100)) for wave in clips["audio"]])
        aud = audio.get_image_features(pixel_values=mels)
        pix = torch.stack([preprocess_video(c, num_frames=8, size=32) for c in clips["video"]])
        vid = video.get_image_features(pixel_values=pix)
    for ours, ref in ((enc.encode_text(PROMPTS), ids), (enc.encode_audio(clips["audio"]), aud),
                      (enc.encode_video(clips["video"]), vid)):
        torch.testing.assert_close(ours, F.normalize(ref, dim=-1)[:, None], atol=1e-5, rtol=0)


def test_video_file(root, enc, tmp_path):
    from triergon.triergon_core.video import read_frames

    path = write_video(tmp_path / "clip.mp4", fps=25, num_frames=30, size=(48, 64))
    picked = enc.read_video_frames(path)
    assert [read_index(f.numpy()) for f in picked.frames] == frame_indices(30).tolist()  # 0 4 8 .. 25 29
    assert picked.frames.shape == (8, 48, 64, 3)  # full size: the resize is LanguageBind's own
    centres = enc.read_video_frames(path, sampling="centres")
    assert [read_index(f.numpy()) for f in centres.frames] == [1, 5, 9, 13, 16, 20, 24, 28]
    clip = enc.read_video_frames(path, start=0.4, end=1.2)  # frames 10..29
    assert [read_index(f.numpy()) for f in clip.frames] == [10, 12, 15, 18, 20, 23, 26, 29]
    # the file's embedding is that of all its frames (LanguageBind picks the same 8)
    every = read_frames(path, fps=25).to_float()
    assert every.shape[0] == 30
    out = enc.encode_video_file(path)
    assert_unit_embeddings(out, 1, D)
    torch.testing.assert_close(out, enc.encode_video(every[None]), atol=1e-6, rtol=0)


def test_audio_file_matches_package(root, enc, tmp_path, processing_audio, monkeypatch):
    """A 48 kHz stereo file: ours == the package's transform on the file's samples at the file's rate."""
    from triergon.triergon_core.audio import load_audio, write_audio

    monkeypatch.setattr(np.random, "choice", lambda a: a[len(a) // 2])
    g = torch.Generator().manual_seed(5)
    path = write_audio(tmp_path / "ref.wav", torch.randn(2, 48000, generator=g) * 0.1, sample_rate=48000, bits=24)
    raw = load_audio(path, target_rate=48000)  # what torchaudio.load would give
    audio = _package_model(root / "audio", "audio")
    transform = processing_audio.get_audio_transform(types.SimpleNamespace(vision_config=audio.config.vision_config))
    with torch.no_grad():
        want = F.normalize(audio.get_image_features(pixel_values=transform((raw, 48000))[None]), dim=-1)[:, None]
    torch.testing.assert_close(enc.encode_audio_file(path), want, atol=1e-5, rtol=0)


def test_video_tower_with_3d_patch_embedding_is_a_clear_error(tmp_path, clips):
    """clip_type "vl_new" (the package's CLIPVisionEmbeddings3D) is not used by the released checkpoints."""
    _save_tower(tmp_path / "video", "video", {**VIDEO, "clip_type": "vl_new"}, seed=6)
    with pytest.raises(ValueError, match="clip_type 'vl_new'"):
        load_languagebind(tmp_path).encode_video(clips["video"][:1])


def test_lazy_loading_and_clear_errors(root, tmp_path, clips):
    only_video = tmp_path / "only-video"
    shutil.copytree(root / "video", only_video / "LanguageBind_Video_FT")  # the repository's name also works
    enc = load_languagebind(only_video)
    assert enc.loaded == () and enc.embed_dim == D
    with torch.inference_mode():  # loaded inside inference mode (as prepare_conditions does)...
        assert_unit_embeddings(enc.encode_text(PROMPTS[:1]), 1, D)
    assert_unit_embeddings(enc.encode_video(clips["video"][:1]), 1, D)  # ...and used outside it
    assert enc.loaded == ("video",)
    with pytest.raises(FileNotFoundError, match=r"audio tower not found: no folder .*only-video/audio"):
        enc.encode_audio(clips["audio"][:1])

    for missing, match in (("vocab.json", "has no tokenizer files"), ("model.safetensors", "has no weights"),
                           ("config.json", "has no config.json")):
        broken = tmp_path / f"no-{missing}"
        shutil.copytree(root / "video", broken / "video")
        (broken / "video" / missing).unlink()
        with pytest.raises(FileNotFoundError, match=f"video tower at .*no-{missing}/video {match}"):
            load_languagebind(broken).encode_text(["x"])
    with pytest.raises(FileNotFoundError, match="LanguageBind folder not found"):
        load_languagebind(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no LanguageBind tower"):
        load_languagebind(tmp_path / "no-vocab.json" / "video")
    swapped = LanguageBindEncoders(video_dir=root / "audio", audio_dir=None)
    with pytest.raises(ValueError, match="'LanguageBindAudio' model, not 'LanguageBindVideo'"):
        swapped.encode_video(clips["video"][:1])


def test_text_tower_choice_and_dtype(root, enc, clips):
    from_audio = load_languagebind(root, text_tower="audio")
    ref = _package_model(root / "audio", "audio")
    with torch.no_grad():
        want = F.normalize(ref.get_text_features(**from_audio.tokenize(PROMPTS)), dim=-1)[:, None]
    torch.testing.assert_close(from_audio.encode_text(PROMPTS), want, atol=1e-5, rtol=0)
    assert from_audio.loaded == ("audio",)
    assert from_audio._towers["audio"].model.has_text
    enc.encode_audio(clips["audio"][:1])
    assert not enc._towers["audio"].model.has_text  # text from the video tower: the other one is freed
    half = load_languagebind(root, dtype=torch.bfloat16)
    for name, x in (("encode_text", PROMPTS), ("encode_audio", clips["audio"]), ("encode_video", clips["video"])):
        out = getattr(half, name)(x)
        assert out.dtype == torch.float32
        assert F.cosine_similarity(out, getattr(enc, name)(x), dim=-1).min() > 0.99, name


def test_plugs_into_prepare_conditions(enc, clips):
    config = get_preset("tiny")
    assert config.conditioning.embed_dim == enc.embed_dim
    model = triergon.build_model(config, seed=0).requires_grad_(False)
    cond = prepare_conditions(model, seconds=1.0, text="rain on a tin roof", audio=clips["audio"][0],
                              video=clips["video"][0], encoders=enc)
    for name in ("text", "audio", "video"):
        assert getattr(cond, name).shape == (1, 1, D)
    torch.testing.assert_close(cond.video, enc.encode_video(clips["video"][:1]))
    context, global_cond, _ = model.conditioner(cond)
    assert torch.isfinite(context).all() and torch.isfinite(global_cond).all()


def test_identity_names_folders_text_tower_and_dtype(root, enc, tmp_path):
    """`identity` keys the embedding cache: the folders (path and files), the text tower and the dtype."""
    from triergon.triergon_core.cache import EmbeddingCache

    assert enc.identity == load_languagebind(root).identity and enc.identity.startswith("languagebind:")
    assert f"video={(root / 'video').resolve()}@" in enc.identity
    others = [load_languagebind(root, text_tower="audio").identity,
              load_languagebind(root, dtype=torch.bfloat16).identity,
              LanguageBindEncoders(video_dir=root / "video", audio_dir=None).identity]
    shutil.copytree(root, tmp_path / "copy")
    others.append(load_languagebind(tmp_path / "copy").identity)
    (tmp_path / "copy" / "video" / "config.json").write_text((root / "video" / "config.json").read_text() + "\n")
    others.append(load_languagebind(tmp_path / "copy").identity)
    assert len({enc.identity, *others}) == 1 + len(others)
    model = triergon.build_model("tiny", seed=0).requires_grad_(False)
    cache = EmbeddingCache()
    first = prepare_conditions(model, seconds=1.0, text="rain", encoders=enc, cache=cache)
    again = prepare_conditions(model, seconds=1.0, text="rain", encoders=enc, cache=cache)
    assert cache.hits == 1 and torch.equal(first.text, again.text)


def test_cli_generate_with_languagebind_folder(root, tmp_path, caplog):
    import logging

    from triergon.triergon_core.cli import main

    out = tmp_path / "lb.wav"
    log = logging.getLogger()
    handlers, level = list(log.handlers), log.level
    try:
        # the towers in `root` are 64 wide: the tiny preset's width (the default demo model takes 128)
        assert main(["generate", "--preset", "tiny", "--seconds", "1", "--text", "rain", "--languagebind", str(root),
                     "--steps", "2", "--cache-dir", str(tmp_path / "cache"), "-q", "-o", str(out)]) == 0
        assert triergon.load_audio(out).shape == (2, 44100)
        assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1  # e_L, keyed by the folder's identity
        missing = tmp_path / "no-lb"
        assert main(["generate", "--preset", "tiny", "--seconds", "1", "--text", "rain", "--languagebind", str(missing),
                     "--steps", "2", "-q", "-o", str(out)]) == 2
        assert str(missing) in caplog.text
    finally:
        for h in [h for h in log.handlers if h not in handlers]:
            log.removeHandler(h)
        log.setLevel(level)


def test_tokenizer_files_saved_by_the_package_load_as_clip(root, tmp_path):
    """A folder whose tokenizer_config.json names LanguageBind's tokenizer class (as the released ones may) gives
    the same tokens through `CLIPTokenizer` as through the package's class."""
    from triergon.triergon_core.languagebind import _clip_tokenizer

    theirs = oracle().LanguageBindVideoTokenizer.from_pretrained(root / "video")
    theirs.save_pretrained(tmp_path)
    assert "LanguageBindVideoTokenizer" in (tmp_path / "tokenizer_config.json").read_text()
    ours = _clip_tokenizer(tmp_path)
    texts = [*PROMPTS, "Rain, RAIN & rain!", "Rain " * 90]
    kwargs = {"max_length": 77, "padding": "max_length", "truncation": True, "return_tensors": "pt"}
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(ours(texts, **kwargs)[key], theirs(texts, **kwargs)[key])
