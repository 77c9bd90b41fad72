"""torch.compile traces the models end to end with the default backend switch (auto) on this CPU, and the
compiled sampling step (`generate(compile=...)`) equals the eager one, compiles once per shape, and the sampling
loop never synchronises with the host.

On the CPU the step is mostly compiled with Dynamo's "eager" / "aot_eager" backends (`TRIERGON_COMPILE_BACKEND`):
the same graph capture as inductor's, without its code generation; one test runs inductor itself (its C++ code
for the CPU, about 20 s). The GPU test (inductor, CUDA graphs, bf16) skips without a GPU.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from _helpers import max_rel_err, perturb_
from torch._dynamo.utils import counters

import triergon
from triergon.triergon_core.generate import compute_dtype
from triergon.triergon_core.sampling import COMPILE_BACKEND_ENV, GuidedDenoiser, sample


def test_fullgraph_compile_of_dit_and_decoder():
    model = triergon.build_model("tiny", seed=0)
    dit = torch.compile(model.dit, fullgraph=True, backend="aot_eager")
    decoder = torch.compile(model.vae.decoder, fullgraph=True, backend="aot_eager")
    x, t, c, g = torch.randn(2, 16, 12), torch.rand(2), torch.randn(2, 8, 64), torch.randn(2, 128)
    with torch.no_grad():
        torch.testing.assert_close(dit(x, t, c, g), model.dit(x, t, c, g))
        z = torch.randn(1, 16, 4)
        torch.testing.assert_close(decoder(z), model.vae.decoder(z))


@pytest.fixture(scope="module")
def tiny():
    model = triergon.build_model("tiny", seed=0)
    perturb_(model.dit, seed=1)  # residual branches start at zero: perturbed, every block contributes
    return model


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("sampler", ["dpmpp-2m", "ddim"])
def test_compiled_sampling_equals_eager(tiny, sampler, monkeypatch):
    backend = "aot_eager"  # functionalised ATen graph, as inductor receives it
    monkeypatch.setenv(COMPILE_BACKEND_ENV, backend)
    context, global_cond = torch.randn(1, 8, 64), torch.randn(1, 128)
    noise = torch.randn(1, 16, 23)
    with torch.inference_mode():
        eager, compiled = (sample(GuidedDenoiser(tiny.dit, context, global_cond, cfg_scale=7.0, compile=mode), noise,
                                  sampler=sampler, steps=4) for mode in (None, "default"))
    # measured: identical (difference 0), also with the "eager" backend; the margin is float32 rounding, for a
    # Dynamo that reorders an op
    err = max_rel_err(compiled, eager)
    print(f"{sampler}, {backend}: compiled vs eager sampling max relative error {err:.1e}")
    assert err <= 1e-6


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="inductor generates C++ on the CPU: no compiler here")
def test_inductor_on_the_cpu_equals_eager(tiny, monkeypatch, tmp_path):
    """Inductor's own code (C++ for the CPU, from a cold cache), as `generate(compile="default")` runs it where no
    backend is forced."""
    monkeypatch.delenv(COMPILE_BACKEND_ENV, raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    context, global_cond = torch.randn(1, 8, 64), torch.randn(1, 128)
    noise = torch.randn(1, 16, 23)
    torch._dynamo.reset()
    try:
        with torch.inference_mode():
            eager, compiled = (sample(GuidedDenoiser(tiny.dit, context, global_cond, cfg_scale=7.0, compile=mode),
                                      noise, steps=4) for mode in (None, "default"))
    finally:
        torch._dynamo.reset()
    err = max_rel_err(compiled, eager)
    print(f"inductor (CPU) vs eager sampling max relative error {err:.1e}")
    assert err <= 1e-5  # measured 2.9e-6 (fused float32 kernels round differently)


def test_generate_compiles_once_per_shape(tiny, monkeypatch):
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")
    kwargs = dict(steps=2, compile="default")
    first = triergon.generate(tiny, seconds=0.7, seed=1, **kwargs)
    before = graphs()
    # a second generation of the same shape (conditions prepared anew, a new seed, the other sampler) reuses it
    again = triergon.generate(tiny, seconds=0.7, seed=2, sampler="ddim", **kwargs)
    assert graphs() == before
    assert torch.equal(first, triergon.generate(tiny, seconds=0.7, seed=1, **kwargs))
    assert graphs() == before
    assert torch.equal(first, triergon.generate(tiny, seconds=0.7, seed=1, steps=2))  # equal to eager generate
    assert again.shape == first.shape
    triergon.generate(tiny, seconds=1.3, seed=1, **kwargs)  # another duration: one more compilation
    assert graphs() == before + 1


def test_sampling_loop_never_reads_a_tensor_on_the_host(tiny, monkeypatch):
    """No `.item()`, `.tolist()`, `bool(tensor)` (a Python branch on a value) or float / int of a tensor inside
    the loop, eager or compiled: each would wait for the GPU every step."""
    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")
    context, global_cond = torch.randn(1, 8, 64), torch.randn(1, 128)
    noise = torch.randn(1, 16, 23)
    with torch.inference_mode():
        denoisers = {mode: GuidedDenoiser(tiny.dit, context, global_cond, cfg_scale=7.0, compile=mode)
                     for mode in (None, "default")}
        sample(denoisers["default"], noise, steps=2)  # compiled outside the watch: tracing may read values

        def forbidden(name):
            def read(self, *args, **kwargs):
                raise AssertionError(f"Tensor.{name} inside the sampling loop")
            return read

        for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
            monkeypatch.setattr(torch.Tensor, name, forbidden(name))
        seen = []
        for sampler in ("dpmpp-2m", "ddim"):
            for denoiser in denoisers.values():
                sample(denoiser, noise, sampler=sampler, steps=3, callback=lambda i, n, x0: seen.append(i))
    assert seen == [1, 2, 3] * 4


def test_compile_option_errors(tiny):
    with pytest.raises(ValueError, match="unknown compile mode 'fast'"):
        triergon.generate(tiny, seconds=0.5, steps=1, compile="fast")
    with pytest.raises(ValueError, match="compile needs cache_conditioning"):
        GuidedDenoiser(tiny.dit, torch.randn(1, 8, 64), torch.randn(1, 128), cfg_scale=7.0, cache_conditioning=False,
                       compile="default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="inductor with CUDA graphs, bf16: needs a GPU")
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_step_on_the_gpu_equals_eager_and_never_syncs(mode, monkeypatch):
    monkeypatch.delenv(COMPILE_BACKEND_ENV, raising=False)
    model = triergon.build_model("tiny", seed=0, device="cuda")
    perturb_(model.dit, seed=1)
    context, global_cond = torch.randn(1, 8, 64, device="cuda"), torch.randn(1, 128, device="cuda")
    noise = torch.randn(1, 16, model.config.sequence.latent_frames(2.0), device="cuda")
    with torch.inference_mode(), compute_dtype(model, "bfloat16"):
        eager = sample(GuidedDenoiser(model.dit, context, global_cond, cfg_scale=7.0), noise, steps=6)
        # prepared outside the watch (`DiT.prepare` reads the context once on the host, by design)
        warm, denoiser = (GuidedDenoiser(model.dit, context, global_cond, cfg_scale=7.0, compile=mode)
                          for _ in range(2))
        sample(warm, noise, steps=2)  # compiles (and records the graph)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            compiled = sample(denoiser, noise, steps=6)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    err = max_rel_err(compiled, eager)
    print(f"{mode}: compiled vs eager bf16 sampling max relative error {err:.1e}")
    assert err < 0.05  # bf16: fused kernels round differently; well under the 0.1 of bf16 vs fp32
