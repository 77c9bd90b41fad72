"""Every argument, input file and output path is checked before a model is built or a step is sampled, and the
mistakes a new user makes are one-line errors saying what to change (issue 9)."""

from __future__ import annotations

import inspect
import json
import logging
import pickle

import pytest
import torch
from _helpers import CountingEncoders, sao_layout
from safetensors.torch import save_file

import triergon
from triergon.triergon_core import cli as cli_module
from triergon.triergon_core import generate as gen_module
from triergon.triergon_core.checkpoint import CheckpointError, load_checkpoint, read_state_dict
from triergon.triergon_core.cli import build_parser, main
from triergon.triergon_core.generate import generate, prepare_conditions, sample_latents
from triergon.triergon_core.lufs_curve import LufsCurve
from triergon.triergon_core.sampling import sample

STEPS = 3


@pytest.fixture
def nothing_heavy(monkeypatch):
    """Fail the test if the CLI builds or loads a model, or samples (the checks must come first)."""
    def refuse(*args, **kwargs):
        pytest.fail("a model was built / loaded or sampled before the arguments were checked")

    for name in ("build_model", "load_checkpoint"):
        monkeypatch.setattr(cli_module, name, refuse)
    monkeypatch.setattr(gen_module, "sample_latents", refuse)


@pytest.fixture(scope="module")
def tiny():
    return triergon.build_model("tiny", seed=0)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from _videos import write_video

    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", fps=25, num_frames=40)


def _fails(argv, caplog, *expected: str) -> str:
    caplog.clear()
    assert main([str(a) for a in argv]) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage(), errors
    for text in expected:
        assert text in errors[0].getMessage(), (text, errors[0].getMessage())
    return errors[0].getMessage()


# --- defect 1: encoders whose width does not fit the model ---------------------------------------------------


@pytest.fixture
def towers_768(tmp_path):
    """A LanguageBind folder whose video tower says 768 (as the released ones); the width check reads only this."""
    video = tmp_path / "languagebind" / "video"
    video.mkdir(parents=True)
    (video / "config.json").write_text(json.dumps({"model_type": "LanguageBindVideo", "projection_dim": 768}))
    return video.parent


def test_readme_languagebind_example_is_a_one_line_error_before_any_model(towers_768, clip, tmp_path, caplog,
                                                                          nothing_heavy):
    message = _fails(["generate", clip, "--preset", "tiny", "--languagebind", towers_768, "-q", "-o",
                      tmp_path / "out.mp4"], caplog,
                     "768-wide", "64-wide", "--preset triergon-s")
    assert "'tiny'" in message and not (tmp_path / "out.mp4").exists()


def test_width_mismatch_in_python_names_both_widths(tiny):
    class Wide:
        identity, embed_dim = "wide", 768

        def require(self, modalities):
            pass

    with pytest.raises(ValueError, match=r"768-wide embeddings but model 'tiny' takes 64-wide"):
        prepare_conditions(tiny, seconds=1.0, text="rain", encoders=Wide())


def test_tiny_preset_encoders_report_their_width(tiny):
    from triergon.triergon_core.encoders import build_encoders

    assert build_encoders(tiny.config.conditioning).embed_dim == 64


# --- defect 2: outputs, options and inputs checked before the model ------------------------------------------


def test_bad_outputs_are_refused_before_any_model(tmp_path, clip, caplog, nothing_heavy):
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "afile").write_text("x")
    _fails(["generate", "--seconds", "1", "-q", "-o", tmp_path / "folder.wav"], caplog, "is a directory")
    _fails(["generate", "--seconds", "1", "-q", "-o", tmp_path / "afile" / "x.wav"], caplog, "is a file, not a folder")
    _fails(["generate", clip, "-q", "-o", clip], caplog, "is the input video")
    _fails(["generate", "--seconds", "1", "--audio", clip, "-q", "-o", tmp_path / "folder.wav"], caplog,
           "is a directory")
    out = tmp_path / "x.wav"
    _fails(["generate", "--seconds", "1", "--lufs-from", out, "-q", "-o", out], caplog, "--lufs-from not found")


