"""The shipped demo model: its files (size, wheel, rebuilt encoders, honest placeholders), the bundling step, the
defaults of `generate` and the loader node, and `triergon demo` end to end."""

from __future__ import annotations

import json
import logging
from fnmatch import fnmatch
from pathlib import Path

import av
import pytest
import tomllib
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from triergon.triergon_core.audio import load_audio
from triergon.triergon_core.checkpoint import checkpoint_sampling_of, load_checkpoint
from triergon.triergon_core.cli import main
from triergon.triergon_core.demo import DEMO_DIR, DemoFiles, is_trained, write_demo_encoders
from triergon.triergon_core.languagebind import LanguageBindEncoders, load_languagebind
from triergon.triergon_core.lufs_curve import LufsCurve
from triergon.triergon_core.lufs_predictor import DEMO_DINOV2, load_dinov2, load_predictor, random_dinov2
from triergon.triergon_core.model import build_model
from triergon.triergon_core.presets import get_preset
from triergon.triergon_core.sampling import PAPER_SAMPLING, SAMPLING_KEY, SamplingSettings
from triergon.triergon_core.video import probe_video

REPO = Path(__file__).resolve().parents[1]
SHIPPED = DemoFiles()
LIMIT = 40 * 1024 * 1024  # the budget for everything shipped


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _architecture(config):
    from triergon.train.demo_bundle import _architecture as architecture

    return architecture(config)


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def test_the_shipped_folder_is_complete_and_within_40_mb():
    SHIPPED.check()
    assert SHIPPED.root == REPO / "weights" / "demo" == DEMO_DIR
    assert SHIPPED.card.is_file()
    assert sum(p.stat().st_size for p in _files(SHIPPED.root)) <= LIMIT


def test_the_wheel_holds_every_shipped_file():
    """pyproject's package data (relative to the package root, the repository) matches every file of the folder."""
    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["triergon"]
    for path in _files(SHIPPED.root):
        rel = path.relative_to(REPO).as_posix()
        assert any(fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), rel


def test_the_seeded_encoders_rebuild_and_the_shipped_ones_are_their_trainings(tmp_path):
    """`write_demo_encoders` rebuilds the seeded DINOv2 and LanguageBind towers the demo's trainings start from, the
    same bytes every time; the shipped DINOv2 is the T_LUFS run's and the towers the encoder run's (their metadata
    says so), in the same folders with the same configs."""
    files, again = write_demo_encoders(tmp_path / "a"), write_demo_encoders(tmp_path / "b")
    names = [p.relative_to(SHIPPED.dinov2) for p in _files(SHIPPED.dinov2)]
    assert names == [p.relative_to(files.dinov2) for p in _files(files.dinov2)]
    for name in names:
        assert (files.dinov2 / name).read_bytes() == (again.dinov2 / name).read_bytes(), name
    for name in ("config.json", "preprocessor_config.json"):
        assert (SHIPPED.dinov2 / name).read_bytes() == (files.dinov2 / name).read_bytes(), name
    meta = _metadata(SHIPPED.dinov2 / "model.safetensors")
    assert meta["trained"] == "true" and meta["trained_by"].startswith("triergon train (synthfoley-lufs-frames, ")
    for kind in ("video", "audio"):
        meta = _metadata(SHIPPED.languagebind / kind / "model.safetensors")
        assert meta["trained"] == "true" and meta["trained_by"].startswith("triergon train (synthfoley-encoders, ")
        assert (SHIPPED.languagebind / kind / "config.json").read_bytes() == \
            (files.languagebind / kind / "config.json").read_bytes()
        assert (SHIPPED.languagebind / kind / "model.safetensors").read_bytes() != \
            (files.languagebind / kind / "model.safetensors").read_bytes()


