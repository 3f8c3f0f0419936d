"""Trainer overhead vs a plain PyTorch loop, and AdamW² vs AdamW, on the same tiny GPT.

    .venv/bin/python benchmarks/train_throughput.py [--steps 200] [--rounds 3] [--device cpu]

Three runs per round, interleaved so a noisy shared machine affects them alike:
1. ``plain``: model, ``torch.optim.AdamW`` (foreach), a nanoGPT-style loop (``loss.item()``
   only every ``log_every`` steps);
2. ``trainer-adamw``: ``weyl.train.run_training`` with ``optim.name=adamw``;
3. ``trainer-adamw2``: the same with AdamW² (τ = 0.01).
Trainer runs keep their defaults that matter for speed: JSONL logging every 10 steps, the
crash guard on every step, diagnostics at the default interval (every 100 steps, plus step 0
and the last step), one checkpoint at the end; eval is off (the plain loop has none).
Both sides draw batches from the same in-memory random-token stream.

Throughput is tokens over the wall time of the training loop (trainer: from its first to its
last log line, so model building and the step-0 diagnostics are excluded on both sides;
diagnostics at step 100 are included). Prints the median over rounds, the ratio
trainer/plain (target ≥ 0.97) and the AdamW² step overhead (target ≤ 3 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from weyl.config.schema import (
    DiagnosticsConfig,
    GPTModelConfig,
    LoggerConfig,
    OptimConfig,
    ScheduleConfig,
    TextDataConfig,
    TrainConfig,
    TrainerConfig,
)
from weyl.data.bundle import DataBundle
from weyl.diagnostics import Diagnostics
from weyl.models import build_model
from weyl.optim import build_optimizer
from weyl.train import Factories, run_training

MODEL = GPTModelConfig(
    n_layer=4,
    n_head=4,
    n_embd=128,
    block_size=64,
    vocab_size=256,
    dropout=0.0,
    bias=False,
    init="nanogpt",
)
BATCH = 16
LOG_EVERY = 10


class RandomTokens:
    """Infinite random token blocks (resumable by call count)."""

    def __init__(self, batch: int, seed: int = 0) -> None:
        self.batch, self.seed, self.calls = batch, seed, 0

    def __iter__(self) -> RandomTokens:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        rows = torch.randint(0, MODEL.vocab_size, (self.batch, MODEL.block_size + 1), generator=g)
        return rows[:, :-1], rows[:, 1:]

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]


def build_random_data(cfg, *, batch_size, rank=0, world_size=1, seed=0, probe_batch_size=4):
    """A DataBundle over :class:`RandomTokens`."""
    return DataBundle(
        task="lm",
        train=RandomTokens(batch_size, seed + rank),
        make_val=lambda: iter(()),
        probe=next(RandomTokens(probe_batch_size, 99)),
        vocab_size=MODEL.vocab_size,
        num_classes=None,
        mix=None,
        label_smoothing=0.0,
        samples_per_epoch=10**6,
    )


def plain_loop(steps: int, device: str) -> tuple[float, float]:
    """nanoGPT-style loop: (wall tokens/s over steps 1..steps, CPU-time tokens/s end to end)."""
    cpu0 = time.process_time()
    torch.manual_seed(0)
    model = build_model(MODEL).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=True
    )
    data = RandomTokens(BATCH)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else None
    t0 = None
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()
        x, y = (t.to(device) for t in next(data))
        if autocast is not None:
            with autocast:
                logits = model(x)
        else:
            logits = model(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % LOG_EVERY == 0:
            loss.item()
    if device == "cuda":
        torch.cuda.synchronize()
    wall = steps * BATCH * MODEL.block_size / (time.perf_counter() - t0)
    return wall, (steps + 1) * BATCH * MODEL.block_size / (time.process_time() - cpu0)


def trainer_run(steps: int, device: str, optim: str, workdir: Path) -> tuple[float, float]:
    """run_training on the same model: (wall tokens/s between its first and last log lines,
    CPU-time tokens/s of the whole call, model building and step-0 diagnostics included)."""
    run_dir = workdir / f"{optim}-{time.monotonic_ns()}"
    cfg = TrainConfig(
        run_dir=str(run_dir),
        seed=0,
        model=MODEL,
        data=TextDataConfig(name="random", block_size=MODEL.block_size),
        optim=OptimConfig(name=optim, lr=1e-3, betas=[0.9, 0.95], weight_decay=0.1, tau=0.01),
        schedule=ScheduleConfig(name="cosine", warmup_steps=0),
        trainer=TrainerConfig(
            max_steps=steps,
            global_batch_size=BATCH,
            log_every=LOG_EVERY,
            eval_every=10**9,
            ckpt_every=10**9,
            device=device,
            resume="never",
            spike_window=50,
        ),
        logger=LoggerConfig(progress=False),
        diagnostics=DiagnosticsConfig(),  # defaults: enabled, every 100, 15 terms on
    )
    factories = Factories(build_model, build_random_data, build_optimizer, Diagnostics)
    cpu0 = time.process_time()
    run_training(cfg, factories=factories)
    cpu_tps = (steps + 1) * BATCH * MODEL.block_size / (time.process_time() - cpu0)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in lines if "elapsed" in r]
    first, last = timed[0], timed[-1]
    tokens = (last["step"] - first["step"]) * BATCH * MODEL.block_size
    return tokens / (last["elapsed"] - first["elapsed"]), cpu_tps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = ("plain", "trainer-adamw", "trainer-adamw2")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            runs = {
                "plain": lambda: plain_loop(args.steps, args.device),
                "trainer-adamw": lambda: trainer_run(args.steps, args.device, "adamw", Path(tmp)),
                "trainer-adamw2": lambda: trainer_run(args.steps, args.device, "adamw2", Path(tmp)),
            }
            for name in names if r % 2 == 0 else reversed(names):  # alternate the order
                w, c = runs[name]()
                wall[name].append(w)
                cpu[name].append(c)
            print(
                f"round {r}: "
                + ", ".join(
                    f"{k} {wall[k][-1]:,.0f} wall / {cpu[k][-1]:,.0f} cpu tok/s" for k in names
                )
            )
    n_params = sum(p.numel() for p in build_model(MODEL).parameters())
    print(
        f"\nGPT {MODEL.n_layer}x{MODEL.n_embd}, {n_params:,} params, batch {BATCH}x{MODEL.block_size}, "
        f"{args.steps} steps, device {args.device}, {args.threads} thread(s), median of {args.rounds}"
    )
    for label, res in (("wall-clock", wall), ("CPU-time (robust to a shared machine)", cpu)):
        med = {k: statistics.median(v) for k, v in res.items()}
        print(f"{label}:")
        for k, v in med.items():
            print(f"  {k:<15} {v:>10,.0f} tokens/s")
        print(
            f"  trainer(adamw)/plain ratio:   {med['trainer-adamw'] / med['plain']:.3f}  "
            "(target >= 0.97)"
        )
        print(
            f"  AdamW² step-time overhead:    {med['trainer-adamw'] / med['trainer-adamw2'] - 1:+.1%}  "
            "(target <= 3%)"
        )


if __name__ == "__main__":
    main()
