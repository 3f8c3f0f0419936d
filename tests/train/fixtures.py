"""Tiny runs for the trainer tests: a 2-layer d=32 GPT on a synthetic token stream.

The synthetic stream is built so that sample ``i`` of the *global* batch sequence is the same
whatever the world size and micro batch: rank ``r``'s ``c``-th batch of size ``B`` holds samples
``(c·W + r)·B … +B``. A single process with 2 micro batches of 4 therefore sees exactly what 2
DDP ranks with 4 each see, which is what the DDP-equals-single-process test needs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from weyl.config import TrainConfig
from weyl.data.bundle import DataBundle
from weyl.data.data_config import TextDataConfig
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.models import build_model
from weyl.models.model_config import GPTModelConfig
from weyl.optim.optim_config import OptimConfig
from weyl.train.runner import Factories
from weyl.train.train_config import LoggerConfig, ScheduleConfig, TrainerConfig

VOCAB = 16
BLOCK = 16
REPO = Path(__file__).resolve().parents[2]


def _corpus(length: int = 4096, seed: int = 1234) -> Tensor:
    # A noisy "count up" sequence: learnable (next = prev + 1 mostly) but not trivial.
    g = torch.Generator().manual_seed(seed)
    steps = torch.where(
        torch.rand(length, generator=g) < 0.8, 1, torch.randint(0, VOCAB, (length,), generator=g)
    )
    return torch.cumsum(steps, 0) % VOCAB


class SyntheticTokenStream:
    """Deterministic, resumable LM batches laid out by global sample index (see module doc)."""

    def __init__(self, batch_size: int, rank: int, world_size: int, offset: int = 0) -> None:
        self.corpus = _corpus()
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.calls = 0
        self.offset = offset

    def __iter__(self) -> SyntheticTokenStream:
        return self

    def __next__(self) -> tuple[Tensor, Tensor]:
        first = (self.calls * self.world_size + self.rank) * self.batch_size
        idx = torch.arange(first, first + self.batch_size) + self.offset
        log_dir = os.environ.get("WEYL_TEST_SAMPLE_LOG")
        if log_dir and self.offset == 0:  # the training stream: record which samples it served
            with open(Path(log_dir) / f"samples.rank{self.rank}.txt", "a") as f:
                f.write(" ".join(map(str, idx.tolist())) + "\n")
        starts = (idx * 7919) % (self.corpus.numel() - BLOCK - 1)
        rows = torch.stack([self.corpus[s : s + BLOCK + 1] for s in starts.tolist()])
        self.calls += 1
        return rows[:, :-1].clone(), rows[:, 1:].clone()

    def state_dict(self) -> dict[str, Any]:
        # The global sample counter too, so a resume at another world size continues exactly.
        return {"calls": self.calls, "samples": self.calls * self.world_size * self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "samples" not in state:
            self.calls = int(state["calls"])
            return
        per_call = self.world_size * self.batch_size
        if int(state["samples"]) % per_call:
            raise ValueError(f"{state['samples']} samples is not a multiple of {per_call}")
        self.calls = int(state["samples"]) // per_call


def build_synthetic_data(
    cfg: Any,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    probe_batch_size: int = 4,
) -> DataBundle:
    """A DataBundle over the synthetic stream (val: a disjoint slice of sample indices)."""

    def make_val():
        val = SyntheticTokenStream(batch_size, rank, world_size, offset=10_000_000)
        return (next(val) for _ in range(2))

    probe = next(SyntheticTokenStream(probe_batch_size, 0, 1, offset=20_000_000))
    return DataBundle(
        task="lm",
        train=SyntheticTokenStream(batch_size, rank, world_size),
        make_val=make_val,
        probe=probe,
        vocab_size=VOCAB,
        num_classes=None,
        mix=None,
        label_smoothing=0.0,
        samples_per_epoch=512,
    )


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """weyl's optimizer factory (AdamW² by default)."""
    from weyl.optim import build_optimizer as real

    return real(model, cfg)


def synthetic_factories(diagnostics: bool = False) -> Factories:
    """Real GPT + real optimizer factory + synthetic data (+ real diagnostics if asked)."""
    diag = None
    if diagnostics:
        from weyl.diagnostics import Diagnostics

        diag = Diagnostics
    return Factories(build_model, build_synthetic_data, build_optimizer, diag)