@pytest.mark.encoders  # also under transformers 4.57 (scripts/test.sh), where a DINOv2 file once lost its attention
def test_the_encoders_load_as_released_folders():
    """Through the same loaders as real LanguageBind / DINOv2: the trained towers at tiny_random(128)'s sizes (other
    weights), the trained DINOv2 at the seeded one's sizes (other features)."""
    width = get_preset("demo").conditioning.embed_dim
    towers, memory = load_languagebind(SHIPPED.languagebind), LanguageBindEncoders.tiny_random(embed_dim=width)
    assert towers.embed_dim == width
    assert not torch.allclose(towers.encode_text(["a ball bounces"]), memory.encode_text(["a ball bounces"]))
    wave = torch.randn(1, 2, 44100, generator=torch.Generator().manual_seed(0)) * 0.1
    assert towers.encode_audio(wave).shape == memory.encode_audio(wave).shape == (1, 1, width)
    frames = torch.rand(2, 8, 40, 40, 3, generator=torch.Generator().manual_seed(1))
    assert towers.encode_video(frames).shape == (2, 1, width)
    features, seeded = load_dinov2(SHIPPED.dinov2), random_dinov2(seed=0, **DEMO_DINOV2)
    assert (features.resize, features.crop, features.feature_dim) == (128, 112, 64)
    images = torch.rand(3, 128, 128, 3, generator=torch.Generator().manual_seed(2))
    got = features(images)
    assert got.shape == seeded(images).shape and not torch.allclose(got, seeded(images), atol=0.1)
    assert got.std(0).mean() > 0.1  # different frames, different features
    shipped = load_predictor(SHIPPED.predictor).config  # reads the shipped DINOv2's features, pooled its way
    assert shipped.feature_dim == load_dinov2(SHIPPED.dinov2, pooling=shipped.frame_pooling).feature_dim


def test_the_shipped_towers_tell_the_scene_kinds_apart():
    """On 4 new 2 s clips per kind, each embedding's nearest kind mean is mostly the clip's kind (measured with the
    shipped towers: e_L 1.00, e_V 0.90, e_A 0.90; the seeded random towers they started from: 0.50, 0.20, 0.80, with
    e_V's kind means at cosine 0.998), and the kinds' mean embeddings point apart (cosine 0.23 / 0.20 / 0.03)."""
    from triergon.triergon_core.demo_listen import kind_separability
    from triergon.triergon_core.synthfoley import SCENE_KINDS

    got = {r.modality: r for r in kind_separability(load_languagebind(SHIPPED.languagebind), kinds=SCENE_KINDS,
                                                    seconds=2.0, clips=4)}
    assert got["text"].accuracy >= 0.9 and got["video"].accuracy >= 0.8 and got["audio"].accuracy >= 0.8, got
    assert all(r.mean_cosine < 0.35 for r in got.values()), got


def test_the_model_is_the_demo_preset_and_placeholders_say_so(caplog):
    model = load_checkpoint(SHIPPED.model)
    # the demo preset, with the options its DiT run added: the latent scale and the frame-aligned LUFS path
    assert _architecture(model.config) == get_preset("demo")
    assert model.config.conditioning.lufs_frame_aligned and model.config.latent_scale == pytest.approx(0.5385)
    assert load_file(SHIPPED.model)["vae.decoder.layers.0.weight_v"].dtype == torch.float16
    for path in (SHIPPED.model, SHIPPED.predictor):
        meta = _metadata(path)
        assert meta["trained"] in ("true", "false") and meta["trained_by"]
        assert is_trained(path) == (meta["trained"] == "true")
        assert ("placeholder" in meta["trained_by"]) != is_trained(path)


def test_bundling_placeholders_gives_the_shipped_weights(tmp_path):
    """Until trained weights ship, the shipped files are exactly what `demo bundle` writes without runs."""
    from triergon.train.demo_bundle import bundle_demo

    files = bundle_demo(tmp_path)
    for path in (files.model, files.predictor):
        assert _metadata(path)["trained"] == "false"
        shipped = SHIPPED.root / path.name
        if not is_trained(shipped):
            a, b = load_file(path), load_file(shipped)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), path.name


