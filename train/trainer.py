"""The training loop shared by the VAE, DiT and T_LUFS trainers (plain PyTorch, no framework).

A trainer owns one or more `Part`s (a module with its optimiser, warm-up + cosine schedule and EMA: the VAE
trainer has the autoencoder and the discriminator). Each step reads `accum_steps` micro-batches, and for each
part due at this step accumulates gradients, clips them, steps the optimiser and updates the EMA. Resuming,
signals, non-finite losses, logging and checkpoints are handled here, so the subclasses only say what the
parts are, what data they read and what their losses are.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpointing import CheckpointManager
from .config import TrainConfig
from .data.datasets import collate
from .distributed import DistInfo, all_reduce_max, all_reduce_mean
from .parallelize import is_sharded, parallelize
from .sampler import DataPosition, EpochSampler
from .samples import write_samples

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss was NaN or infinite: the run stopped without saving the broken state."""


@dataclass
class Part:
    name: str
    module: nn.Module  # the plain model (its names are the checkpoint's keys)
    net: nn.Module  # what forward calls go through (DDP wrapper, or the FSDP2-sharded module itself)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: dict[str, torch.Tensor] | None


def warmup_cosine(step: int, *, warmup: int, total: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class Trainer:
    """Subclasses implement `build`, `dataset` and `loss`; optionally `parts_at` and `extra_logs`."""

    def __init__(self, config: TrainConfig, info: DistInfo, run_dir: str | Path) -> None:
        self.config, self.info, self.run_dir = config, info, Path(run_dir).expanduser()
        self.device = info.device
        self.parts: dict[str, Part] = {}
        self.step = 0
        self.position = DataPosition()
        self.ckpt = CheckpointManager(self.run_dir, rank=info.rank, world_size=info.world_size, keep=config.run.keep)
        self._stop_requested = False
        self.last_checkpoint: Path | None = None
        self.last_logs: dict[str, float] = {}
        self.tokens_per_sample = 0  # sequence positions per sample, for tokens/s (set by the DiT trainer)

    # --- what subclasses provide -------------------------------------------------------------------------
    def build(self) -> None:
        raise NotImplementedError

    def dataset(self) -> Dataset:
        raise NotImplementedError

    def loss(self, part: str, batch: dict[str, Any], step: int, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def parts_at(self, step: int) -> list[str]:
        return list(self.parts)

    sample_part: str | None = None  # the part `sample` reads (train/samples.py); None: no samples

    def sample_module(self) -> nn.Module:
        """A new plain module of `sample_part`'s architecture (its EMA weights are loaded into it)."""
        raise NotImplementedError

    def sample(self, module: nn.Module, item: dict[str, Any]):
        """One `Sample` from the EMA copy `module` on the fixed validation item (a batch of one)."""
        raise NotImplementedError

    # --- helpers for subclasses --------------------------------------------------------------------------
    def add_part(self, name: str, module: nn.Module, *, lr: float, ema: bool = True, parallel: bool = True,
                 lr_scales: dict[str, float] | None = None) -> Part:
        """Add a trained part. `lr_scales`: parameters whose names start with a key train at `lr` times its value
        (the first key that matches)."""
        o = self.config.optim
        module = module.to(self.device).train()
        net = parallelize(module, self.config.parallel, device=self.device) if parallel else module
        groups: dict[float, list[nn.Parameter]] = {}
        for key, p in module.named_parameters():
            if p.requires_grad:
                scale = next((v for prefix, v in (lr_scales or {}).items() if key.startswith(prefix)), 1.0)
                groups.setdefault(scale, []).append(p)
        params = [{"params": ps, "lr": lr * scale} for scale, ps in groups.items()]
        optimizer = torch.optim.AdamW(params, lr=lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        total = self.config.run.steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(
            s, warmup=o.warmup_steps, total=total, min_ratio=o.min_lr_ratio))
        averages = {k: p.detach().clone().float() for k, p in module.named_parameters()} if ema else None
        part = Part(name, module, net, optimizer, scheduler, averages)
        self.parts[name] = part
        return part

    def generator(self, step: int, micro: int, tag: str = "") -> torch.Generator:
        """The randomness of one micro-batch (noise, times, dropout): from (seed, step, rank, micro), so a
        resumed run draws exactly what the uninterrupted one did."""
        text = f"{self.config.run.seed}:{step}:{self.info.rank}:{micro}:{tag}"
        seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1
        return torch.Generator(self.device).manual_seed(seed)

    def weighted_mean(self, per_sample: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """Mean over the real samples of the global micro-batch (padding has weight 0); DDP's gradient
        averaging over ranks is accounted for."""
        w = batch["weight"].to(per_sample.device, per_sample.dtype)
        return (per_sample * w).sum() * self.info.world_size / batch["_real"]

    def autocast(self):
        mode = self.config.run.autocast
        if mode == "auto":
            mode = "bf16" if self.device.type == "cuda" else "off"
        if mode == "off":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    # --- the loop ----------------------------------------------------------------------------------------
    def fit(self) -> Path | None:
        """Train to `run.steps` (resuming from the run folder's latest checkpoint); returns the last checkpoint."""
        run = self.config.run
        if run.threads > 0:
            torch.set_num_threads(run.threads)
        self.build()
        data = self.dataset()
        sampler = EpochSampler(num_samples=len(data), batch_size=self.config.data.batch_size, rank=self.info.rank,
                               world_size=self.info.world_size, seed=run.seed)
        self._resume()
        if self.info.is_main:
            logger.info("resolved config:\n%s", self.config.to_json())
            logger.info("%d samples, effective batch %d (%d per rank x %d ranks x %d accumulation), %d steps",
                        len(data), self.config.effective_batch(self.info.world_size), self.config.data.batch_size,
                        self.info.world_size, self.config.optim.accum_steps, run.steps)
        if self.step >= run.steps:
            logger.info("the run is already at step %d of %d: nothing to do", self.step, run.steps)
            return self.last_checkpoint
        previous = self._install_signal_handlers()
        writer = self._writer()
        bar = self._bar()
        batches = self._batches(data, sampler)
        try:
            while self.step < run.steps:
                t0 = time.perf_counter()
                micro = [next(batches) for _ in range(self.config.optim.accum_steps)]
                t_data = time.perf_counter() - t0
                logs = self._train_step(micro)
                self.step += 1
                elapsed = time.perf_counter() - t0
                samples = self.config.effective_batch(self.info.world_size)
                logs.update({"time/samples_per_s": samples / elapsed, "time/data_wait_s": t_data})
                if self.tokens_per_sample:
                    logs["time/tokens_per_s"] = samples * self.tokens_per_sample / elapsed
                self.last_logs = logs
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{logs.get('loss/total', float('nan')):.4g}")
                if self.step % run.log_every == 0 or self.step == run.steps:
                    self._log(logs, writer)
                if run.sample_every > 0 and self.step % run.sample_every == 0:
                    write_samples(self, writer, data)
                stop = all_reduce_max([float(self._stop_requested)], self.device)[0] > 0
                if stop or self.step % run.save_every == 0 or self.step == run.steps:
                    self._save()
                if stop:
                    logger.info("stopped by a signal at step %d; resume with the same command", self.step)
                    break
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return self.last_checkpoint

    def _batches(self, data: Dataset, sampler: EpochSampler) -> Iterator[dict[str, Any]]:
        # One DataLoader per epoch, started at the saved position; workers only read, they draw no randomness.
        pos = self.position
        while True:
            loader = DataLoader(data, batch_sampler=_From(sampler, pos), num_workers=self.config.data.num_workers,
                                collate_fn=collate, generator=torch.Generator().manual_seed(self.config.run.seed))
            epoch = pos.epoch
            for batch in loader:
                batch["_real"] = sampler.real_in_batch(pos)
                pos = sampler.advance(pos)
                self._pending_position = pos
                yield batch
                if pos.epoch != epoch:
                    break

    def _train_step(self, micro: list[dict[str, Any]]) -> dict[str, float]:
        logs: dict[str, float] = {}
        accum = len(micro)
        for name in self.parts_at(self.step):
            part = self.parts[name]
            part.optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for j, batch in enumerate(micro):
                batch = {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                         for k, v in batch.items()}
                micro[j] = batch
                sync = contextlib.nullcontext()
                if j < accum - 1 and hasattr(part.net, "no_sync"):
                    sync = part.net.no_sync()
                with sync:
                    with self.autocast():
                        loss, part_logs = self.loss(name, batch, self.step, j)
                    (loss / accum).backward()
                total += float(loss.detach()) / accum
                for k, v in part_logs.items():
                    logs[k] = logs.get(k, 0.0) + v / accum
            if all_reduce_max([0.0 if math.isfinite(total) else 1.0], self.device)[0] > 0:
                where = self.last_checkpoint or "none yet"
                raise NonFiniteLossError(f"the {name} loss is not finite at step {self.step + 1}; last good "
                                         f"checkpoint: {where} (resume from it, e.g. with a lower optim.lr)")
            norm = torch.nn.utils.clip_grad_norm_(part.module.parameters(), self.config.optim.grad_clip)
            if hasattr(norm, "full_tensor"):
                norm = norm.full_tensor()
            part.optimizer.step()
            part.scheduler.step()
            self._update_ema(part)
            logs[f"grad_norm/{name}"] = float(norm)
            logs[f"lr/{name}"] = part.scheduler.get_last_lr()[0]
            logs[f"loss/{name}"] = total
        logs["loss/total"] = sum(v for k, v in logs.items() if k.startswith("loss/"))
        self.position = self._pending_position
        return logs

    @torch.no_grad()
    def _update_ema(self, part: Part) -> None:
        if part.ema is None:
            return
        decay = min(self.config.optim.ema_decay, (1 + self.step) / (10 + self.step))
        for k, p in part.module.named_parameters():
            part.ema[k].lerp_(p.detach().float(), 1 - decay)

    # --- checkpoints -------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        parts = {}
        for name, part in self.parts.items():
            if is_sharded(part.module):
                opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
                model = get_model_state_dict(part.module, options=opts)
                optim = get_optimizer_state_dict(part.module, part.optimizer, options=opts)
            else:
                model, optim = part.module.state_dict(), part.optimizer.state_dict()
            ema = None if part.ema is None else {k: _full(v).cpu() for k, v in part.ema.items()}
            parts[name] = {"model": model, "optimizer": optim, "scheduler": part.scheduler.state_dict(),
                           "ema": ema, "sharded": is_sharded(part.module)}
        return {"step": self.step, "position": self.position.to_dict(), "parts": parts}

    def _save(self) -> None:
        self.last_checkpoint = self.ckpt.save(self.step, self._state(), config_json=self.config.to_json())
        if self.info.is_main:
            logger.info("saved %s", self.last_checkpoint)

    def _resume(self) -> None:
        path = self.ckpt.latest()
        if path is None:
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        state, exact = self.ckpt.load(path)
        for name, part in self.parts.items():
            saved = state["parts"][name]
            if is_sharded(part.module) or saved["sharded"]:
                opts = StateDictOptions(full_state_dict=True)
                set_model_state_dict(part.module, saved["model"], options=opts)
                set_optimizer_state_dict(part.module, part.optimizer, saved["optimizer"], options=opts)
            else:
                part.module.load_state_dict(saved["model"])
                part.optimizer.load_state_dict(saved["optimizer"])
            part.scheduler.load_state_dict(saved["scheduler"])
            if part.ema is not None and saved["ema"] is not None:
                for k, v in part.ema.items():
                    v.copy_(_like(saved["ema"][k], v))
        self.step = state["step"]
        self.position = DataPosition(**state["position"])
        self.last_checkpoint = path
        if self.info.is_main:
            logger.info("resumed from %s (step %d, epoch %d, sample %d of the epoch)", path, self.step,
                        self.position.epoch, self.position.consumed)
            if not exact:
                logger.info("saved on %s rank(s), resumed on %d: the data position is exact, the run is not "
                            "bit-identical to an uninterrupted one", state.get("world_size"), self.info.world_size)

    # --- signals and logging -----------------------------------------------------------------------------
    def _install_signal_handlers(self) -> dict:
        def request_stop(signum, frame) -> None:
            if self._stop_requested:  # a second signal: leave now
                raise KeyboardInterrupt
            logger.info("signal %d: saving at the end of this step, then stopping", signum)
            self._stop_requested = True

        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, request_stop)
        return previous

    def _writer(self):
        if not self.info.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            logger.warning("tensorboard is not installed: no TensorBoard logs (pip install 'triergon[train]')")
            return None
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    def _bar(self):
        if not self.info.is_main:
            return None
        from tqdm import tqdm

        return tqdm(total=self.config.run.steps, initial=self.step, desc=self.config.recipe, unit="step")

    def _log(self, logs: dict[str, float], writer) -> None:
        keys = sorted(k for k in logs if k.startswith(("loss/", "grad_norm/")))
        means = dict(zip(keys, all_reduce_mean([logs[k] for k in keys], self.device), strict=True))
        logs = {**logs, **means}
        if not self.info.is_main:
            return
        if writer is not None:
            for k, v in logs.items():
                writer.add_scalar(k, v, self.step)
        shown = " ".join(f"{k}={logs[k]:.4g}" for k in sorted(logs) if k.startswith(("loss/", "lr/")))
        logger.info("step %d: %s, %.2f samples/s", self.step, shown, logs["time/samples_per_s"])


class _From:
    """A batch sampler that reads one epoch of `sampler` from `pos` (DataLoader wants a re-iterable object)."""

    def __init__(self, sampler: EpochSampler, pos: DataPosition) -> None:
        self.sampler, self.pos = sampler, pos

    def __iter__(self):
        pos = self.pos
        for refs in self.sampler.batches(self.pos):
            yield refs
            pos = self.sampler.advance(pos)
            if pos.epoch != self.pos.epoch:
                return

    def __len__(self) -> int:
        return math.ceil((self.sampler.num_samples - self.pos.consumed) / self.sampler.global_batch)


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _like(full: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if hasattr(target, "device_mesh"):
        from torch.distributed.tensor import distribute_tensor

        return distribute_tensor(full.to(target.dtype), target.device_mesh, target.placements)
    return full.to(target.dtype)
