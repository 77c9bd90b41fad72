"""v-diffusion sampling: cosine schedule, DDIM (v form), DPM-Solver++(2M), classifier-free guidance.

Continuous time t in [0, 1]: alpha = cos(pi t / 2), sigma = sin(pi t / 2), z_t = alpha x0 + sigma eps, and
the network predicts v = alpha eps - sigma x0. Both samplers walk t from 1 to 0 on a uniform grid; the
schedule arithmetic is done in float64, the latents stay in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .checks import check_finite
from .dit import DiT, PreparedConditioning

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z [B, C, N], t [B]) -> v [B, C, N]
StepCallback = Callable[[int, int, torch.Tensor], None]  # (step done, total steps, predicted x0)


def alpha_sigma(t: float) -> tuple[float, float]:
    return math.cos(math.pi * t / 2), math.sin(math.pi * t / 2)


def time_grid(steps: int) -> list[float]:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return [1.0 - i / steps for i in range(steps + 1)]


def _predict(denoise: Denoiser, z: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0, eps) predicted from the v prediction at time t."""
    a, s = alpha_sigma(t)
    v = denoise(z, torch.full((z.shape[0],), t, device=z.device, dtype=torch.float32)).float()
    return a * z - s * v, s * z + a * v


def start_latents(noise: torch.Tensor) -> torch.Tensor:
    """The sampler's float32 state, a copy of `noise` made in the current autograd mode: under inference mode
    every step's latents are then alike (inference tensors), so a compiled step does not recompile after the
    first one."""
    return noise.to(torch.float32, copy=True)


def sample_ddim(denoise: Denoiser, noise: torch.Tensor, *, steps: int,
                callback: StepCallback | None = None) -> torch.Tensor:
    """Deterministic DDIM in v form: z_s = alpha_s x0 + sigma_s eps with (x0, eps) predicted at t."""
    grid = time_grid(steps)
    z = start_latents(noise)
    for i in range(steps):
        x0, eps = _predict(denoise, z, grid[i])
        a_s, s_s = alpha_sigma(grid[i + 1])
        z = a_s * x0 + s_s * eps
        if callback is not None:
            callback(i + 1, steps, x0)
    return z


def sample_dpmpp_2m(denoise: Denoiser, noise: torch.Tensor, *, steps: int,
                    callback: StepCallback | None = None) -> torch.Tensor:
    """DPM-Solver++(2M): second-order multistep in the data prediction, first order on the first and last
    steps (lambda = log(alpha / sigma) is infinite at t = 0)."""
    grid = time_grid(steps)
    lam = [math.log(max(alpha_sigma(t)[0], 1e-300) / alpha_sigma(t)[1]) if t > 0 else math.inf for t in grid]
    z = start_latents(noise)
    x0_prev = None
    for i in range(steps):
        t, s = grid[i], grid[i + 1]
        x0, _ = _predict(denoise, z, t)
        (a_t, s_t), (a_s, s_s) = alpha_sigma(t), alpha_sigma(s)
        decay = 0.0 if s_s == 0 else (a_t * s_s) / (s_t * a_s)  # exp(-h), h = lambda_s - lambda_t
        d = x0
        if x0_prev is not None and s > 0:
            r = (lam[i] - lam[i - 1]) / (lam[i + 1] - lam[i])
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        z = (s_s / s_t) * z + a_s * (1 - decay) * d
        x0_prev = x0
        if callback is not None:
            callback(i + 1, steps, x0)
    return z


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"dpmpp-2m": sample_dpmpp_2m, "ddim": sample_ddim}


