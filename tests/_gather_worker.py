"""A rank of test_train_encoders' gathered-negatives test: two linear "towers" embed this rank's share of a fixed
global batch, the encoder loss is taken with negatives gathered from every rank (scaled as the trainer's
`weighted_mean` scales it), and the gradients are averaged over ranks as DDP averages them. Rank 0 saves what it
got for the test to compare with one process holding the whole batch."""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from triergon.train.distributed import gather_with_grad
from triergon.train.trainers.encoders import pair_loss


def global_problem() -> tuple[torch.nn.Linear, torch.nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    with torch.no_grad():  # b nearly a, and y nearly x for rows 0-2: some rows retrieve their pair, not all
        b.weight.copy_(a.weight + 0.1 * torch.randn_like(a.weight))
        b.bias.copy_(a.bias)
    x = torch.randn(6, 8)
    y = torch.cat([x[:3] + 0.05 * torch.randn(3, 8), torch.randn(3, 8)])
    real = torch.tensor([True, True, True, True, True, False])  # the last rank's last row is padding
    return a, b, x, y, real


def loss_and_grads(a, b, x, y, real, *, world: int, n_real: int, gather: bool):
    per_sample, hit = pair_loss(a(x), b(y), torch.tensor(1 / 0.07), real, gather=gather)
    (per_sample.sum() * world / n_real).backward()
    return per_sample.detach(), hit, [p.grad for p in (*a.parameters(), *b.parameters())]


def main(rank: int, world: int, store: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        a, b, x, y, real = global_problem()
        rows = slice(rank * 3, rank * 3 + 3)
        result = {}
        for gather in (True, False):
            a.zero_grad(set_to_none=True)
            b.zero_grad(set_to_none=True)
            per_sample, hit, grads = loss_and_grads(a, b, x[rows], y[rows], real[rows], world=world,
                                                    n_real=int(real.sum()), gather=gather)
            for g in grads:  # DDP's averaging
                dist.all_reduce(g)
                g /= world
            result[gather] = {"per_sample": gather_with_grad(per_sample)[0], "hit": gather_with_grad(hit)[0],
                              "grads": grads}
        if rank == 0:
            torch.save(result, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
