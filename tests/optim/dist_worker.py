"""torchrun worker for the distributed AdamW² tests: ``dist_worker.py {ddp,fsdp} OUT_DIR``.

ddp:  each rank seeds its global RNG differently and trains on its own batches under DDP;
      rank 0 checks every parameter is bitwise equal on all ranks after 20 steps.
fsdp: FSDP2 ``fully_shard`` with uneven dim-0 shards; rank 0 repeats the run in-process on an
      unsharded copy and checks the gathered parameters agree within 1e-5.
Writes ``OUT_DIR/ok`` on success (the test asserts on it and on the return code).
"""

from __future__ import annotations

import copy
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from weyl.optim import AdamW2
from weyl.train.distributed import exit_launched_worker


class Net(nn.Module):
    """Odd row counts (uneven shards), a (1, N, d) embedding, zero biases, a conv kernel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(3, 5, kernel_size=3)  # (5, 3, 3) → (5, 9)
        self.pos = nn.Parameter(torch.randn(1, 4, 5) * 0.1)  # dim 0 of size 1: one rank has all
        self.fc1 = nn.Linear(5, 7)
        self.fc2 = nn.Linear(7, 3)
        self.norm = nn.LayerNorm(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).transpose(1, 2) + self.pos  # (B, 4, 5) from length-6 inputs
        return self.fc2(self.norm(torch.tanh(self.fc1(h)))).mean(1)


def data(step: int, rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(4, 3, 6, generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, rank: int, steps: int) -> None:
    for s in range(steps):
        opt.zero_grad()
        model(data(s, rank)).square().mean().backward()
        opt.step()


def main() -> None:
    mode, out = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = Net()
    kw = dict(lr=5e-2, betas=(0.9, 0.95), weight_decay=0.1, tau=0.01, power_iters=2)
    if mode == "ddp":
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = AdamW2(model.parameters(), **kw)
        torch.manual_seed(1234 + rank)  # a rank-dependent global RNG must not matter
        train(ddp, opt, rank, 20)
        for p in model.parameters():
            gathered = [torch.empty_like(p) for _ in range(world)]
            dist.all_gather(gathered, p.detach())
            assert all(torch.equal(gathered[0], x) for x in gathered), "ranks diverged"
    else:
        from torch.distributed.fsdp import fully_shard
        from torch.distributed.tensor import DTensor

        reference = copy.deepcopy(model)
        fully_shard(model)
        assert all(isinstance(p, DTensor) for p in model.parameters())
        opt = AdamW2(model.parameters(), **kw)
        torch.manual_seed(1234 + rank)
        # Same batch on every rank: the averaged gradient equals the single-process one.
        train(model, opt, 0, 15)
        full = [p.full_tensor() for p in model.parameters()]
        report = opt.lr_report()
        if rank == 0:
            ref_opt = AdamW2(reference.parameters(), **kw)
            train(reference, ref_opt, 0, 15)
            for (name, p), f in zip(reference.named_parameters(), full):
                err = (p.detach() - f).abs().max().item()
                assert err <= 1e-5, f"{name}: FSDP vs single process differ by {err}"
            ref_report = ref_opt.lr_report()
            for key, row in ref_report.items():
                assert abs(row["lr_eff"] - report[key]["lr_eff"]) <= 1e-5 * row["lr"], key
            assert sum(r["clipped"] for r in ref_report.values()) > 0
    dist.barrier()
    if rank == 0:
        open(os.path.join(out, "ok"), "w").close()
    dist.destroy_process_group()
    # DDP keeps gloo's threads alive past destroy_process_group: leave without finalizing
    exit_launched_worker(0)


if __name__ == "__main__":
    main()