def test_library_writers_check_their_paths_too(tmp_path, clip):
    (tmp_path / "folder.wav").mkdir()
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        triergon.write_audio(tmp_path / "folder.wav", torch.zeros(2, 100))
    with pytest.raises(ValueError, match="is a directory"):
        triergon.mux_audio(clip, torch.zeros(2, 100), tmp_path / "folder.mp4")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_cfg_scale_names_the_option(value, tmp_path, caplog, nothing_heavy):
    _fails(["generate", "--seconds", "1", f"--cfg-scale={value}", "-q", "-o", tmp_path / "x.wav"], caplog, "cfg_scale")
    from triergon.triergon_core.sampling import SamplingSettings

    with pytest.raises(ValueError, match="cfg_scale must be a finite number"):
        SamplingSettings(cfg_scale=float(value))


def test_big_preset_without_towers_fails_before_building_it(tmp_path, caplog, nothing_heavy):
    _fails(["generate", "--preset", "triergon-s", "--seconds", "1", "--text", "x", "-q", "-o", tmp_path / "x.wav"],
           caplog, "text conditioning needs LanguageBind towers", "--languagebind DIR")


def test_missing_tower_for_a_requested_condition_fails_before_the_model(towers_768, tmp_path, caplog, nothing_heavy):
    ref = triergon.write_audio(tmp_path / "ref.wav", torch.zeros(2, 4410))
    _fails(["generate", "--preset", "triergon-s", "--seconds", "1", "--audio", ref, "--languagebind", towers_768,
            "-q", "-o", tmp_path / "x.wav"], caplog, "audio tower not found")


def test_bad_reference_audio_fails_before_the_model(tmp_path, caplog, nothing_heavy):
    bad = tmp_path / "ref.wav"
    bad.write_bytes(b"not audio at all" * 10)
    _fails(["generate", "--seconds", "1", "--audio", bad, "-q", "-o", tmp_path / "x.wav"], caplog, "ref.wav")
    _fails(["generate", "--seconds", "1", "--audio", tmp_path / "none.wav", "-q", "-o", tmp_path / "x.wav"], caplog,
           "--audio not found")


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--batch-size", "0"], ["--seconds", "99"],
                                  ["--lufs-fit", "error", "--lufs", "CURVE"]])
def test_other_arguments_fail_before_the_model(argv, tmp_path, caplog, nothing_heavy):
    LufsCurve.constant(-20.0, duration=2.0).save(tmp_path / "c.json")
    argv = [str(tmp_path / "c.json") if a == "CURVE" else a for a in argv]
    seconds = [] if "--seconds" in argv else ["--seconds", "1"]
    _fails(["generate", *seconds, *argv, "-q", "-o", tmp_path / "x.wav"], caplog)


@pytest.mark.parametrize("command", [["lufs", "measure", "AUDIO"], ["lufs", "edit", "CURVE"],
                                     ["lufs", "plot", "CURVE"], ["convert", "--from-sao", "CKPT"]])
def test_every_command_checks_its_output_path_first(command, tmp_path, caplog, monkeypatch):
    import triergon.triergon_core.audio as audio_module
    import triergon.triergon_core.sao as sao_module

    LufsCurve.constant(-20.0, duration=2.0).save(tmp_path / "c.json")
    triergon.write_audio(tmp_path / "a.wav", torch.zeros(2, 4410))
    save_file({"x": torch.zeros(1)}, tmp_path / "m.safetensors")
    monkeypatch.setattr(audio_module, "load_audio", lambda *a, **k: pytest.fail("read the input first"))
    monkeypatch.setattr(sao_module, "read_state_dict", lambda *a, **k: pytest.fail("read the input first"))
    inputs = {"AUDIO": tmp_path / "a.wav", "CURVE": tmp_path / "c.json", "CKPT": tmp_path / "m.safetensors"}
    argv = [str(inputs.get(a, a)) for a in command]
    name = command[1] if command[0] == "lufs" else command[0]
    suffix = {"plot": ".png", "convert": ".safetensors"}.get(name, ".json")
    (tmp_path / f"dir{suffix}").mkdir()
    (tmp_path / "file").write_text("x")
    flag = [] if command[0] == "convert" else ["-o"]
    _fails([*argv, *flag, tmp_path / f"dir{suffix}"], caplog, "is a directory")
    _fails([*argv, *flag, tmp_path / "file" / f"x{suffix}"], caplog, "is a file, not a folder")
    if command[1] in ("measure", "edit"):
        _fails([*argv, "--plot", tmp_path / f"dir{suffix}" / ".." / "p.gif"], caplog, "cannot write .gif")


