"""The epoch sampler: no sample repeated or dropped within an epoch over ranks and DataLoader workers, exact
mid-epoch resume (also on another number of ranks), per-sample randomness from (seed, epoch, index)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from triergon.train.sampler import DataPosition, EpochSampler, sample_seed


class _Echo(Dataset):
    def __len__(self) -> int:
        return 1000

    def __getitem__(self, ref):
        # what a worker reads, and a draw from the per-sample seed (must not depend on the worker)
        g = torch.Generator().manual_seed(sample_seed(7, ref.epoch, ref.index))
        return {"index": ref.index, "weight": ref.weight, "draw": torch.rand(1, generator=g)}


def _epoch(num: int, batch: int, world: int, workers: int, start: DataPosition | None = None) -> list:
    """Per step, the (index, weight, draw) each rank reads, until the epoch of `start` ends."""
    start = start or DataPosition()
    steps, loaders = [], []
    for rank in range(world):
        sampler = EpochSampler(num_samples=num, batch_size=batch, rank=rank, world_size=world, seed=3)
        n = -(-(num - start.consumed) // sampler.global_batch)
        batches = iter(sampler.batches(start))
        refs = [next(batches) for _ in range(n)]
        loaders.append(list(DataLoader(_Echo(), batch_sampler=refs, num_workers=workers)))
    for step in zip(*loaders, strict=True):
        steps.append([(int(i), float(w), float(d)) for b in step
                      for i, w, d in zip(b["index"], b["weight"], b["draw"], strict=True)])
    return steps


@pytest.mark.parametrize(("num", "batch", "world", "workers"), [(10, 3, 2, 2), (13, 2, 3, 0), (7, 4, 1, 2)])
def test_every_sample_once_per_epoch_over_ranks_and_workers(num, batch, world, workers):
    real = [i for step in _epoch(num, batch, world, workers) for i, w, _ in step if w == 1.0]
    assert sorted(real) == list(range(num))


def test_positions_and_padding():
    s = EpochSampler(num_samples=10, batch_size=3, rank=0, world_size=2, seed=0)
    pos, real = DataPosition(), []
    for _ in range(2):
        real.append(s.real_in_batch(pos))
        pos = s.advance(pos)
    assert real == [6, 4] and pos == DataPosition(epoch=1, consumed=0)


def test_resume_mid_epoch_on_another_world_size_reads_the_rest_exactly():
    num = 11
    two = EpochSampler(num_samples=num, batch_size=2, rank=0, world_size=2, seed=3)
    pos = two.advance(DataPosition())  # 4 samples read on 2 ranks
    first = [i for step in _epoch(num, 2, 2, 0)[:1] for i, w, _ in step if w]
    rest = [i for step in _epoch(num, 3, 1, 2, start=pos) for i, w, _ in step if w]
    assert sorted(first + rest) == list(range(num)) and len(first) == 4


def test_per_sample_randomness_is_the_same_for_any_layout():
    a = {i: d for step in _epoch(9, 2, 2, 2) for i, w, d in step if w}
    b = {i: d for step in _epoch(9, 5, 1, 0) for i, w, d in step if w}
    assert a == b


def test_epochs_differ_and_repeat_with_the_seed():
    s = EpochSampler(num_samples=50, batch_size=50, rank=0, world_size=1, seed=1)
    it = s.batches(DataPosition())
    e0, e1 = [r.index for r in next(it)], [r.index for r in next(it)]
    again = [r.index for r in next(EpochSampler(num_samples=50, batch_size=50, rank=0, world_size=1,
                                                seed=1).batches(DataPosition()))]
    assert e0 != e1 and e0 == again and sorted(e1) == list(range(50))