@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """How latents are sampled; checked on construction (errors name the setting).

    Args:
        steps: network evaluations (each a CFG-batched DiT forward).
        cfg_scale: classifier-free guidance scale (1 = conditional only).
        sampler: one of `SAMPLERS`.
    """

    steps: int = 100
    cfg_scale: float = 7.0
    sampler: str = "dpmpp-2m"

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a whole number of at least 1, got {self.steps!r}")
        check_finite(self.cfg_scale, what="cfg_scale")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}")

    def override(self, *, steps: int | None = None, cfg_scale: float | None = None,
                 sampler: str | None = None) -> SamplingSettings:
        """These settings with the given ones (those not None) in their place, checked."""
        given = {"steps": steps, "cfg_scale": cfg_scale, "sampler": sampler}
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def to_metadata(self) -> str:
        """The JSON text a checkpoint stores under `SAMPLING_KEY`."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_metadata(cls, text: str) -> SamplingSettings:
        """Settings from a checkpoint's `SAMPLING_KEY` text; a setting it leaves out is the paper's."""
        try:
            stored = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"sampling settings are not JSON: {e}") from e
        if not isinstance(stored, dict):
            raise ValueError(f"sampling settings must be a JSON object, got {text!r}")
        unknown = sorted(set(stored) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown sampling settings {', '.join(unknown)} in {text!r}")
        return cls(**stored)


# The paper's setting (its optimum): 100 steps, CFG 7, DPM-Solver++(2M). The one place that holds it: a model's
# `sampling` (generate's and the entry points' defaults) is this unless its checkpoint recommends other settings.
PAPER_SAMPLING = SamplingSettings()
# Checkpoint metadata key: the sampling settings the weights are tuned for (`SamplingSettings.to_metadata`).
SAMPLING_KEY = "sampling"


def sample(denoise: Denoiser, noise: torch.Tensor, *, sampler: str = PAPER_SAMPLING.sampler,
           steps: int = PAPER_SAMPLING.steps, callback: StepCallback | None = None) -> torch.Tensor:
    """Run `sampler` from `noise` (at t = 1) to t = 0 and return the clean latents.

    Args:
        denoise: the v predictor, e.g. a `GuidedDenoiser`.
        noise: N(0, 1) latents [B, C, N].
        sampler: "dpmpp-2m" (default) or "ddim".
        steps: number of network evaluations (100, the paper's setting).
        callback: called after every step as callback(step, steps, predicted_x0); raise from it to stop.
    """
    SamplingSettings(steps=steps, sampler=sampler)
    return SAMPLERS[sampler](denoise, noise, steps=steps, callback=callback)


# `torch.compile` modes for the sampling step: "reduce-overhead" adds CUDA graphs (one replay per step instead of
# hundreds of kernel launches; shapes are fixed within a generation), "max-autotune" also tunes the matmuls.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
# The compiler backend; only tests and the dry run of benchmarks/run_gpu.sh change it ("aot_eager" traces the
# step as inductor does, without generating code, which on a CPU takes minutes).
COMPILE_BACKEND_ENV = "TRIERGON_COMPILE_BACKEND"


def check_compile(mode: str | None) -> None:
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose one of {', '.join(COMPILE_MODES)} (or none)")


def guided_velocity(dit: DiT, z: torch.Tensor, t: torch.Tensor,
                    conditioning: PreparedConditioning | tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
                    cfg_scale: float,
                    dtype: torch.dtype) -> torch.Tensor:
    """One sampling step's guided v prediction, float32: the DiT on `conditioning` (prepared once, or the
    reference path's (context, global_cond, frame_cond), CFG rows included), the network input cast to `dtype`. The
    function `compiled_step` compiles: no host synchronisation, no branch on tensor values."""
    if cfg_scale != 1.0:
        z, t = torch.cat([z, z]), torch.cat([t, t])
    if isinstance(conditioning, PreparedConditioning):
        v = dit(z.to(dtype), t, prepared=conditioning)
    else:
        context, global_cond, frame_cond = conditioning
        v = dit(z.to(dtype), t, context, global_cond, frame_cond=frame_cond)
    v = v.float()
    if cfg_scale == 1.0:
        return v
    cond, uncond = v.chunk(2)
    return uncond + (cond - uncond) * cfg_scale


@functools.cache
def compiled_step(mode: str, backend: str) -> Callable[..., torch.Tensor]:
    """`guided_velocity` compiled once per process for `mode` and `backend`. Shapes are static
    (`dynamic=False`): each model and duration compiles on its first step, and a later generation of the same
    shape reuses that code (Dynamo's cache, keyed by its guards)."""
    options = {"mode": mode} if backend == "inductor" else {}
    return torch.compile(guided_velocity, fullgraph=True, dynamic=False, backend=backend, **options)


class GuidedDenoiser:
    """The DiT with classifier-free guidance: conditional and unconditional halves in one batched forward.

    The unconditional branch sees E = 0 (the training-time dropout of the whole E), a zero frame-aligned
    condition (`frame_cond`, dropped with E in training) and the same global timing conditioning.
    out = uncond + (cond - uncond) * cfg_scale; cfg_scale 1 runs only the cond half.
    With `cache_conditioning` (the default) what every step shares is computed once (`DiT.prepare`): the
    cross-attention keys and values, the global embedding, the frame-aligned embedding, the rotary tables, and
    the skipping of the unconditional half's cross-attention, which is exactly zero. Without it every step
    recomputes them (the reference path the cached one is tested against). `compile` (one of `COMPILE_MODES`)
    runs each step through `torch.compile` of `guided_velocity` on the prepared conditioning.
    """

    def __init__(self, dit: DiT, context: torch.Tensor, global_cond: torch.Tensor, *, cfg_scale: float,
                 frame_cond: torch.Tensor | None = None, cache_conditioning: bool = True,
                 compile: str | None = None) -> None:
        check_compile(compile)
        if compile is not None and not cache_conditioning:
            raise ValueError("compile needs cache_conditioning=True: the compiled step runs on the prepared "
                             "conditioning")
        self.dit, self.cfg_scale, self.compile = dit, cfg_scale, compile
        param = next(dit.parameters())
        self.dtype = param.dtype
        if cfg_scale != 1.0:
            context = torch.cat([context, torch.zeros_like(context)])
            global_cond = torch.cat([global_cond, global_cond])
            frame_cond = None if frame_cond is None else torch.cat([frame_cond, torch.zeros_like(frame_cond)])
        self.context = context.to(device=param.device, dtype=self.dtype)
        self.global_cond = global_cond.to(device=param.device, dtype=self.dtype)
        self.frame_cond = None if frame_cond is None else frame_cond.to(device=param.device, dtype=self.dtype)
        self.prepared = None
        if cache_conditioning:
            with torch.no_grad():
                self.prepared = dit.prepare(self.context, self.global_cond, frame_cond=self.frame_cond)

    def __call__(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prepared is None:
            return guided_velocity(self.dit, z, t, (self.context, self.global_cond, self.frame_cond), self.cfg_scale,
                                   self.dtype)
        if self.compile is None:
            return guided_velocity(self.dit, z, t, self.prepared, self.cfg_scale, self.dtype)
        # The rotary table is filled here, eagerly: inside the compiled step it would be a side effect, and
        # under CUDA graphs a replay's output that the next replay overwrites.
        self.dit.transformer.rotary_for(self.prepared, z.shape[-1] + 1)
        backend = os.environ.get(COMPILE_BACKEND_ENV, "inductor")
        graphs = self.compile == "reduce-overhead" and backend == "inductor" and z.device.type == "cuda"
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are no longer read
        v = compiled_step(self.compile, backend)(self.dit, z, t, self.prepared, self.cfg_scale, self.dtype)
        return v.clone() if graphs else v  # a graph's output buffer is reused by its next replay
