"""The condition-encoder trainer: contrastive loss, data, a CPU run that learns, resume, export as a LanguageBind
folder that `load_languagebind` reads, and the demo recipe."""

from __future__ import annotations

import math
import os
import signal
import time

import pytest
import torch
from _helpers import train_on_cpu

from triergon.train.config import EncoderLossConfig, apply_overrides
from triergon.train.export import export_run, load_run
from triergon.train.recipes import get_recipe
from triergon.train.trainers.encoders import EncoderTrainer, audio_settings, pair_loss
from triergon.train.validate import validate_run
from triergon.triergon_core.languagebind import LanguageBindEncoders, load_languagebind
from triergon.triergon_core.languagebind_preprocess import preprocess_video
from triergon.triergon_core.presets import get_preset


def test_pair_loss_known_answers_and_padding():
    """Aligned pairs at a high temperature score about 0 and retrieve themselves; a uniform guess scores log B;
    a padding sample is no one's negative and scores 0 itself."""
    x = torch.eye(4)
    real = torch.ones(4, dtype=torch.bool)
    loss, hit = pair_loss(x, x, torch.tensor(100.0), real)
    assert loss.max() < 1e-30 and hit.all()
    loss, _ = pair_loss(x, torch.ones(4, 4), torch.tensor(10.0), real)
    torch.testing.assert_close(loss, torch.full((4,), math.log(4)))
    y = x.clone()
    y[3] = x[0]  # sample 3 (padding) repeats sample 0: as a negative it would confuse sample 0
    padded, _ = pair_loss(x, y, torch.tensor(100.0), torch.tensor([True, True, True, False]))
    assert padded[3] == 0 and padded[:3].max() < 1e-30
    unmasked, _ = pair_loss(x, y, torch.tensor(100.0), real)
    # unmasked, sample 0's caption finds two equal matches (log 2 one way, 0 the other)
    torch.testing.assert_close(unmasked[0], torch.tensor(math.log(2) / 2))


def test_encoder_loss_weights_are_checked():
    with pytest.raises(ValueError, match="one of them > 0"):
        EncoderLossConfig(text_video=0, text_audio=0, video_audio=0)
    with pytest.raises(ValueError, match=">= 0"):
        EncoderLossConfig(text_video=-1)
    config = apply_overrides(get_recipe("cpu-smoke-encoders"), ["encoder_loss.video_audio=0"])
    assert config.encoder_loss.video_audio == 0 and config.trainer == "encoders"


def test_demo_recipe_trains_the_demo_towers():
    config = get_recipe("synthfoley-encoders")
    assert config.trainer == "encoders" and config.model.preset == "demo" and config.data.batch_size == 64
    assert config.run.sample_every == 0  # no audio samples: the towers give embeddings


def test_inputs_are_the_processors_and_kept(train_data):
    from triergon.train.data.datasets import EncoderInputs
    from triergon.train.sampler import SampleRef

    enc = LanguageBindEncoders.tiny_random(embed_dim=32)
    video, audio = (enc._tower(k).vision_config for k in ("video", "audio"))
    data = EncoderInputs(train_data["shards"], tokenize=enc.tokenize, video_frames=int(video.num_frames),
                         video_size=int(video.image_size),
                         audio=audio_settings(audio))
    item = data[SampleRef(index=1, epoch=0, weight=1.0)]
    assert item["video"].shape == (3, 8, 32, 32) and item["audio"].shape == (3, 32, 128)
    assert item["input_ids"].shape == item["attention_mask"].shape == (77,) and item["weight"] == 1
    # the same embeddings as the encoders' own preprocessing of that clip
    frames = torch.from_numpy(data.index.array(1, "vframes.npy"))
    tower = enc._tower("video").model
    with torch.no_grad():
        torch.testing.assert_close(tower.get_image_features(item["video"][None]),
                                   tower.get_image_features(preprocess_video(frames, num_frames=8, size=32)[None]))
    caption = data.index.read(1, "txt").decode()
    assert torch.equal(item["input_ids"], enc.tokenize([caption])["input_ids"][0])
    assert data[SampleRef(index=1, epoch=3, weight=0.0)]["video"] is item["video"]  # kept, not prepared again


