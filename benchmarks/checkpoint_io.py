"""Checkpoint cost under FSDP2 on CPU: how long training is blocked per checkpoint, and rank 0's
peak host memory during a save, for the three ways weyl can write one:

- ``gather``: format 2 (weyl before DCP): full model/optimizer state dicts gathered onto rank 0
  (``full_state_dict=True, cpu_offload=True``), rank 0 writes them into ``state.pt``;
- ``dcp``: format 3, every rank writes its own shards with ``torch.distributed.checkpoint``;
- ``async``: format 3 with ``trainer.checkpoint_async``: blocked only while DCP stages the shards
  into CPU memory; the time until the background write is committed is printed too.

Two gloo ranks (spawned here), a GPT of ~42M parameters (8 layers, d=512, vocab 32000) under
FSDP2 ``fully_shard`` with AdamW² (moments + power-iteration vectors), one real step before
saving so the optimizer state is full-sized. Each mode saves ``--repeats`` times into its own
checkpoint dir; the median is printed. Peak memory: rank 0's resident set sampled every 2 ms
during a save, minus its size just before.

    PYTHONPATH=src .venv/bin/python benchmarks/checkpoint_io.py [--out DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from weyl.models import build_model
from weyl.models.model_config import GPTModelConfig
from weyl.optim import build_optimizer
from weyl.optim.optim_config import OptimConfig
from weyl.train.checkpoint import CheckpointManager, model_optimizer_state
from weyl.train.distributed import DistContext
from weyl.train.model_wrapping import wrap_model
from weyl.train.sharded_state import sharded_state_dict

MODES = ("gather", "dcp", "async")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Highest resident set size seen by a 2 ms sampling thread between start and stop."""

    def __enter__(self) -> PeakRSS:
        self.base = self.peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())


def _save(mode: str, mgr: CheckpointManager, model, optimizer, step: int) -> None:
    shared = {"trainer": {"step": step}}
    own = {"data": {"samples": step}}
    if mode == "gather":
        model_sd, optim_sd = model_optimizer_state(model, optimizer)
        mgr.save(step, {**shared, "model": model_sd, "optimizer": optim_sd}, own, None)
    else:
        mgr.save(step, shared, own, sharded_state_dict(model, optimizer))


def _worker(rank: int, world: int, port: int, out: str, repeats: int, cfg: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world)
    torch.manual_seed(0)
    model = wrap_model(build_model(GPTModelConfig(**cfg)), ctx, "fsdp")
    optimizer = build_optimizer(model, OptimConfig(name="adamw2", lr=1e-4))
    x = torch.randint(0, cfg["vocab_size"], (2, 64))
    torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    optimizer.step()
    params = sum(p.numel() for p in build_model(GPTModelConfig(**cfg)).parameters())
    results = {}
    for mode in MODES:
        mgr = CheckpointManager(Path(out) / mode, ctx, keep_last=1, async_save=mode == "async")
        blocked, total, peaks = [], [], []
        for i in range(repeats):
            dist.barrier()
            with PeakRSS() as mem:
                t0 = time.perf_counter()
                _save(mode, mgr, model, optimizer, i + 1)
                t1 = time.perf_counter()
                mgr.wait()
                t2 = time.perf_counter()
            blocked.append(t1 - t0)
            total.append(t2 - t0)
            peaks.append(mem.peak - mem.base)
        size = sum(f.stat().st_size for f in (Path(out) / mode).rglob("*") if f.is_file())
        results[mode] = (
            statistics.median(blocked),
            statistics.median(total),
            max(peaks),
            size,
        )
    if rank == 0:
        print(
            f"GPT {params / 1e6:.1f}M params, FSDP2 x {world} gloo ranks, AdamW², "
            f"median of {repeats} saves, {torch.get_num_threads()} thread(s) per rank"
        )
        print(
            f"{'mode':<8} {'blocked s':>10} {'committed s':>12} {'rank0 peak MiB':>15} {'MiB on disk':>12}"
        )
        for mode, (b, t, peak, size) in results.items():
            print(f"{mode:<8} {b:>10.3f} {t:>12.3f} {peak / 2**20:>15.1f} {size / 2**20:>12.1f}")
    dist.destroy_process_group()


def main() -> None:
    """Parse the options, spawn the ranks, print the table (rank 0)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="checkpoint dir (default: a temp dir)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--embd", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32000)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="weyl-ckpt-bench-")
    cfg = dict(
        n_layer=args.layers,
        n_head=8,
        n_embd=args.embd,
        block_size=256,
        vocab_size=args.vocab,
        dropout=0.0,
        bias=False,
    )
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        mp.spawn(_worker, args=(args.world, port, out, args.repeats, cfg), nprocs=args.world)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
