"""Samplers against the closed-form v-predictor of Gaussian data, and classifier-free guidance."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import perturb_

from triergon.triergon_core.model import build_model
from triergon.triergon_core.sampling import GuidedDenoiser, sample, time_grid

MU, SD = 0.5, 0.3  # data distribution N(MU, SD^2) per element


def exact_v(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[v | z_t] for x0 ~ N(MU, SD^2): the ideal denoiser, in closed form (float64 inside)."""
    a = torch.cos(math.pi * t.double() / 2)[:, None, None]
    s = torch.sin(math.pi * t.double() / 2)[:, None, None]
    z = z.double()
    den = a * a * SD * SD + s * s
    x0 = MU + a * SD * SD / den * (z - a * MU)
    eps = s * (z - a * MU) / den
    return (a * eps - s * x0).float()


@pytest.fixture(scope="module")
def noise():
    return torch.randn(4, 16, 4096, generator=torch.Generator().manual_seed(0))


def rel_rms(out: torch.Tensor, noise: torch.Tensor) -> float:
    # For Gaussian data the probability-flow ODE maps noise eps to exactly MU + SD * eps.
    return float((out - (MU + SD * noise)).pow(2).mean().sqrt() / SD)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m"])
def test_100_steps_reproduce_the_data_distribution(noise, sampler):
    out = sample(exact_v, noise, sampler=sampler, steps=100)
    mean_err, std_err = abs(out.mean().item() - MU) / MU, abs(out.std().item() - SD) / SD
    print(f"{sampler} @100: mean {out.mean():.4f} (err {mean_err:.2%}), std {out.std():.4f} (err {std_err:.2%}), "
          f"rms vs exact {rel_rms(out, noise):.2%}")
    assert mean_err < 0.03 and std_err < 0.03


def test_dpmpp_needs_far_fewer_steps_than_ddim(noise):
    def steps_to(sampler: str, tol: float) -> int:
        for steps in (5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 400):
            if rel_rms(sample(exact_v, noise, sampler=sampler, steps=steps), noise) <= tol:
                return steps
        return 10_000

    dpm, ddim = steps_to("dpmpp-2m", 0.02), steps_to("ddim", 0.02)
    print(f"steps to 2% RMS error vs the exact ODE solution: DPM-Solver++(2M) {dpm}, DDIM {ddim}")
    assert dpm <= 25 and ddim >= 4 * dpm


def test_sampling_is_deterministic_and_reports_steps(noise):
    seen = []
    a = sample(exact_v, noise, steps=7, callback=lambda step, total, x0: seen.append((step, total, x0.shape)))
    assert seen == [(i, 7, noise.shape) for i in range(1, 8)]
    assert torch.equal(a, sample(exact_v, noise, steps=7))
    assert time_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]


def test_callback_can_interrupt(noise):
    class Stop(Exception):
        pass

    def stop_at_3(step, total, x0):
        if step == 3:
            raise Stop

    with pytest.raises(Stop):
        sample(exact_v, noise, steps=10, callback=stop_at_3)


def test_bad_sampler_settings(noise):
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(exact_v, noise, sampler="euler")
    with pytest.raises(ValueError, match="at least 1"):
        sample(exact_v, noise, steps=0)


def test_guidance_is_one_batched_forward():
    dit = perturb_(build_model("tiny", seed=0).dit)  # non-zero branches, so guidance matters
    b, tokens, d = 2, 8, 64
    context, global_cond = torch.randn(b, tokens, d), torch.randn(b, 2 * d)
    z, t = torch.randn(b, 16, 10), torch.full((b,), 0.4)
    calls = []
    handle = dit.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    with torch.no_grad():
        guided = GuidedDenoiser(dit, context, global_cond, cfg_scale=7.0)(z, t)
        cond = dit(z, t, context, global_cond)
        uncond = dit(z, t, torch.zeros_like(context), global_cond)
        plain = GuidedDenoiser(dit, context, global_cond, cfg_scale=1.0)(z, t)
    handle.remove()
    assert calls == [2 * b, b, b, b]  # the guided call is one forward over [cond; uncond]
    torch.testing.assert_close(guided, uncond + 7.0 * (cond - uncond), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, cond)
