"""Timing whole generations: wall time, real-time factor, each stage's share, peak memory, the DiT's TFLOP/s.

A generation here is what `generate` does, split into timed stages: the conditions (the conditioner and
`prepare_conditions`), sampling (the DiT with CFG, the per-generation preparation included) and the VAE decode.
Condition encoders (LanguageBind) are timed apart and not counted in the real-time factor: they run once per
input, are cached across runs, and are absent with random weights. Used by `triergon bench` and
`benchmarks/bench_rtf.py`.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time
from dataclasses import dataclass

import torch

from .config import DiTConfig
from .generate import compute_dtype, initial_noise, prepare_conditions, staged
from .model import TriErgon
from .sampling import COMPILE_BACKEND_ENV, GuidedDenoiser, check_compile, sample

# reference: every step recomputes what is constant (the path `GuidedDenoiser(cache_conditioning=False)` keeps
# as the oracle); cached: the conditioning prepared once per generation (what `generate` does); compiled: cached
# with the step under `torch.compile` (`generate(compile=...)`); offload: cached with the VAE and encoders on the
# CPU except for their stage (`generate(offload=True)`), for its memory and the cost of the copies.
VARIANTS = ("reference", "cached", "compiled", "offload")
DEFAULT_VARIANTS = ("reference", "cached")


def dit_flops(config: DiTConfig, *, frames: int, tokens: int, batch: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one DiT forward over `batch` rows of `frames` latent frames, counted
    as the reference path computes it (cross-attention keys/values and every row included): the figure a
    step's work is measured against, whatever a faster path skips.

    Args:
        config: the DiT's sizes.
        frames: latent frames (the prepended global token is added here).
        tokens: conditioning tokens (E's length).
        batch: rows per forward (2 per item with CFG).
    """
    d, ff, ctx = config.embed_dim, config.embed_dim * config.ff_mult, config.cond_token_dim
    ctx_embed = d if config.project_cond_tokens else ctx
    n = frames + 1
    block = (2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d  # self-attention: qkv, scores and values, out
             + 2 * n * d * d + 2 * tokens * ctx_embed * 2 * ctx_embed + 4 * n * tokens * d + 2 * n * d * d  # cross
             + 2 * n * d * 2 * ff + 2 * n * ff * d)  # SwiGLU feed-forward
    c = config.io_channels
    io = 2 * 2 * frames * c * c + 2 * frames * c * d + 2 * n * d * c  # 1x1 convs, projections in and out
    embeds = 2 * (256 * d + d * d) + 2 * (config.global_cond_dim * d + d * d) + 2 * tokens * (ctx * ctx_embed
                                                                                              + ctx_embed ** 2)
    return batch * (config.depth * block + io + embeds)


@dataclass
class Timing:
    """One timed generation. Seconds per stage; `encoders_s` is apart (not in `wall_s` or the RTF)."""

    preset: str
    seconds: float
    steps: int
    sampler: str
    cfg_scale: float
    variant: str  # "compiled" rows carry the mode: "compiled:reduce-overhead"
    dtype: str
    device: str
    conditions_s: float
    sampling_s: float
    decode_s: float
    encoders_s: float
    peak_memory_bytes: int
    peak_memory_kind: str
    dit_flops: int
    cpu_s: float = 0.0  # this process's CPU seconds over the three stages: on a shared CPU, what the work cost

    @property
    def wall_s(self) -> float:
        return self.conditions_s + self.sampling_s + self.decode_s

    @property
    def rtf(self) -> float:
        return self.wall_s / self.seconds

    @property
    def step_ms(self) -> float:
        return 1000 * self.sampling_s / self.steps

    @property
    def dit_tflops(self) -> float:
        return self.dit_flops / self.sampling_s / 1e12

    def shares(self) -> dict[str, float]:
        return {"conditions": self.conditions_s / self.wall_s, "sampling": self.sampling_s / self.wall_s,
                "decode": self.decode_s / self.wall_s}

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"wall_s": self.wall_s, "rtf": self.rtf, "step_ms": self.step_ms,
                                           "dit_tflops": self.dit_tflops, "shares": self.shares()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_rss_bytes() -> int:
    # ru_maxrss is KiB on Linux and bytes on macOS: the process's peak since it started, not per run.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


