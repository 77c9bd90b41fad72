"""The training entry point: `torchrun ... -m triergon.train --recipe NAME --run-dir DIR [--steps N] [--set k=v]`
(and `triergon train ...` in one process).

A run folder holding a checkpoint is resumed automatically; `--steps` is the run's total step count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from .config import TrainConfig, apply_overrides
from .recipes import RECIPES, get_recipe

logger = logging.getLogger(__name__)

EXIT_NONFINITE = 3


def add_train_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument("--recipe", required=required, choices=list(RECIPES), help="training recipe (see README)")
    p.add_argument("--run-dir", required=required, help="run folder: checkpoints, TensorBoard logs; resumed if "
                   "it holds a checkpoint")
    p.add_argument("--steps", type=int, help="total optimiser steps of the run (not steps to add)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-4 --set data.path=cache/ (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def build_parser(prog: str = "python -m triergon.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train a Tri-Ergon VAE, DiT or LUFS predictor.")
    add_train_arguments(p)
    return p


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    config = apply_overrides(get_recipe(args.recipe), args.overrides)
    if args.steps is not None:
        if args.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {args.steps}")
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=args.steps))
    if not config.data.path and not args.print_config:
        raise ValueError("no training data: pass --set data.path=FOLDER (shards for the VAE, a cache for the DiT "
                         "and T_LUFS; see `triergon data`)")
    return config


def run_training(argv: list[str] | None = None, *, args: argparse.Namespace | None = None) -> int:
    """Train from command-line arguments (`argv`, or parsed `args`); returns an exit code (0: done or stopped
    by a signal, 3: non-finite loss)."""
    from .distributed import init_distributed, shutdown_distributed
    from .trainer import NonFiniteLossError
    from .trainers import trainer_class

    args = args if args is not None else build_parser().parse_args(argv)
    config = resolve_config(args)
    if args.print_config:
        print(config.to_json())  # noqa: T201 - command output
        return 0
    info = init_distributed(device=config.run.device)
    if not info.is_main:
        logging.getLogger("triergon").setLevel(logging.WARNING)
    code = 0
    try:
        trainer = trainer_class(config.trainer)(config, info, args.run_dir)
        last = trainer.fit()
        if info.is_main:
            result = {"step": trainer.step, "checkpoint": str(last) if last else None,
                      "world_size": info.world_size}
            Path(args.run_dir, "result.json").write_text(json.dumps(result))
    except NonFiniteLossError as e:
        logger.error("%s", e)
        code = EXIT_NONFINITE
    finally:
        shutdown_distributed()
    return code


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    rank = os.environ.get("RANK")
    prefix = f"[triergon rank {rank}]" if rank is not None else "[triergon]"
    handler.setFormatter(logging.Formatter(f"{prefix} %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main() -> None:
    _configure_logging()
    try:
        code = run_training()
    except (ValueError, KeyError, FileNotFoundError) as e:
        logger.error("%s", e)
        code = 2
    sys.stdout.flush()
    sys.stderr.flush()
    # os._exit after destroy_process_group: a gloo rank can otherwise abort at interpreter exit
    os._exit(code)