def test_bundle_takes_the_vae_run_and_the_dit_run(tmp_path, monkeypatch, caplog):
    from triergon.train import demo_bundle
    from triergon.train.recipes import get_recipe
    from triergon.triergon_core.lufs_predictor import LUFS_PREDICTOR_PRESETS, LufsPredictor

    runs = {"vae": build_model("demo", seed=1), "dit": build_model("demo", seed=2),
            "lufs": LufsPredictor(config=LUFS_PREDICTOR_PRESETS["demo"]).eval()}
    recipes = {"vae": "synthfoley-vae", "dit": "synthfoley-dit", "lufs": "synthfoley-lufs"}
    monkeypatch.setattr(demo_bundle, "load_run", lambda run: (runs[run], get_recipe(recipes[run]), f"run {run}"))
    files = demo_bundle.bundle_demo(tmp_path, vae="vae", dit="dit", lufs="lufs")
    meta = _metadata(files.model)
    assert meta["trained"] == "true" and meta["trained_parts"] == "dit,conditioner,vae"
    assert "run vae" in meta["trained_by"] and "run dit" in meta["trained_by"]
    stored = load_file(files.model)
    for part, source in (("vae", "vae"), ("dit", "dit"), ("conditioner", "dit")):
        for k, v in getattr(runs[source], part).state_dict().items():
            got = stored[f"{part}.{k}"]
            assert torch.equal(got, v.to(got.dtype)), (part, k)
    # the DiT run's own VAE encoder (what its latents came from) is not the VAE run's: said in one warning
    assert [r.getMessage() for r in caplog.records if "another VAE" in r.getMessage()]
    # a VAE run that trained only the decoder of the DiT run's VAE keeps its latents: no warning
    caplog.clear()
    runs["vae"].vae.encoder.load_state_dict(runs["dit"].vae.encoder.state_dict())
    demo_bundle.bundle_demo(tmp_path / "decoder-only", vae="vae", dit="dit")
    assert not [r.getMessage() for r in caplog.records if "another VAE" in r.getMessage()]
    assert _metadata(files.predictor) | {"config": ""} == {"format": "triergon-lufs-predictor", "trained": "true",
                                                          "trained_by": "run lufs", "config": ""}
    # the model's recommended sampling: stored when given, else none (the paper's)
    assert SAMPLING_KEY not in meta and checkpoint_sampling_of(files.model) == PAPER_SAMPLING
    tuned = demo_bundle.bundle_demo(tmp_path / "tuned", vae="vae", dit="dit", sampling=SamplingSettings(cfg_scale=3.0))
    assert checkpoint_sampling_of(tuned.model) == SamplingSettings(cfg_scale=3.0)
    monkeypatch.setattr(demo_bundle, "load_run", lambda run: (runs["vae"], get_recipe("synthfoley-vae"), "x"))
    with pytest.raises(ValueError, match="--dit vae is a vae run"):
        demo_bundle.bundle_demo(tmp_path, dit="vae")


def test_bundle_takes_the_encoder_run(tmp_path, monkeypatch):
    """--encoders: the run's EMA towers become languagebind/ (loadable, saying where they came from); DINOv2 stays
    the seeded one; a run of another trainer is refused."""
    from triergon.train import demo_bundle
    from triergon.train.recipes import get_recipe
    from triergon.train.trainers.encoders import initial_towers

    recipe = get_recipe("synthfoley-encoders")
    towers = initial_towers(recipe)
    with torch.no_grad():
        towers.video.text_projection.weight.mul_(-1)  # "trained": other text embeddings than the random towers'
    monkeypatch.setattr(demo_bundle, "load_run", lambda run: {"encoders": (towers, recipe, "run encoders"), "vae": (
        build_model("demo", seed=1), get_recipe("synthfoley-vae"), "run vae")}[run])
    files = demo_bundle.bundle_demo(tmp_path, encoders="encoders")
    loaded = load_languagebind(files.languagebind)
    random = LanguageBindEncoders.tiny_random(embed_dim=128)
    torch.testing.assert_close(loaded.encode_text(["rain"]), -random.encode_text(["rain"]))
    assert _metadata(files.languagebind / "video" / "model.safetensors")["trained_by"] == "run encoders"
    seeded = write_demo_encoders(tmp_path / "seeded", languagebind=False)
    for name in ("config.json", "model.safetensors"):
        assert (files.dinov2 / name).read_bytes() == (seeded.dinov2 / name).read_bytes()
    with pytest.raises(ValueError, match="--encoders vae is a vae run"):
        demo_bundle.bundle_demo(tmp_path / "x", encoders="vae")