# --- defect 3: prepared conditions are not combined with raw inputs or another duration -----------------------


def test_conditions_with_raw_inputs_or_another_duration_are_refused(tiny):
    cond = prepare_conditions(tiny, seconds=2.0, lufs=LufsCurve.constant(-20.0, duration=2.0))
    for extra in ({"text": "rain"}, {"audio": torch.zeros(2, 100)}, {"video": torch.rand(4, 8, 8, 3)},
                  {"lufs": torch.full((2, 12), -20.0)}, {"lufs_fit": "pad"}):
        with pytest.raises(ValueError, match=f"{next(iter(extra))} cannot be combined with conditions="):
            generate(tiny, seconds=2.0, conditions=cond, steps=STEPS, **extra)
    with pytest.raises(ValueError, match=r"prepared for 2 s but seconds=4"):
        generate(tiny, seconds=4.0, conditions=cond, steps=STEPS)
    # without seconds, the prepared duration
    assert generate(tiny, conditions=cond, steps=STEPS).shape == (1, 2, 88200)


# --- defect 4: half-precision checkpoints ---------------------------------------------------------------------


def test_float16_sao_checkpoint_converts_and_generates(tmp_path, caplog, capsys):
    sao = {k: v.half() for k, v in sao_layout(triergon.build_model("tiny", seed=3)).items()}
    save_file(sao, tmp_path / "model.safetensors")
    assert main(["convert", "--from-sao", str(tmp_path / "model.safetensors"), str(tmp_path / "c.safetensors")]) == 0
    caplog.set_level(logging.INFO)
    assert main(["generate", "--checkpoint", str(tmp_path / "c.safetensors"), "--seconds", "1", "--steps", "2",
                 "-q", "-o", str(tmp_path / "x.wav")]) == 0
    assert "stores float16 weights: loaded as float32" in caplog.text
    assert "stored as float16" in capsys.readouterr().out
    state, _ = read_state_dict(tmp_path / "c.safetensors")
    assert {v.dtype for v in state.values()} == {torch.float16}  # one dtype in the file, the source's
    model = load_checkpoint(tmp_path / "c.safetensors", dtype=None)
    assert {p.dtype for p in model.parameters()} == {torch.float16}


