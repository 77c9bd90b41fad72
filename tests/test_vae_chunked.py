"""Chunked (overlapping-window) VAE encode/decode: same result as one pass, bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from _helpers import max_rel_err

from triergon.triergon_core.model import build_model

# The Oobleck receptive field is under 16 latent frames, so with the default 16 frames of overlap chunked
# results equal the one-pass result up to float32 rounding (measured: 3.9e-7 relative on the tiny preset).
CHUNK_TOL = 1e-5


@pytest.fixture(scope="module")
def tiny_vae():
    return build_model("tiny", seed=0).vae


@pytest.mark.parametrize("seconds", [6.0, 3.3])
def test_chunked_encode_matches_one_pass(tiny_vae, seconds):
    audio = torch.randn(2, 2, round(seconds * 44100), generator=torch.Generator().manual_seed(1)) * 0.3
    calls = []
    with torch.inference_mode():
        full = tiny_vae.encode(audio, sample=False, chunk_frames=None)
        chunked = tiny_vae.encode(audio, sample=False, chunk_frames=16,
                                  progress=lambda done, total: calls.append((done, total)))
    frames = -(-audio.shape[-1] // 2048)
    assert full.shape == chunked.shape == (2, 16, frames)
    err = max_rel_err(chunked, full)
    print(f"chunked encode {seconds} s: max relative error {err:.2e} over {len(calls)} windows")
    assert err <= CHUNK_TOL
    assert calls == [(i + 1, len(calls)) for i in range(len(calls))] and len(calls) == -(-frames // 16)


def test_chunked_decode_matches_one_pass(tiny_vae):
    latents = torch.randn(2, 16, 130, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = tiny_vae.decode(latents, chunk_frames=None, num_samples=264_000)
        chunked = tiny_vae.decode(latents, chunk_frames=16, num_samples=264_000)
    assert full.shape == chunked.shape == (2, 2, 264_000)
    err = max_rel_err(chunked, full)
    print(f"chunked decode: max relative error {err:.2e}")
    assert err <= CHUNK_TOL


def test_decode_rejects_bad_lengths(tiny_vae):
    with pytest.raises(ValueError, match="does not fit"):
        tiny_vae.decode(torch.zeros(1, 16, 4), num_samples=4 * 2048 + 1)
    with pytest.raises(ValueError, match="expected audio"):
        tiny_vae.encode(torch.zeros(2, 44100))


_MEASURE = textwrap.dedent("""
    import sys, torch
    torch.set_num_threads(1)
    from triergon.triergon_core.model import build_model
    op, chunk, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    chunk = None if chunk == "none" else int(chunk)
    vae = build_model("tiny", seed=0).vae
    frames = round(seconds * 44100 / 2048)
    def status_kb(field):
        line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024
    with torch.inference_mode():
        if op == "decode":
            x = torch.randn(1, 16, frames)
            run = lambda x: vae.decode(x, chunk_frames=chunk)
        else:
            x = torch.randn(1, 2, frames * 2048 - 1000) * 0.3
            run = lambda x: vae.encode(x, sample=False, chunk_frames=chunk)
        run(x[..., :8 * x.shape[-1] // frames])  # warm up kernels and the allocator
        before = status_kb("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS; ru_maxrss would include the parent's
        out = run(x)
        peak = status_kb("VmHWM")
    print(peak - before, out.numel() * out.element_size())
""")


def _extra_peak(op: str, chunk: str, seconds: float) -> tuple[int, int]:
    """(peak RSS above the pre-call RSS, output bytes) of one encode/decode in a fresh process."""
    # A fixed mmap threshold makes glibc return freed large blocks at once, so RSS tracks live memory.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", _MEASURE, op, chunk, str(seconds)], env=env,
                         capture_output=True, text=True, check=True)
    extra, out_bytes = map(int, res.stdout.split())
    return extra, out_bytes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc malloc settings")
def test_chunked_peak_memory_does_not_grow_with_length():
    mb = 1 << 20
    dec_short, out_short = _extra_peak("decode", "32", 6.0)
    dec_long, out_long = _extra_peak("decode", "32", 24.0)
    enc_short, _ = _extra_peak("encode", "32", 6.0)
    enc_long, _ = _extra_peak("encode", "32", 24.0)
    one_long, _ = _extra_peak("decode", "none", 24.0)
    print(f"extra peak MB, 6 s -> 24 s: chunked decode {dec_short / mb:.1f} -> {dec_long / mb:.1f} "
          f"(output {out_short / mb:.1f} -> {out_long / mb:.1f}); chunked encode {enc_short / mb:.1f} -> "
          f"{enc_long / mb:.1f}; one-pass decode of 24 s {one_long / mb:.1f}")
    # Beyond the output buffer itself, chunked working memory stays flat (4 MB of allocator slack).
    assert dec_long - dec_short <= (out_long - out_short) + 4 * mb
    assert enc_long - enc_short <= 4 * mb
    # The measurement is sensitive: one pass over the long input needs several times the chunked peak.
    assert one_long >= 3 * dec_long
