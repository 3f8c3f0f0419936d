"""Benchmarks of weyl.diagnostics; prints its measurements.

(a) σ(W_qᵀW_k) per head by the QR-core route vs ``torch.linalg.svdvals`` of the explicit
    d×d products, at d=768, d_q=64, 12 heads × 12 layers (GPT-2 small), on random,
    rank-deficient and ill-conditioned heads: speed ratio and max error.
(b) Fraction of training time spent in ``Diagnostics.compute`` at the default interval
    (every 100 steps) in a small CPU training loop of the reference Transformer of
    tests/diagnostics/reference_model.py (random tokens: the cost does not depend on data).
(c) Effective rank from ``rank_queries`` sampled query rows (Gram eigenvalues, the default
    route) vs the full SVD, at GPT-2 small's head count (12 layers × 12 heads × 4 probe maps)
    on maps shrunk from 1024 to ``--map-size`` keys with the default's row fraction
    (``diagnostics.rank_queries`` of 1024, ``--queries-per-1024`` to try others):
    causal softmax maps from dense to one-hot, identity-like and rank-k ones. Prints the
    error of erank/N against the full SVD's, whether the low-rank verdict (< 0.25) agrees,
    and the CPU time ratio.

    .venv/bin/python benchmarks/diagnostics.py [--part a|b|c|all] [--steps 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import time
from pathlib import Path

import torch

from weyl.diagnostics import Diagnostics, qk_singular_values, sec_index
from weyl.diagnostics.attention_maps import effective_rank, sampled_effective_rank
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig

ROOT = Path(__file__).resolve().parents[1]


def _heads(kind: str, layers: int, heads: int, d_q: int, d: int, gen: torch.Generator):
    shape = (layers, heads, d_q, d)
    if kind == "random":
        return torch.randn(*shape, generator=gen) / d**0.5
    if kind == "rank_deficient":
        rank = 4  # W_q of rank 4 < d_q, so W_qᵀW_k has rank 4 and 60 zero singular values
        a = torch.randn(layers, heads, d_q, rank, generator=gen)
        return a @ torch.randn(layers, heads, rank, d, generator=gen) / d**0.5
    # ill-conditioned: singular values of each factor spread over 1 .. 1e-6
    u, _ = torch.linalg.qr(torch.randn(layers, heads, d_q, d_q, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(layers, heads, d, d_q, generator=gen))
    return (u * torch.logspace(0, -6, d_q)) @ v.mT


def _best_of(fn, repeats: int) -> tuple[float, torch.Tensor]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_small_matrix_route(layers: int = 12, heads: int = 12, d_q: int = 64, d: int = 768):
    """Part (a): QR-core route vs full SVD of the explicit products."""
    print(
        f"(a) σ(WqᵀWk): {layers} layers × {heads} heads, d={d}, d_q={d_q}, fp32, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(
        f"{'case':<15} {'QR route s':>10} {'full SVD s':>10} {'speed-up':>9} "
        f"{'max err/σ1':>11} {'σ1 rel err':>11} {'SEC4 abs err':>12} {'vs fp64':>9}"
    )
    gen = torch.Generator().manual_seed(0)
    for kind in ("random", "rank_deficient", "ill_conditioned"):
        q = _heads(kind, layers, heads, d_q, d, gen)
        k = _heads(kind, layers, heads, d_q, d, gen)
        t_fast, fast = _best_of(lambda q=q, k=k: qk_singular_values(q, k), 3)
        t_full, full = _best_of(lambda q=q, k=k: torch.linalg.svdvals(q.mT @ k)[..., :d_q], 1)
        sigma1 = full[..., :1]
        err = ((fast - full).abs() / sigma1).max().item()
        rel1 = ((fast[..., 0] - full[..., 0]).abs() / full[..., 0]).max().item()
        sec_err = (sec_index(fast, 4) - sec_index(full, 4)).abs().max().item()
        # the fp32 explicit product is itself inexact; layer 0 in fp64 is the ground truth
        truth = torch.linalg.svdvals(q[0].double().mT @ k[0].double())[..., :d_q]
        err64 = ((fast[0].double() - truth).abs() / truth[..., :1]).max().item()
        print(
            f"{kind:<15} {t_fast:>10.4f} {t_full:>10.2f} {t_full / t_fast:>8.0f}× "
            f"{err:>11.2e} {rel1:>11.2e} {sec_err:>12.2e} {err64:>9.2e}"
        )


def _load_reference_model():
    path = ROOT / "tests" / "diagnostics" / "reference_model.py"
    spec = importlib.util.spec_from_file_location("diagnostics_reference_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench_training_fraction(steps: int = 300, every: int = 100) -> None:
    """Part (b): time in Diagnostics.compute / time of the training loop without it."""
    ref = _load_reference_model()
    vocab, dim, depth, heads, seq, batch = 96, 128, 4, 4, 64, 32
    cfg = DiagnosticsConfig(every=every)

    def run(with_diag: bool) -> tuple[float, float, int]:
        torch.manual_seed(0)
        model = ref.RefTransformer(vocab, dim, depth, heads, seq, causal=True)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
        probe = torch.randint(0, vocab, (cfg.probe_batch_size, seq + 1))
        diag = Diagnostics(model, cfg, probe[:, :-1], loss_fn=lambda m: ref.lm_loss(m, probe))
        diag_time, calls = 0.0, 0
        t0 = time.perf_counter()
        for step in range(steps):
            loss = ref.lm_loss(model, torch.randint(0, vocab, (batch, seq + 1)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if with_diag and diag.due(step):
                td = time.perf_counter()
                diag.compute(opt)
                diag_time += time.perf_counter() - td
                calls += 1
        return time.perf_counter() - t0, diag_time, calls

    run(False)  # warm-up (allocator, first-call overheads)
    t_without, _, _ = run(False)
    t_with, t_diag, calls = run(True)
    print(
        f"(b) training loop: reference Transformer {depth}×{dim}, {heads} heads, seq {seq}, "
        f"batch {batch}, {steps} steps, diagnostics every {every} ({calls} calls), "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(
        f"    without diagnostics {t_without:.2f} s ({1e3 * t_without / steps:.1f} ms/step); "
        f"with {t_with:.2f} s"
    )
    print(
        f"    time inside Diagnostics.compute {t_diag:.3f} s ({1e3 * t_diag / calls:.1f} ms/call)"
    )
    print(
        f"    fraction of training time: {t_diag / t_without:.3%} (measured in the calls); "
        f"{(t_with - t_without) / t_without:+.3%} (difference of loop times, noisy)"
    )


def probe_like_maps(count: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` n×n attention maps spanning what a probe sees: causal softmax of random
    logits at temperatures from dense (0.3) to one-hot (30), identity-like (benign), and
    rank-k maps (k = 1..8, malignant)."""
    maps = []
    future = torch.ones(n, n, dtype=torch.bool).triu(1)
    scales = torch.logspace(math.log10(0.3), math.log10(30.0), count)
    for i in range(count):
        kind = i % 4
        if kind == 2:  # near-identity: each query on itself or its predecessor
            logits = 30 * (torch.eye(n) + 0.5 * torch.eye(n).roll(-1, 1)) + torch.randn(
                n, n, generator=gen
            )
        elif kind == 3:  # rank k: every query attends through k key "hubs"
            k = 1 + i % 8
            hubs = torch.randint(0, n, (k,), generator=gen)
            logits = torch.full((n, n), -30.0)
            logits[:, hubs] = 30 * torch.rand(n, k, generator=gen)
            logits[:, 0] = 0.0  # a causal map always has its first key
        else:
            logits = scales[i] * torch.randn(n, n, generator=gen)
        maps.append(logits.masked_fill(future, float("-inf")).softmax(-1))
    return torch.stack(maps)