def tiny_config(run_dir: str | Path, **trainer: Any) -> TrainConfig:
    """A 2-layer d=32 GPT config for a few dozen CPU steps; ``trainer`` overrides TrainerConfig
    (and ``optim``, ``diagnostics``, ``schedule``, ``sigma_reparam`` the other parts)."""
    optim = trainer.pop("optim", None) or OptimConfig(name="adamw2", lr=3e-3, tau=0.02)
    diagnostics = trainer.pop("diagnostics", None) or DiagnosticsConfig(enabled=False)
    schedule = trainer.pop("schedule", None) or ScheduleConfig(name="cosine", warmup_steps=0)
    sigma_reparam = trainer.pop("sigma_reparam", False)
    base = dict(
        max_steps=12,
        global_batch_size=8,
        log_every=1,
        eval_every=6,
        ckpt_every=3,
        keep_last=2,
        device="cpu",
        spike_window=0,
        resume="auto",
    )
    base.update(trainer)
    return TrainConfig(
        name="tiny",
        run_dir=str(run_dir),
        seed=0,
        model=GPTModelConfig(
            n_layer=2,
            n_head=2,
            n_embd=32,
            block_size=BLOCK,
            vocab_size=VOCAB,
            dropout=0.0,
            bias=False,
            sigma_reparam=sigma_reparam,
        ),
        data=TextDataConfig(name="synthetic", tokenizer="char", block_size=BLOCK),
        optim=optim,
        schedule=schedule,
        trainer=TrainerConfig(**base),
        logger=LoggerConfig(progress=False),
        diagnostics=diagnostics,
    )


def config_from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of ``dataclasses.asdict`` for the config of :func:`tiny_config`."""
    from weyl.train.train_config import WandbConfig

    logger = dict(d["logger"])
    logger["wandb"] = WandbConfig(**logger["wandb"])
    return TrainConfig(
        name=d["name"],
        run_dir=d["run_dir"],
        seed=d["seed"],
        model=GPTModelConfig(**d["model"]),
        data=TextDataConfig(**d["data"]),
        optim=OptimConfig(**d["optim"]),
        schedule=ScheduleConfig(**d["schedule"]),
        trainer=TrainerConfig(**d["trainer"]),
        logger=LoggerConfig(**logger),
        diagnostics=DiagnosticsConfig(**d["diagnostics"]),
    )


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for worker subprocesses: offline, 1 thread, plus test hooks."""
    env = dict(os.environ)
    for key in list(env):
        # no stale test hooks, and no Slurm job a preempted worker could requeue
        if key.startswith(("WEYL_TEST_", "SLURM_")):
            del env[key]
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        WANDB_MODE="offline",
        OMP_NUM_THREADS="1",
        PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}",
        **extra,
    )
    return env


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_config(cfg: TrainConfig) -> Path:
    cfg_path = Path(cfg.run_dir).with_name(Path(cfg.run_dir).name + ".json")
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    cfg_path.write_text(json.dumps(asdict(cfg)))
    return cfg_path


def launch_nodes(cfg: TrainConfig, nnodes: int, timeout: float = 180) -> list[str]:
    """Run the worker as ``nnodes`` torchrun agents of one process each, joined by c10d
    rendezvous on localhost (what ``torchrun --nnodes`` does across hosts); their outputs."""
    cfg_path = _write_config(cfg)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nnodes}",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint=127.0.0.1:{free_port()}",
        f"--rdzv-id=weyl-test-{os.getpid()}",
        "--monitor-interval=0.2",
        "-m",
        "tests.train.worker",
        str(cfg_path),
    ]
    kwargs = dict(cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # a separate environment per agent, as on separate hosts
    procs = [subprocess.Popen(cmd, env=worker_env(), **kwargs) for _ in range(nnodes)]
    outs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            outs.append(out)
            assert proc.returncode == 0, out[-3000:]
    finally:
        for proc in procs:
            proc.kill()
    return outs


def launch(
    cfg: TrainConfig,
    nproc: int = 1,
    env: dict[str, str] | None = None,
    wait: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run the worker on ``cfg`` as 1 process or torchrun ×``nproc`` (gloo)."""
    cfg_path = _write_config(cfg)
    if nproc == 1:
        cmd = [sys.executable, "-m", "tests.train.worker", str(cfg_path)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={nproc}",
            f"--master_port={free_port()}",
            "--monitor-interval=0.2",
            "-m",
            "tests.train.worker",
            str(cfg_path),
        ]
    kwargs = dict(
        cwd=REPO,
        env=env or worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if not wait:
        return subprocess.Popen(cmd, **kwargs)
    return subprocess.run(cmd, timeout=timeout, **kwargs)


def step_records(run_dir: str | Path) -> dict[int, dict[str, Any]]:
    """Metric lines of a run by step (events excluded); asserts there are no duplicates."""
    from weyl.train.loggers import read_jsonl

    records = [r for r in read_jsonl(Path(run_dir) / "metrics.jsonl") if "event" not in r]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"duplicate step lines: {steps}"
    return {r["step"]: r for r in records}


# Keys that must replay bit for bit after a resume (timings obviously do not).
EXACT_KEYS = ("loss", "lr", "grad_norm", "eval/loss", "optim/lr_eff_mean", "optim/clip_rate")


def assert_same_trajectory(a: dict[int, dict], b: dict[int, dict]) -> None:
    """Two runs logged the same steps with bitwise-equal losses, LRs and grad norms."""
    assert sorted(a) == sorted(b)
    for step in a:
        for key in EXACT_KEYS:
            assert a[step].get(key) == b[step].get(key), (
                step,
                key,
                a[step].get(key),
                b[step].get(key),
            )