@torch.inference_mode()
def time_generation(model: TriErgon, *, seconds: float, steps: int = 100, cfg_scale: float = 7.0,
                    sampler: str = "dpmpp-2m", variant: str = "cached", dtype: str | None = None,
                    compile: str = "reduce-overhead", text: str | None = None, seed: int = 0) -> Timing:
    """Run one generation stage by stage, synchronising the device between stages, and time it.

    Args:
        model: the model (random weights are fine: the work is the same).
        seconds, steps, cfg_scale, sampler: as `generate`.
        variant: one of `VARIANTS`: "reference" (constant work recomputed every step), "cached" (prepared
            once, as `generate`), "compiled" (cached, the step compiled) or "offload" (cached; the VAE and the
            encoders visit the device only for their stage, their copies timed with it).
        dtype: autocast dtype for the DiT ("bfloat16"), or None for the weights' own.
        compile: the `torch.compile` mode of the "compiled" variant.
        text: a prompt, to time the condition encoders too (the preset must carry them: `tiny`).
        seed: noise seed.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    check_compile(compile)
    offload = variant == "offload"
    param = next(model.dit.parameters())
    device = param.device
    model.vae.to("cpu" if offload else device)  # where it lives between generations (no copy when there)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    clock = time.perf_counter

    encoders_s, embeddings = 0.0, {}
    if text is not None:
        from .encoders import build_encoders

        encoders = build_encoders(model.config.conditioning)
        if encoders is None:
            raise ValueError(f"preset {model.config.name!r} carries no condition encoders; time without text")
        _sync(device)
        t0 = clock()
        with staged(encoders, device, offload):
            embeddings["text"] = encoders.encode_text([text])
        _sync(device)
        encoders_s = clock() - t0

    _sync(device)
    c0, t0 = time.process_time(), clock()
    conditions = prepare_conditions(model, seconds=seconds)
    if embeddings:
        conditions = dataclasses.replace(conditions, **{k: v.to(device) for k, v in embeddings.items()})
    context, global_cond, frame_cond = model.conditioner(conditions)
    noise = initial_noise(model, seconds=seconds, seed=seed, batch_size=1, device=device)
    _sync(device)
    t1 = clock()
    with compute_dtype(model, dtype):
        denoiser = GuidedDenoiser(model.dit, context, global_cond, cfg_scale=cfg_scale, frame_cond=frame_cond,
                                  cache_conditioning=variant != "reference",
                                  compile=compile if variant == "compiled" else None)
        latents = sample(denoiser, noise, sampler=sampler, steps=steps)
    _sync(device)
    t2 = clock()
    with staged(model.vae, device, offload):
        vae_dtype = next(model.vae.parameters()).dtype
        model.decode(latents.to(vae_dtype), num_samples=model.config.sequence.num_samples(seconds))
        _sync(device)
    t3, c3 = clock(), time.process_time()

    if device.type == "cuda":
        peak, kind = torch.cuda.max_memory_allocated(device), "cuda allocated"
    else:
        peak, kind = _peak_rss_bytes(), "process RSS"
    frames = noise.shape[-1]
    rows = 1 if cfg_scale == 1.0 else 2
    flops = steps * dit_flops(model.config.dit, frames=frames, tokens=context.shape[1], batch=rows)
    name = variant
    if variant == "compiled":  # the backend named when it is not inductor: such a row is no measurement
        backend = os.environ.get(COMPILE_BACKEND_ENV, "inductor")
        name = f"compiled:{compile}" + ("" if backend == "inductor" else f"@{backend}")
    return Timing(preset=model.config.name, seconds=seconds, steps=steps, sampler=sampler, cfg_scale=cfg_scale,
                  variant=name, dtype=dtype or str(param.dtype).removeprefix("torch."), device=str(device),
                  conditions_s=t1 - t0, sampling_s=t2 - t1, decode_s=t3 - t2, encoders_s=encoders_s,
                  peak_memory_bytes=peak, peak_memory_kind=kind, dit_flops=flops, cpu_s=c3 - c0)


def warm_up(model: TriErgon, *, seconds: float, sampler: str, variant: str, dtype: str | None,
            compile: str = "reduce-overhead") -> float:
    """One short generation at the same shape: first-call costs (allocator, kernel selection, autotuning, the
    compilation of a compiled step) out of the timed runs. Returns its wall seconds (for "compiled", mostly the
    compilation)."""
    t0 = time.perf_counter()
    time_generation(model, seconds=seconds, steps=2, sampler=sampler, variant=variant, dtype=dtype, compile=compile)
    return time.perf_counter() - t0


def format_table(rows: list[Timing], *, ceiling_tflops: float | None = None) -> str:
    """A Markdown table; speed-up is the first row's wall time over each row's at the same case."""
    head = ("| preset | seconds | steps | sampler | variant | dtype | wall s | RTF | CPU s | step ms | conditions / "
            "sampling / decode | peak memory | DiT TFLOP/s |")
    if ceiling_tflops:
        head += " of ceiling |"
    head += " speed-up |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    first: dict[tuple, Timing] = {}
    for r in rows:
        case = (r.preset, r.seconds, r.steps, r.sampler, r.cfg_scale)
        base = first.setdefault(case, r)
        s = r.shares()
        line = (f"| {r.preset} | {r.seconds:g} | {r.steps} | {r.sampler} | {r.variant} | {r.dtype} | {r.wall_s:.3f} "
                f"| {r.rtf:.3f} | {r.cpu_s:.2f} | {r.step_ms:.2f} "
                f"| {s['conditions']:.0%} / {s['sampling']:.0%} / {s['decode']:.0%} "
                f"| {r.peak_memory_bytes / 2**30:.2f} GiB ({r.peak_memory_kind}) | {r.dit_tflops:.3g} |")
        if ceiling_tflops:
            line += f" {r.dit_tflops / ceiling_tflops:.1%} |"
        line += f" {base.sampling_s / r.sampling_s:.2f}x sampling, {base.wall_s / r.wall_s:.2f}x wall |"
        lines.append(line)
    return "\n".join(lines)


def format_summary(rows: list[dict]) -> str:
    """One row per case from `Timing.as_dict()` rows: eager (reference path) vs optimised (the fastest of the
    cached and compiled paths, named) wall time, speed-up, and the optimised run's RTF, peak memory and DiT
    TFLOP/s (with its share of the matmul ceiling when the row carries `ceiling_tflops`); then the offload
    run's wall time and peak memory, where there is one."""
    cases: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        case = (r["preset"], r["seconds"], r["steps"], r["sampler"], r["dtype"])
        cases.setdefault(case, {})[r["variant"]] = r
    lines = ["| preset | seconds | steps | sampler | dtype | eager s | optimised s | optimised by | speed-up | RTF "
             "| peak memory | TFLOP/s | offload s / peak memory |", "|" + " --- |" * 13]
    for (preset, seconds, steps, sampler, dtype), runs in cases.items():
        eager, offload = runs.get("reference"), runs.get("offload")
        fast = [r for name, r in runs.items() if name not in ("reference", "offload")]
        best = min(fast, key=lambda r: r["wall_s"]) if fast else None
        shown = best or eager or offload
        ceiling = shown.get("ceiling_tflops")
        rate = f"{shown['dit_tflops']:.3g}" + (f" ({shown['dit_tflops'] / ceiling:.0%})" if ceiling else "")
        cells = [preset, f"{seconds:g}", str(steps), sampler, dtype,
                 f"{eager['wall_s']:.3f}" if eager else "-", f"{best['wall_s']:.3f}" if best else "-",
                 best["variant"] if best else "-",
                 f"{eager['wall_s'] / best['wall_s']:.2f}x" if eager and best else "-", f"{shown['rtf']:.4f}",
                 f"{shown['peak_memory_bytes'] / 2**30:.2f} GiB", rate,
                 f"{offload['wall_s']:.3f} / {offload['peak_memory_bytes'] / 2**30:.2f} GiB" if offload else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
