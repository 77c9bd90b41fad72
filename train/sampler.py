"""Which sample each rank reads at each step: no repeats, no drops, resumable at the exact sample.

One global order per epoch (a permutation seeded by (seed, epoch)) is read in global micro-batches of
`batch_size * world_size`; rank r takes the r-th slice of each. The last global batch of an epoch is usually
short: its empty places are filled with padding entries (weight 0) so that every rank runs the same number of
steps, and losses count only the real samples (`SampleRef.weight`), so nothing is seen twice and nothing is
left out. The position is (epoch, samples consumed in it), independent of the world size, so a run saved on
N ranks resumes on M ranks at the same sample. Per-sample randomness (crop offsets) comes from
`sample_seed(seed, epoch, index)`, never from a worker's RNG.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SampleRef:
    """One place of a micro-batch: the data set index, the epoch it is read in, and 1.0 (real) or 0.0 (padding)."""

    index: int
    epoch: int
    weight: float


@dataclass(frozen=True)
class DataPosition:
    epoch: int = 0
    consumed: int = 0  # samples of this epoch already read (over all ranks)

    def to_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's randomness, the same on any rank, worker or resume."""
    digest = hashlib.blake2b(f"{seed}:{epoch}:{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def epoch_order(num_samples: int, *, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    if not shuffle:
        return list(range(num_samples))
    g = torch.Generator().manual_seed(sample_seed(seed, epoch, -1))
    return torch.randperm(num_samples, generator=g).tolist()


class EpochSampler:
    """Yields this rank's micro-batches (lists of `SampleRef`) from a position onwards, epoch after epoch.

    Args:
        num_samples: size of the data set.
        batch_size: samples per rank per micro-batch.
        rank, world_size: this rank and the number of ranks.
        seed: seeds the epoch orders.
        shuffle: permute each epoch (else the data set's order).
    """

    def __init__(self, *, num_samples: int, batch_size: int, rank: int, world_size: int, seed: int,
                 shuffle: bool = True) -> None:
        if num_samples < 1:
            raise ValueError("the data set is empty: check the manifest's split and the data folder")
        self.num_samples, self.batch_size = num_samples, batch_size
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return math.ceil(self.num_samples / self.global_batch)

    def advance(self, pos: DataPosition) -> DataPosition:
        """The position after one more global micro-batch."""
        consumed = min(self.num_samples, pos.consumed + self.global_batch)
        return DataPosition(pos.epoch + 1, 0) if consumed >= self.num_samples else DataPosition(pos.epoch, consumed)

    def real_in_batch(self, pos: DataPosition) -> int:
        """Real (non-padding) samples in the global micro-batch read at `pos`."""
        return min(self.global_batch, self.num_samples - pos.consumed)

    def batches(self, start: DataPosition) -> Iterator[list[SampleRef]]:
        pos = start
        order = epoch_order(self.num_samples, seed=self.seed, epoch=pos.epoch, shuffle=self.shuffle)
        while True:
            lo = pos.consumed + self.rank * self.batch_size
            refs = []
            for i in range(lo, lo + self.batch_size):
                real = i < self.num_samples
                # padding repeats a real sample's data with weight 0, so shapes stay those of a full batch
                refs.append(SampleRef(order[i if real else i % self.num_samples], pos.epoch, 1.0 if real else 0.0))
            yield refs
            nxt = self.advance(pos)
            if nxt.epoch != pos.epoch:
                order = epoch_order(self.num_samples, seed=self.seed, epoch=nxt.epoch, shuffle=self.shuffle)
            pos = nxt

    def __iter__(self) -> Iterator[list[SampleRef]]:
        return self.batches(DataPosition())