def bench_sampled_erank(
    map_size: int = 256,
    per_1024: int = DiagnosticsConfig().rank_queries,
    layers: int = 12,
    heads: int = 12,
    samples: int = 4,
):
    """Part (c): sampled-query Gram route vs full SVD for the effective rank."""
    queries = max(1, map_size * per_1024 // 1024)
    count = layers * heads * samples
    gen = torch.Generator().manual_seed(0)
    maps = probe_like_maps(count, map_size, gen)
    t_fast, (_, fraction) = _best_of(lambda: sampled_effective_rank(maps, queries), 3)
    t_full, erank = _best_of(lambda: effective_rank(maps), 1)
    full_fraction = erank / map_size
    err = (fraction - full_fraction).abs()
    agree = ((fraction < 0.25) == (full_fraction < 0.25)).float().mean().item()
    print(
        f"(c) effective rank: {count} maps ({layers}x{heads} heads x {samples}) of "
        f"{map_size}x{map_size}, {queries} sampled query rows, fp64 Gram, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(
        f"    sampled {t_fast:.3f} s, full SVD {t_full:.3f} s: {t_full / t_fast:.1f}x faster; "
        f"|Δ erank/N| max {err.max():.3f}, mean {err.mean():.3f}; low-rank verdict "
        f"(< 0.25) agrees on {agree:.1%} of maps"
    )
    kind_of = torch.arange(count) % 4
    kinds = {"random logits": kind_of < 2, "near-identity": kind_of == 2, "rank 1-8": kind_of == 3}
    per_kind = {}
    for kind, pick in kinds.items():
        e, f, g = err[pick], fraction[pick], full_fraction[pick]
        per_kind[kind] = {
            "full_mean": g.mean().item(),
            "sampled_mean": f.mean().item(),
            "err_max": e.max().item(),
            "verdict_disagree": int(((f < 0.25) != (g < 0.25)).sum()),
        }
        print(
            f"    {kind:<14} erank/N full {g.mean():.3f}, sampled (erank/m) {f.mean():.3f}, "
            f"max |Δ| {e.max():.3f}, verdicts differ on {per_kind[kind]['verdict_disagree']}"
        )
    return {
        "per_kind": per_kind,
        "maps": count,
        "map_size": map_size,
        "queries": queries,
        "sampled_s": t_fast,
        "full_svd_s": t_full,
        "speedup": t_full / t_fast,
        "fraction_err_max": err.max().item(),
        "fraction_err_mean": err.mean().item(),
        "verdict_agreement": agree,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    p.add_argument("--map-size", type=int, default=256, help="part (c): keys per map")
    p.add_argument(
        "--queries-per-1024",
        type=int,
        default=DiagnosticsConfig().rank_queries,
        help="part (c): sampled query rows per 1024 (default: diagnostics.rank_queries)",
    )
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("a", "all"):
        bench_small_matrix_route()
    if args.part in ("b", "all"):
        bench_training_fraction(args.steps)
    if args.part in ("c", "all"):
        bench_sampled_erank(args.map_size, args.queries_per_1024)


if __name__ == "__main__":
    main()