def test_bundle_command_stores_the_sampling_it_is_given(tmp_path, monkeypatch):
    from triergon.train import demo_bundle

    calls = []
    monkeypatch.setattr(demo_bundle, "bundle_demo", lambda output, **kw: calls.append(kw["sampling"]) or
                        DemoFiles(output))
    assert main(["demo", "bundle", "-o", str(tmp_path), "--cfg-scale", "3"]) == 0
    assert main(["demo", "bundle", "-o", str(tmp_path), "--steps", "50"]) == 0
    assert main(["demo", "bundle", "-o", str(tmp_path)]) == 0
    assert calls == [SamplingSettings(cfg_scale=3.0), SamplingSettings(steps=50), None]


def test_bundle_keeps_a_trained_lufs_file_and_refuses_a_placeholder(tmp_path):
    """`--lufs FILE`: a trained T_LUFS file (e.g. the shipped one) goes in as it is, with its `trained_by`."""
    from triergon.train import demo_bundle
    from triergon.triergon_core.lufs_predictor import LUFS_PREDICTOR_PRESETS, LufsPredictor, save_predictor

    torch.manual_seed(5)
    predictor = LufsPredictor(config=LUFS_PREDICTOR_PRESETS["demo"]).to(torch.float16)
    trained = save_predictor(predictor, tmp_path / "t.safetensors",
                             metadata={"trained": "true", "trained_by": "triergon train (synthfoley-lufs, step 9)"})
    files = demo_bundle.bundle_demo(tmp_path / "out", lufs=trained)
    a, b = load_file(trained), load_file(files.predictor)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _metadata(files.predictor)["trained_by"] == "triergon train (synthfoley-lufs, step 9)"
    placeholder = save_predictor(predictor, tmp_path / "p.safetensors", metadata={"trained": "false"})
    with pytest.raises(ValueError, match="placeholder weights"):
        demo_bundle.bundle_demo(tmp_path / "out2", lufs=placeholder)