def test_cpu_run_learns_resumes_and_exports_a_languagebind_folder(train_data, tmp_path, monkeypatch):
    """A run stopped by SIGTERM at step 20 and resumed ends where the uninterrupted one does; the export loads with
    load_languagebind and embeds as the trained towers."""
    common = [f"data.path={train_data['shards']}", "data.batch_size=5", "run.save_every=20", "run.log_every=20",
              "optim.lr=3e-3", "run.steps=40"]  # every batch holds the 5 clips: the retrieval is among 5
    trainer = train_on_cpu("cpu-smoke-encoders", tmp_path / "run", common)
    assert set(trainer.last_logs) >= {f"encoders/retrieval_{pair}" for pair in ("text_video", "text_audio",
                                                                                 "video_audio")}
    loss, fired = EncoderTrainer.loss, []

    def stop_at_20(self, part, batch, step, micro):
        if step == 20 and not fired:
            fired.append(step)
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer saves after this step and stops
        return loss(self, part, batch, step, micro)

    monkeypatch.setattr(EncoderTrainer, "loss", stop_at_20)
    assert train_on_cpu("cpu-smoke-encoders", tmp_path / "split", common).step == 21
    monkeypatch.setattr(EncoderTrainer, "loss", loss)
    assert train_on_cpu("cpu-smoke-encoders", tmp_path / "split", common).step == 40
    whole, _, _ = load_run(tmp_path / "run")
    split, _, _ = load_run(tmp_path / "split")
    for (k, a), b in zip(whole.state_dict().items(), split.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)

    out, config = export_run(tmp_path / "run", tmp_path / "towers")
    assert out == tmp_path / "towers" and config.trainer == "encoders"
    trained = load_languagebind(out)
    random = LanguageBindEncoders.tiny_random(embed_dim=get_preset("tiny").conditioning.embed_dim)
    captions = [f"tone number {i}" for i in range(5)]
    e_trained, e_random = trained.encode_text(captions), random.encode_text(captions)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(whole.video.get_text_features(**trained.tokenize(captions)), dim=-1)
    torch.testing.assert_close(e_trained[:, 0], expected)
    assert not torch.allclose(e_trained, e_random)
    with pytest.raises(ValueError, match="float32"):
        export_run(tmp_path / "run", tmp_path / "half", fp16=True)
    # validation: top-1 retrieval among the clips, one line per checkpoint
    rows = validate_run(tmp_path / "run", train_data["shards"])
    assert [r["step"] for r in rows] == [20, 40] and all(r["clips"] == 5 for r in rows)
    assert all(0 <= r[k] <= 1 for r in rows for k in ("text_video", "text_audio", "video_audio"))


def test_loss_falls_from_chance_and_captions_find_their_sound(train_data, tmp_path):
    """Caption against sound only (the fixture's videos of one length are the same picture): the loss starts at
    chance, log 5 for batches of the 5 clips, and within 40 steps every caption retrieves its own clip's sound."""
    common = [f"data.path={train_data['shards']}", "data.batch_size=5", "optim.lr=3e-3", "encoder_loss.text_video=0",
              "encoder_loss.video_audio=0"]
    first = train_on_cpu("cpu-smoke-encoders", tmp_path / "a", [*common, "run.steps=1"]).last_logs
    last = train_on_cpu("cpu-smoke-encoders", tmp_path / "b", [*common, "run.steps=40"]).last_logs
    # measured: 1.654 against log 5 = 1.609, then 0.0073
    assert abs(first["loss/encoders"] - math.log(5)) < 0.15 and last["loss/encoders"] < 0.05, (first, last)
    assert last["encoders/retrieval_text_audio"] == 1.0 and "encoders/retrieval_text_video" not in last
    # validate's retrieval over the whole clips, the raw weights of step 40 (the smoke recipe's EMA lags)
    assert validate_run(tmp_path / "b", train_data["shards"], ema=False)[-1]["text_audio"] == 1.0


def test_gathered_negatives_on_two_ranks_equal_one_process_with_the_global_batch(tmp_path):
    """Two gloo ranks with 3 clips each (one of them padding): with `gather_negatives` every per-sample loss, every
    retrieval and, after DDP's averaging, every gradient equal one process's over the 6 clips; each rank's own
    negatives alone give other losses."""
    import subprocess
    import sys

    from _gather_worker import global_problem, loss_and_grads

    out, store = tmp_path / "rank0.pt", tmp_path / "store"
    logs = [tmp_path / f"rank{r}.log" for r in range(2)]  # files, not pipes: nothing drains them while waiting
    handles = [log.open("w") for log in logs]
    procs = [subprocess.Popen([sys.executable, "-m", "_gather_worker", str(r), "2", str(store), str(out)],
                              cwd=os.path.dirname(__file__), stderr=handle) for r, handle in enumerate(handles)]
    try:  # a rank that fails leaves the other waiting on the collective: stop it at once
        deadline = time.monotonic() + 300
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in procs):
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, handle in zip(procs, handles, strict=True):
        p.wait()
        handle.close()
    assert all(p.returncode == 0 for p in procs), [log.read_text() for log in logs]
    ranks = torch.load(out, weights_only=True)
    a, b, x, y, real = global_problem()
    per_sample, hit, grads = loss_and_grads(a, b, x, y, real, world=1, n_real=int(real.sum()), gather=False)
    gathered, local = ranks[True], ranks[False]
    torch.testing.assert_close(gathered["per_sample"], per_sample, rtol=1e-6, atol=1e-6)
    assert torch.equal(gathered["hit"], hit) and hit.any() and not hit[real].all()
    for got, want in zip(gathered["grads"], grads, strict=True):  # measured: 2.4e-7 at most, on gradients up to 7
        torch.testing.assert_close(got, want, rtol=1e-5, atol=2e-6)
    fewer = per_sample[real] - local["per_sample"][real]  # fewer negatives: a loss no higher, here lower by up to 3
    assert fewer.min() > -1e-6 and fewer.max() > 1, fewer
