"""Trainer overhead vs a plain PyTorch loop, and AdamW² vs AdamW, on the same tiny GPT.

    .venv/bin/python benchmarks/train_throughput.py [--steps 200] [--rounds 5] [--threads 1]

Three runs per round, interleaved (order alternating) so a noisy shared machine affects them
alike:
1. ``plain``: a nanoGPT-style loop: same model, the same decay/no-decay param groups,
   ``torch.optim.AdamW`` (fused on CUDA, foreach on CPU), cosine LR set per group each step,
   ``zero_grad(set_to_none=True)``, ``loss.item()`` only every ``log_every`` steps, no grad clip
   (the trainer's default ``grad_clip=0``);
2. ``trainer-adamw``: ``weyl.train.run_training`` with ``optim.name=adamw``;
3. ``trainer-adamw2``: the same with AdamW² (τ = 0.01).
Trainer runs keep everything a real run pays per step: the crash guard's check of every update
(on the device with a fused AdamW, else one host sync), grad norm, LR schedule, JSONL logging
every 10 steps, and diagnostics at the default interval (every 100 steps). Eval is off (the
plain loop has none). benchmarks/gpu_suite.py calls these loops at GPT-2 S size on a GPU,
eager and compiled (``model``, ``compile``, ``diagnostics`` arguments).

What is timed (the same on both sides): both loops draw their batches from the same in-memory
random-token stream, which stamps wall (``perf_counter``) and CPU (``process_time``) time at
each draw. The window runs from the draw of batch 1 to the draw of batch ``steps + 1``: exactly
``steps`` updates (update 2 to ``steps + 1``) and everything between them, so process start,
model/data/optimizer build, the first update's warm-up, the step-0 diagnostics and the final
checkpoint are outside it, while the diagnostics after updates 100, 200, ... are inside.
Prints medians over rounds, the trainer/plain ratio (target ≥ 0.97) and the AdamW² step
overhead (target ≤ 3 %), also as medians of per-round ratios; a third estimate (median
update interval x steps + the measured extra time of the diagnostics intervals) is steadier
when other processes load the machine in bursts.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from weyl.config import TrainConfig
from weyl.data.bundle import DataBundle
from weyl.data.data_config import TextDataConfig
from weyl.diagnostics import Diagnostics
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.models import build_model
from weyl.models.model_config import GPTModelConfig
from weyl.optim import build_optimizer, param_groups
from weyl.optim.optim_config import OptimConfig
from weyl.train import Factories, run_training
from weyl.train.train_config import LoggerConfig, ScheduleConfig, TrainerConfig

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
LR, BETAS, WEIGHT_DECAY = 1e-3, (0.9, 0.95), 0.1
DIAG_EVERY = DiagnosticsConfig().every


class StampedTokens:
    """Infinite random token blocks (resumable by call count); stamps the time of each draw."""

    def __init__(
        self,
        batch: int,
        seed: int = 0,
        vocab: int = MODEL.vocab_size,
        block: int = MODEL.block_size,
        diag_every: int = DIAG_EVERY,
    ) -> None:
        self.batch, self.seed, self.calls = batch, seed, 0
        self.vocab, self.block, self.diag_every = vocab, block, diag_every
        self.stamps: list[tuple[float, float]] = []  # (wall, CPU) at each draw

    def __iter__(self) -> StampedTokens:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.stamps.append((time.perf_counter(), time.process_time()))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        rows = torch.randint(0, self.vocab, (self.batch, self.block + 1), generator=g)
        return rows[:, :-1], rows[:, 1:]

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state["calls"]

    def window_rates(self, steps: int) -> tuple[float, float, float]:
        """(wall, CPU, robust wall) tokens/s over the updates that drew batches 1 .. ``steps``.

        Robust wall: ``steps`` x the median update interval, plus what the intervals holding
        diagnostics took beyond that median (bursts of load from other processes drop out).
        """
        (w0, c0), (w1, c1) = self.stamps[1], self.stamps[steps + 1]
        tokens = steps * self.batch * self.block
        # interval k: from drawing batch k to batch k + 1, i.e. update k + 1 and what follows
        dt = [self.stamps[k + 1][0] - self.stamps[k][0] for k in range(1, steps + 1)]
        median = statistics.median(dt)
        every = self.diag_every
        diag = sum(dt[k - 1] - median for k in range(every, steps + 1, every)) if every else 0.0
        return tokens / (w1 - w0), tokens / (c1 - c0), tokens / (steps * median + diag)


def plain_loop(
    steps: int,
    device: str,
    batch: int,
    model_cfg: GPTModelConfig = MODEL,
    compile: bool = False,
) -> tuple[float, float, float]:
    """The nanoGPT-style loop over ``steps + 2`` updates; tokens/s in the window."""
    torch.manual_seed(0)
    model = build_model(model_cfg).to(device)
    kernel = {"fused": True} if device.startswith("cuda") else {"foreach": True}
    opt = torch.optim.AdamW(param_groups(model, WEIGHT_DECAY), lr=LR, betas=BETAS, **kernel)
    if compile:
        model = torch.compile(model)
    data = StampedTokens(
        batch, vocab=model_cfg.vocab_size, block=model_cfg.block_size, diag_every=0
    )
    total = steps + 2
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else None
    for step in range(total):
        lr = 0.5 * LR * (1 + math.cos(math.pi * step / total))
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = (t.to(device, non_blocking=True) for t in next(data))
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
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return data.window_rates(steps)


def trainer_run(
    steps: int,
    device: str,
    optim: str,
    workdir: Path,
    batch: int,
    model_cfg: GPTModelConfig = MODEL,
    compile: bool = False,
    diagnostics: bool = True,
) -> tuple[float, float, float]:
    """``run_training`` over ``steps + 2`` updates; tokens/s in the window (see window_rates)."""
    streams: list[StampedTokens] = []
    vocab, block = model_cfg.vocab_size, model_cfg.block_size
    diag_every = DIAG_EVERY if diagnostics else 0

    def build_data(cfg, *, batch_size, rank=0, world_size=1, seed=0, probe_batch_size=4):
        streams.append(StampedTokens(batch_size, seed + rank, vocab, block, diag_every))
        return DataBundle(
            task="lm",
            train=streams[-1],
            make_val=lambda: iter(()),
            probe=next(iter(StampedTokens(probe_batch_size, 99, vocab, block))),
            vocab_size=vocab,
            num_classes=None,
            mix=None,
            label_smoothing=0.0,
            samples_per_epoch=10**6,
        )

    cfg = TrainConfig(
        run_dir=str(workdir / f"{optim}-{time.monotonic_ns()}"),
        seed=0,
        model=model_cfg,
        data=TextDataConfig(name="random", block_size=block),
        optim=OptimConfig(
            name=optim, lr=LR, betas=list(BETAS), weight_decay=WEIGHT_DECAY, tau=0.01
        ),
        schedule=ScheduleConfig(name="cosine", warmup_steps=0),
        trainer=TrainerConfig(
            max_steps=steps + 2,
            global_batch_size=batch,
            log_every=LOG_EVERY,
            eval_every=10**9,
            ckpt_every=10**9,
            device=device,
            resume="never",
            compile=compile,
        ),
        logger=LoggerConfig(progress=False),
        # defaults: enabled, every 100, 15 terms on
        diagnostics=DiagnosticsConfig(enabled=diagnostics),
    )
    factories = Factories(build_model, build_data, build_optimizer, Diagnostics)
    summary = run_training(cfg, factories=factories)
    if summary["state"] != "finished":
        raise RuntimeError(f"benchmark run ended {summary['state']}: {summary['reason']}")
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return streams[0].window_rates(steps)


def _report(label: str, res: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in res.items()}
    ratio = [t / p for t, p in zip(res["trainer-adamw"], res["plain"], strict=True)]
    over = [a / b - 1 for a, b in zip(res["trainer-adamw"], res["trainer-adamw2"], strict=True)]
    print(f"{label}:")
    for k, v in med.items():
        print(
            f"  {k:<15} {v:>10,.0f} tokens/s   (rounds: {', '.join(f'{x:,.0f}' for x in res[k])})"
        )
    print(
        f"  trainer(adamw)/plain:  {med['trainer-adamw'] / med['plain']:.3f} of medians, "
        f"{statistics.median(ratio):.3f} median per-round  (target >= 0.97)"
    )
    print(
        f"  AdamW² step overhead:  {med['trainer-adamw'] / med['trainer-adamw2'] - 1:+.1%} of "
        f"medians, {statistics.median(over):+.1%} median per-round  (target <= 3%)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2 * DIAG_EVERY, help="timed updates per run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=BATCH, help="sequences per update")
    args = ap.parse_args()
    if args.steps <= 0 or args.steps % DIAG_EVERY:
        raise ValueError(
            f"--steps={args.steps}: use a positive multiple of {DIAG_EVERY} so the window "
            "holds diagnostics at their default rate"
        )
    torch.set_num_threads(args.threads)
    names = ("plain", "trainer-adamw", "trainer-adamw2")
    wall: dict[str, list[float]] = {k: [] for k in names}
    cpu: dict[str, list[float]] = {k: [] for k in names}
    robust: dict[str, list[float]] = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "plain": lambda: plain_loop(args.steps, args.device, args.batch),
            "trainer-adamw": lambda: trainer_run(
                args.steps, args.device, "adamw", Path(tmp), args.batch
            ),
            "trainer-adamw2": lambda: trainer_run(
                args.steps, args.device, "adamw2", Path(tmp), args.batch
            ),
        }
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else reversed(names):
                w, c, m = runs[name]()
                wall[name].append(w)
                cpu[name].append(c)
                robust[name].append(m)
            print(
                f"round {r}: "
                + ", ".join(f"{k} {wall[k][-1]:,.0f} wall / {cpu[k][-1]:,.0f} cpu" for k in names),
                flush=True,
            )
    n_params = sum(p.numel() for p in build_model(MODEL).parameters())
    print(
        f"\nGPT {MODEL.n_layer}x{MODEL.n_embd}, {n_params:,} params, batch {args.batch}x"
        f"{MODEL.block_size}, device {args.device}, {args.threads} thread(s), "
        f"median of {args.rounds} rounds"
    )
    print(
        f"timed: {args.steps} updates per run (updates 2..{args.steps + 1}, from the draw of "
        f"batch 1 to that of batch {args.steps + 1}), including {args.steps // DIAG_EVERY} "
        f"diagnostics pass(es) (every {DIAG_EVERY}) and JSONL logging every {LOG_EVERY}; "
        "excluded: build, first update, step-0 diagnostics, final checkpoint"
    )
    _report("wall-clock tokens/s", wall)
    _report("CPU-time tokens/s (process_time)", cpu)
    _report("median-update wall tokens/s (+ measured diagnostics cost)", robust)


if __name__ == "__main__":
    main()