def test_bundle_takes_the_dinov2_a_lufs_run_trained_or_the_one_beside_a_lufs_file(tmp_path, monkeypatch):
    """`--lufs RUN` of a run that trained DINOv2 (`synthfoley-lufs-frames`): its DINOv2 becomes `dinov2/`;
    `--lufs FILE` keeps the `dinov2/` beside the file, also when that is the output's own folder."""
    from triergon.train import demo_bundle
    from triergon.train.recipes import get_recipe
    from triergon.train.trainers.lufs import FramesToLufs
    from triergon.triergon_core.lufs_predictor import LUFS_PREDICTOR_PRESETS, LufsPredictor

    torch.manual_seed(5)
    features = random_dinov2(seed=3, pooling="cls+grid", **DEMO_DINOV2)  # "trained": not the seeded demo one
    model = FramesToLufs(LufsPredictor(config=LUFS_PREDICTOR_PRESETS["demo"]), features)
    monkeypatch.setattr(demo_bundle, "load_run", lambda run: (model, get_recipe("synthfoley-lufs-frames"),
                                                              "triergon train (synthfoley-lufs-frames, step 9)"))
    files = demo_bundle.bundle_demo(tmp_path / "out", lufs="run")
    images = torch.rand(2, 128, 128, 3, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(load_dinov2(files.dinov2)(images), features(images, pooling="cls"))
    source = _metadata(files.dinov2 / "model.safetensors")["trained_by"]
    assert source == "triergon train (synthfoley-lufs-frames, step 9)"
    a, b = load_predictor(files.predictor).state_dict(), model.predictor.to(torch.float16).state_dict()
    assert all(torch.equal(a[k].half(), b[k]) for k in b)
    kept = demo_bundle.bundle_demo(tmp_path / "again", lufs=files.predictor)
    again = demo_bundle.bundle_demo(tmp_path / "again", lufs=kept.predictor)  # the output's own T_LUFS and DINOv2
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert (kept.dinov2 / name).read_bytes() == (files.dinov2 / name).read_bytes() == \
            (again.dinov2 / name).read_bytes(), name


def test_bundle_keeps_the_dit_runs_options_and_takes_its_init_vae(tmp_path, monkeypatch):
    """Without a VAE run, the DiT run's `model.init` gives the VAE (when that file's VAE is trained); the DiT run's
    latent scale and frame-aligned LUFS path go into the bundled checkpoint."""
    import dataclasses

    from triergon.train import demo_bundle
    from triergon.train.config import apply_overrides
    from triergon.train.recipes import get_recipe
    from triergon.train.trainers.dit import with_lufs_frame_aligned
    from triergon.triergon_core.checkpoint import save_checkpoint

    source = build_model("demo", seed=3)
    for trained in ("true", "false"):
        init = save_checkpoint(source, tmp_path / f"init-{trained}.safetensors",
                               metadata={"trained": trained, "trained_parts": "vae" if trained == "true" else "none"})
        config = apply_overrides(get_recipe("synthfoley-dit"), [f"model.init={init}", "model.latent_scale=0.3",
                                                                "model.lufs_frame_aligned=true"])
        run = with_lufs_frame_aligned(build_model("demo", seed=4))
        run.vae.load_state_dict(source.vae.state_dict())
        run.config = dataclasses.replace(run.config, latent_scale=0.3)
        monkeypatch.setattr(demo_bundle, "load_run", lambda _, run=run, config=config: (run, config, "run dit"))
        files = demo_bundle.bundle_demo(tmp_path / trained, dit="dit")
        model, meta = load_checkpoint(files.model), _metadata(files.model)
        assert model.config == run.config and model.config.conditioning.lufs_frame_aligned
        stored = load_file(files.model)
        assert torch.equal(stored["dit.to_frame_embed.weight"], run.dit.to_frame_embed.weight.half())
        vae_equal = all(torch.equal(stored[f"vae.{k}"], v.half()) for k, v in source.vae.state_dict().items())
        if trained == "true":
            assert meta["trained"] == "true" and meta["trained_parts"] == "dit,conditioner,vae"
            assert "init-true.safetensors" in meta["trained_by"] and vae_equal
        else:  # a placeholder VAE in model.init: the bundle says so and does not call it trained
            assert meta["trained"] == "false" and meta["trained_parts"] == "dit,conditioner"
            assert "vae: placeholder" in meta["trained_by"] and not vae_equal


def test_init_vae_puts_another_vae_under_the_init_dit_and_the_bundle_names_it(tmp_path, monkeypatch):
    """`model.init_vae`: the DiT and conditioner of `model.init` over the VAE of another file (a warm start on a new
    VAE's latents); another VAE architecture is refused; the bundle names that file as the VAE's source."""
    from triergon.train import demo_bundle
    from triergon.train.config import apply_overrides
    from triergon.train.recipes import get_recipe
    from triergon.train.trainers.dit import initial_model
    from triergon.triergon_core.checkpoint import save_checkpoint

    dit_source, vae_source = build_model("demo", seed=3), build_model("demo", seed=4)
    init = save_checkpoint(dit_source, tmp_path / "init.safetensors")
    init_vae = save_checkpoint(vae_source, tmp_path / "vae.safetensors",
                               metadata={"trained_by": "dit, conditioner: run a; vae: run vae-dec"})
    config = apply_overrides(get_recipe("synthfoley-dit"), [f"model.init={init}", f"model.init_vae={init_vae}"])
    model = initial_model(config)
    assert all(torch.equal(v, dit_source.state_dict()[k]) for k, v in model.state_dict().items()
               if not k.startswith("vae."))
    assert all(torch.equal(v, vae_source.vae.state_dict()[k]) for k, v in model.vae.state_dict().items())
    assert not torch.equal(dit_source.vae.decoder.layers[0].weight_v, model.vae.decoder.layers[0].weight_v)

    monkeypatch.setattr(demo_bundle, "load_run", lambda _: (model, config, "run dit"))
    files = demo_bundle.bundle_demo(tmp_path / "out", dit="dit")
    meta = _metadata(files.model)
    assert meta["trained_parts"] == "dit,conditioner,vae"
    # and where that file's VAE came from, as its own metadata says
    assert "vae: the DiT run's model.init_vae (vae.safetensors, its VAE from run vae-dec)" in meta["trained_by"]

    tiny = save_checkpoint(build_model("tiny", seed=0), tmp_path / "tiny.safetensors")
    with pytest.raises(ValueError, match="another VAE architecture"):
        initial_model(apply_overrides(config, [f"model.init_vae={tiny}"]))


def test_recipes_train_the_demo_parts():
    from triergon.train.recipes import get_recipe
    from triergon.triergon_core.lufs_predictor import LUFS_PREDICTOR_PRESETS

    dit, lufs, vae = get_recipe("synthfoley-dit"), get_recipe("synthfoley-lufs"), get_recipe("synthfoley-vae")
    # the shipped VAE's settings (its encoder: this recipe from scratch, stopped at step 1500)
    loss = vae.vae_loss
    assert (loss.spectrum, loss.data_init, loss.data_init_scale, loss.data_init_residual) == (2.0, True, 0.3, 0.1)
    assert (dit.trainer, dit.model.preset, dit.data.crop_seconds, dit.data.batch_size) == ("dit", "demo", 5.0, 16)
    assert (dit.run.threads, dit.run.save_every) == (2, 250) and dit.optim.warmup_steps > 0
    assert (lufs.trainer, lufs.model.preset, lufs.run.threads) == ("lufs", "demo", 2)
    demo = LUFS_PREDICTOR_PRESETS["demo"]
    assert (demo.dim, demo.depth, demo.heads, demo.frame_pooling) == (128, 4, 4, "cls+grid")
    assert demo.feature_dim == 5 * DEMO_DINOV2["hidden_size"]


def test_generate_defaults_to_the_demo_model_and_its_towers(tmp_path, caplog):
    default, explicit = tmp_path / "default.wav", tmp_path / "explicit.wav"
    args = ["generate", "--seconds", "1", "--text", "rain", "--steps", "2", "-q", "-o"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, str(default)]) == 0
    untrained = [r for r in caplog.records if "untrained placeholders" in r.getMessage()]
    assert len(untrained) == (0 if is_trained(SHIPPED.model) else 1)
    assert main([*args, str(explicit), "--checkpoint", str(SHIPPED.model)]) == 0
    assert torch.equal(load_audio(default), load_audio(explicit))
    # a preset still means that preset's random weights, as before
    tiny = tmp_path / "tiny.wav"
    assert main([*args, str(tiny), "--preset", "tiny"]) == 0
    assert not torch.equal(load_audio(tiny), load_audio(default))