# --- defect 6: device, duration and seed --------------------------------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["--device", "foo"], "not a torch device"),
    (["--seconds", "0.00001"], "shorter than one sample"),
    (["--seed", str(2**64)], "seed must be from 0 to"),
    (["--seed", "-1"], "seed must be from 0 to"),
    (["--seed", str(2**64 - 1), "--batch-size", "2"], "seed must be from 0 to 18446744073709551614"),
])
def test_device_duration_and_seed_are_one_line_errors(argv, expected, tmp_path, caplog, nothing_heavy):
    seconds = [] if "--seconds" in argv else ["--seconds", "1"]
    _fails(["generate", *seconds, *argv, "-q", "-o", tmp_path / "x.wav"], caplog, expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error(tmp_path, caplog, nothing_heavy):
    _fails(["generate", "--seconds", "1", "--device", "cuda", "-q", "-o", tmp_path / "x.wav"], caplog,
           "no usable CUDA GPU")


def test_library_refuses_bad_seeds_and_tiny_durations(tiny):
    with pytest.raises(ValueError, match="seed must be from 0"):
        generate(tiny, seconds=1.0, seed=2**64, steps=STEPS)
    with pytest.raises(ValueError, match="shorter than one sample"):
        generate(tiny, seconds=1e-5, steps=STEPS)


# --- defect 7: files are what their names say ---------------------------------------------------------------


def test_checkpoints_are_only_written_as_safetensors(tiny, tmp_path, caplog):
    with pytest.raises(ValueError, match=r"cannot write \.pt files; use one of \.safetensors"):
        triergon.save_checkpoint(tiny, tmp_path / "out.pt")
    save_file(sao_layout(tiny), tmp_path / "model.safetensors")
    _fails(["convert", "--from-sao", tmp_path / "model.safetensors", tmp_path / "out.pt"], caplog, ".safetensors")
    assert not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize(("name", "magic"), [("p.png", b"\x89PNG"), ("p.jpg", b"\xff\xd8\xff"),
                                              ("p.svg", b"<?xml"), ("p.pdf", b"%PDF")])
def test_plots_are_written_in_the_format_their_extension_names(name, magic, tmp_path):
    LufsCurve.constant(-20.0, duration=2.0).save(tmp_path / "c.json")
    assert main(["lufs", "plot", str(tmp_path / "c.json"), "-o", str(tmp_path / name)]) == 0
    assert (tmp_path / name).read_bytes().startswith(magic)


def test_unknown_plot_format_is_refused(tmp_path, caplog):
    LufsCurve.constant(-20.0, duration=2.0).save(tmp_path / "c.json")
    _fails(["lufs", "plot", tmp_path / "c.json", "-o", tmp_path / "p.gif"], caplog, "cannot write .gif")


def test_bits_reach_the_flac_track_of_a_muxed_video(clip, tmp_path, caplog):
    import av

    out = tmp_path / "x.mkv"
    assert main(["generate", str(clip), "--bits", "24", "--steps", "2", "-q", "-o", str(out)]) == 0
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.format.name == "s32"  # FLAC at 24 bits decodes to s32
    _fails(["generate", clip, "--bits", "24", "--steps", "2", "-q", "-o", tmp_path / "x.mp4"], caplog, "AAC")


def test_muxed_report_says_the_videos_length(clip, tmp_path, capsys):
    assert main(["generate", str(clip), "--seconds", "2.5", "--steps", "2", "-q", "-o", str(tmp_path / "x.mp4")]) == 0
    printed = capsys.readouterr().out
    assert "1.600 s of generated stereo audio" in printed and "2.500 s generated were trimmed" in printed


# --- defect 10: only the generated part of the video is encoded ----------------------------------------------


def test_video_condition_covers_only_the_generated_part(tmp_path):
    from _videos import write_video

    long = write_video(tmp_path / "long.mp4", fps=10, num_frames=30)  # 3 s
    short_window = triergon.build_model(
        __import__("dataclasses").replace(triergon.get_preset("tiny"),
                                          sequence=triergon.SequenceConfig(max_seconds=2.0)), seed=0)
    enc = CountingEncoders()
    spans = []
    real = enc.inner.encode_video_file
    enc.inner.encode_video_file = lambda path, *, start=0.0, end=None: spans.append((start, end)) or real(
        path, start=start, end=end)
    cache = triergon.EmbeddingCache()
    # a video longer than the window is fine when only its first part is generated
    one = prepare_conditions(short_window, seconds=1.0, video=long, encoders=enc, cache=cache).video
    two = prepare_conditions(short_window, seconds=2.0, video=long, encoders=enc, cache=cache).video
    assert spans == [(0.0, 1.0), (0.0, 2.0)]  # the range is part of the cache key: two entries
    assert not torch.allclose(one, two)
    torch.testing.assert_close(one, enc.inner.encode_video_file(long, start=0.0, end=1.0))
    # frames with their rate: only those that cover the generated seconds
    frames = torch.rand(30, 16, 16, 3)
    cut = prepare_conditions(short_window, seconds=1.0, video=frames, video_fps=10.0).video
    torch.testing.assert_close(cut, prepare_conditions(short_window, seconds=1.0, video=frames[:10]).video)


# --- defect 12: pickles that could run code ----------------------------------------------------------------


def test_refused_pickle_says_it_could_run_code_not_to_disable_the_check(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "cls": pickle.PickleError}, path)
    with pytest.raises(CheckpointError) as info:
        read_state_dict(path)
    message = str(info.value)
    assert "could run code" in message and "safetensors" in message
    assert "weights_only=False" not in message and "\n" not in message


