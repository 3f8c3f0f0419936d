"""AdamW² step vs torch.optim.AdamW step on GPT-2-small parameter shapes.

Usage: python benchmarks/optimizer_step.py [--width 384] [--layers 12] [--reps 15]
           [--device cpu|cuda] [--power-iters 1] [--tau 0.01] [--threads N]

Shapes are nanoGPT's GPT-2 (bias=False): wte (50304, d), wpe (1024, d), per layer ln_1/ln_2
(d,), c_attn (3d, d), attn c_proj (d, d), c_fc (4d, d), mlp c_proj (d, 4d), ln_f (d,).
Width 768 is GPT-2-small (124M parameters); the default width 384 (~40M) keeps the run
short on a shared 2-core CPU. The baseline is torch's foreach AdamW on CPU and its fused
kernel on CUDA. Steps are interleaved (A, B, A, B, ...) on fixed random gradients and the
median per optimizer is reported, with the extra optimizer-state bytes of AdamW².
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from weyl.optim import AdamW2


def gpt2_shapes(width: int, layers: int, vocab: int = 50304, block: int = 1024) -> list[tuple]:
    """Parameter shapes of a bias-free nanoGPT GPT-2 of the given width and depth."""
    shapes: list[tuple] = [(vocab, width), (block, width)]
    for _ in range(layers):
        shapes += [(width,), (3 * width, width), (width, width), (width,)]
        shapes += [(4 * width, width), (width, 4 * width)]
    return [*shapes, (width,)]


def make_params(shapes: list[tuple], device: str) -> list[torch.nn.Parameter]:
    """Random parameters with fixed random gradients."""
    g = torch.Generator().manual_seed(0)
    params = []
    for s in shapes:
        p = torch.nn.Parameter((torch.randn(s, generator=g) * 0.02).to(device))
        p.grad = torch.randn(s, generator=g).to(device) * 1e-3
        params.append(p)
    return params


def groups(params: list[torch.nn.Parameter]) -> list[dict]:
    """nanoGPT's two groups: decay for matrices, none for gains."""
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer state."""
    return sum(
        v.numel() * v.element_size()
        for st in opt.state.values()
        for v in st.values()
        if torch.is_tensor(v)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--power-iters", type=int, default=1)
    ap.add_argument("--tau", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    shapes = gpt2_shapes(args.width, args.layers)
    base_params = make_params(shapes, args.device)
    ours_params = make_params(shapes, args.device)
    n = sum(p.numel() for p in base_params)
    hyper = dict(lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    if args.device == "cuda":
        base = torch.optim.AdamW(groups(base_params), fused=True, **hyper)
    else:
        base = torch.optim.AdamW(groups(base_params), foreach=True, **hyper)
    ours = AdamW2(groups(ours_params), tau=args.tau, power_iters=args.power_iters, **hyper)

    def timed(opt: torch.optim.Optimizer) -> float:
        if args.device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for _ in range(2):  # state allocation and the vectors' warm-up iterations
        timed(base)
        timed(ours)
    tb, to = [], []
    for _ in range(args.reps):
        tb.append(timed(base))
        to.append(timed(ours))
    mb, mo = statistics.median(tb), statistics.median(to)
    sb, so = state_bytes(base), state_bytes(ours)
    name = "fused" if args.device == "cuda" else "foreach"
    print(
        f"GPT-2 shapes: width {args.width}, {args.layers} layers, {n / 1e6:.1f}M params, "
        f"device {args.device}, threads {torch.get_num_threads()}, reps {args.reps}"
    )
    print(f"torch AdamW ({name}) step  median {mb * 1e3:8.1f} ms")
    print(f"AdamW2 (power_iters={args.power_iters}) step median {mo * 1e3:8.1f} ms")
    print(f"time ratio AdamW2 / AdamW: {mo / mb:.3f}")
    print(
        f"optimizer state: AdamW {sb / 2**20:.1f} MiB, AdamW2 {so / 2**20:.1f} MiB, "
        f"extra {(so - sb) / 2**10:.1f} KiB ({100 * (so - sb) / sb:.3f}%)"
    )
    print(f"clip fired on {100 * ours.clip_fraction():.0f}% of tensors in the last step")


if __name__ == "__main__":
    main()