def test_loader_node_defaults_to_the_demo_model():
    from triergon import NODE_CLASS_MAPPINGS
    from triergon.comfy_nodes.loading import DEFAULT_CHECKPOINT
    from triergon.comfy_nodes.loading import SHIPPED as CHOICE

    loader = NODE_CLASS_MAPPINGS["TriErgonModelLoader"]
    spec = loader.INPUT_TYPES()
    assert spec["required"]["checkpoint"][1]["default"] == DEFAULT_CHECKPOINT == CHOICE
    assert spec["optional"]["dinov2"][1]["default"] == spec["optional"]["lufs_predictor"][1]["default"] == CHOICE
    model, cfg, steps = loader().load(CHOICE, dinov2=CHOICE, lufs_predictor=CHOICE)
    assert (cfg, steps) == (model.model.sampling.cfg_scale, model.model.sampling.steps) == (3.0, 100)
    assert _architecture(model.config) == get_preset("demo")
    assert model.random_weights == (not is_trained(SHIPPED.model))
    assert model.encoders.embed_dim == 128 and model.dinov2.feature_dim == model.predictor.config.feature_dim
    assert loader.IS_CHANGED(CHOICE) == loader.IS_CHANGED(CHOICE) and "missing" not in loader.IS_CHANGED(CHOICE)