# --- defect 13: --seed picks the noise, not the random weights ------------------------------------------------


def test_batch_item_equals_the_run_with_seed_plus_i(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    assert main(["generate", "--seconds", "0.5", "--seed", "7", "--batch-size", "2", "--steps", "2", "--bits", "32",
                 "-q", "-o", str(a)]) == 0
    assert main(["generate", "--seconds", "0.5", "--seed", "8", "--steps", "2", "--bits", "32", "-q",
                 "-o", str(b)]) == 0
    # equal up to float32 rounding of batched against single matmuls, which scales with the audio's level: the demo
    # weights of 2026-12-04 give a peak of 0.83 here and differences of 1.7e-6 (1 thread) to 2.1e-6 (2 threads)
    torch.testing.assert_close(triergon.load_audio(tmp_path / "a_1.wav"), triergon.load_audio(b),
                               rtol=1e-5, atol=5e-6)


# --- defect 14: the paper's sampling defaults, in one place --------------------------------------------------


def test_paper_sampling_defaults_are_pinned():
    """The paper's setting is held once; a model's `sampling` starts as it, and generate / sample_latents take
    the model's (None), sample the paper's; the CLI leaves the settings to the checkpoint (None) unless given."""
    from triergon.triergon_core.sampling import PAPER_SAMPLING

    assert (PAPER_SAMPLING.steps, PAPER_SAMPLING.cfg_scale, PAPER_SAMPLING.sampler) == (100, 7.0, "dpmpp-2m")
    assert triergon.build_model("tiny", device="meta").sampling == PAPER_SAMPLING
    for fn in (generate, sample_latents, sample):
        params = inspect.signature(fn).parameters
        for name in ("steps", "cfg_scale", "sampler"):
            if name in params:
                expected = getattr(PAPER_SAMPLING, name) if fn is sample else None
                assert params[name].default == expected, (fn.__name__, name)
    args = build_parser().parse_args(["generate", "--seconds", "1", "-o", "x.wav"])
    assert (args.steps, args.cfg_scale, args.sampler) == (None, None, None)


def test_generate_samples_with_the_models_settings(tiny, monkeypatch):
    """Without settings, generate samples with the model's (the paper's for a built model, else what its
    checkpoint recommends); each given setting replaces the model's alone."""
    from triergon.triergon_core.sampling import SamplingSettings

    seen = {}

    def spy(denoise, noise, *, sampler, steps, callback):
        seen.update(sampler=sampler, steps=steps, cfg_scale=denoise.cfg_scale)
        return noise

    monkeypatch.setattr(gen_module, "sample", spy)
    generate(tiny, seconds=0.2)
    assert seen == {"sampler": "dpmpp-2m", "steps": 100, "cfg_scale": 7.0}
    tuned = triergon.build_model("tiny", seed=0)
    tuned.sampling = SamplingSettings(steps=30, cfg_scale=3.0, sampler="ddim")
    generate(tuned, seconds=0.2)
    assert seen == {"sampler": "ddim", "steps": 30, "cfg_scale": 3.0}
    generate(tuned, seconds=0.2, cfg_scale=5.0)
    assert seen == {"sampler": "ddim", "steps": 30, "cfg_scale": 5.0}
    with pytest.raises(ValueError, match="steps"):
        generate(tuned, seconds=0.2, steps=0)