def test_example_workflows_use_the_demo_model_at_its_recommended_cfg():
    """Each example loads the demo model and samples at the CFG scale it recommends: Sample's cfg is linked to the
    loader's cfg output, and the widget underneath holds the same value."""
    from triergon.comfy_nodes.loading import SHIPPED as CHOICE

    for path in sorted((REPO / "example_workflows").glob("*.api.json")):
        graph = json.loads(path.read_text())
        loaders = {nid for nid, n in graph.items() if n["class_type"] == "TriErgonModelLoader"}
        assert loaders and all(graph[nid]["inputs"]["checkpoint"] == CHOICE for nid in loaders), path.name
        samplers = [n for n in graph.values() if n["class_type"] == "TriErgonSample"]
        assert samplers and all(n["inputs"]["cfg"][0] in loaders and n["inputs"]["cfg"][1] == 1
                                for n in samplers), path.name
        ui = json.loads(path.with_name(path.name.replace(".api.json", ".json")).read_text())
        assert [n["widgets_values"][3] for n in ui["nodes"] if n["type"] == "TriErgonSample"] == [3.0] * len(samplers)


def test_shipped_demo_recommends_cfg_3_and_the_demo_uses_it(tmp_path, monkeypatch):
    """The demo model follows the requested level best at CFG 3 (model card): its file says so, and `triergon
    demo` samples with it unless --cfg-scale is given."""
    from triergon.triergon_core import generate as gen_module

    assert checkpoint_sampling_of(DemoFiles().model) == SamplingSettings(cfg_scale=3.0)
    assert load_checkpoint(DemoFiles().model).sampling == SamplingSettings(cfg_scale=3.0)
    seen, real = [], gen_module.sample
    monkeypatch.setattr(gen_module, "sample", lambda denoise, noise, **kw: seen.append(
        (kw["steps"], denoise.cfg_scale)) or real(denoise, noise, **kw))
    assert main(["demo", "-o", str(tmp_path / "a"), "--seconds", "0.5", "--steps", "1", "-q"]) == 0
    assert main(["demo", "-o", str(tmp_path / "b"), "--seconds", "0.5", "--steps", "1", "--cfg-scale", "7", "-q"]) == 0
    assert seen == [(1, 3.0), (1, 7.0)]


def test_demo_command_end_to_end(tmp_path, capsys):
    """The README's main job, short: clip -> T_LUFS -> audio; WAV, MP4 with the sound, plot; each path printed."""
    out = tmp_path / "out"
    assert main(["demo", "-o", str(out), "--seconds", "1.5", "--steps", "3", "-q"]) == 0
    printed = capsys.readouterr().out
    names = ["synthfoley.mp4", "lufs_predicted.json", "generated.wav", "generated.mp4",
             "lufs_predicted_vs_measured.png"]
    for name in names:
        assert (out / name).is_file() and f"wrote {out / name}" in printed, name
    assert probe_video(out / "synthfoley.mp4").duration == pytest.approx(1.5, abs=1e-6)  # 36 frames at 24 fps
    audio = load_audio(out / "generated.wav")
    assert audio.shape == (2, round(1.5 * 44100))
    curve = LufsCurve.load(out / "lufs_predicted.json")
    assert curve.values.shape == (2, 9) and curve.rate == 6.0
    with av.open(str(out / "generated.mp4")) as c:
        assert len(c.streams.video) == 1 and c.streams.audio[0].codec_context.channels == 2
    assert (out / "lufs_predicted_vs_measured.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["demo", "-o", str(out), "--seconds", "11", "-q"]) == 2  # beyond the 10 s window: one-line error
    assert main(["demo", "-o", str(out), "--vae", "run", "-q"]) == 2  # run folders go with `demo bundle`

