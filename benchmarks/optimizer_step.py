"""AdamW² step vs torch.optim.AdamW step on GPT-2-small parameter shapes.

Usage: python benchmarks/optimizer_step.py [--width 384] [--layers 12] [--reps 15]
           [--device cpu|cuda] [--power-iters 3] [--weight-iters 1] [--tau 0.01] [--threads N]
       python benchmarks/optimizer_step.py --accuracy [--trajectory gpt|vit] [--steps 200]

Shapes are nanoGPT's GPT-2 (bias=False): wte (50304, d), wpe (1024, d), per layer ln_1/ln_2
(d,), c_attn (3d, d), attn c_proj (d, d), c_fc (4d, d), mlp c_proj (d, 4d), ln_f (d,).
Width 768 is GPT-2-small (124M parameters); the default width 384 (~40M) keeps the run
short on a shared 2-core CPU. The baseline is torch's foreach AdamW on CPU and its fused
kernel on CUDA. Steps are interleaved (A, B, A, B, ...) on fixed random gradients and the
median per optimizer is reported (and the median of the per-step ratios, steadier on a
loaded machine), with the extra optimizer-state bytes of AdamW².

``--accuracy`` instead trains a model with torch AdamW, no warmup, a new random batch each
step — ``gpt``: a char-level GPT (4 layers, d 128, context 64, batch 32 of KJV text, lr 1e-2,
β (0.9, 0.95), wd 0.1); ``vit``: a ViT at DeiT-Tiny width (d 192, 3 heads, 4 blocks) on sklearn
digits at 32 px (batch 64, lr 3e-3, β (0.9, 0.999), wd 0.05) — and at every step compares
warm-started estimates (plain power iteration 1/2/3 written out here, and
:func:`weyl.optim.spectral_norm_estimates` with 1–4 Lanczos steps; one set of vectors per
setting) on W_{t−1} and on that step's ΔW against the exact σ₁ (``torch.linalg.matrix_norm(ord=2)``,
float64), over every matrix view; it ends by checking the default against the targets.
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


def _char_gpt_trajectory(steps: int):
    """Char GPT 4×128 on KJV, torch AdamW lr 1e-2, β (0.9, 0.95), wd 0.1, no warmup."""
    import json

    from weyl.data.kjv import kjv_jsonl_path
    from weyl.models.gpt import GPT
    from weyl.models.model_config import GPTModelConfig

    with open(kjv_jsonl_path(), encoding="utf-8") as f:
        text = "".join(json.loads(line)["text"] + "\n" for line in f)[:2_000_000]
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text])
    torch.manual_seed(0)
    cfg = GPTModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=len(chars))
    model = GPT(cfg)
    gen = torch.Generator().manual_seed(1)

    def loss_fn() -> torch.Tensor:
        ix = torch.randint(0, len(data) - 65, (32,), generator=gen)
        x = torch.stack([data[i : i + 64] for i in ix])
        y = torch.stack([data[i + 1 : i + 65] for i in ix])
        return torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())

    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    return "char GPT 4x128 (KJV, lr 1e-2)", model, opt, loss_fn


def _vit_digits_trajectory(steps: int):
    """ViT (DeiT-Tiny width: d 192, 3 heads, 4 blocks) on sklearn digits at 32 px, patch 8,
    batch 64, torch AdamW lr 3e-3, β (0.9, 0.999), wd 0.05, no warmup."""
    from weyl.data.image_sets import load_digits_splits
    from weyl.models.model_config import ViTModelConfig
    from weyl.models.vit import build_vit

    splits = load_digits_splits()
    images = splits.train.images.float() * splits.train.scale
    labels = splits.train.labels
    mean, std = splits.mean[0], splits.std[0]
    images = torch.nn.functional.interpolate((images - mean) / std, size=32).expand(-1, 3, -1, -1)
    torch.manual_seed(0)
    cfg = ViTModelConfig(
        img_size=32,
        patch_size=8,
        num_classes=10,
        embed_dim=192,
        depth=4,
        num_heads=3,
        drop_path_rate=0.0,
        init="trunc_xavier",
    )
    model = build_vit(cfg)
    gen = torch.Generator().manual_seed(1)

    def loss_fn() -> torch.Tensor:
        ix = torch.randint(0, len(images), (64,), generator=gen)
        return torch.nn.functional.cross_entropy(model(images[ix]), labels[ix])

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.999), weight_decay=0.05)
    return "ViT d192x4 (digits, lr 3e-3)", model, opt, loss_fn


def _power_iteration(t: torch.Tensor, v: torch.Tensor, iters: int) -> float:
    """Plain warm-started power iteration (the paper's method), for comparison."""
    sigma = 0.0
    for _ in range(iters):
        u = t @ v
        u = u / u.norm().clamp_min(1e-30)
        w = t.t() @ u
        sigma = w.norm().item()
        if sigma > 0:
            v.copy_(w / sigma)
    return sigma


def accuracy(steps: int, trajectory: str) -> None:
    """Print σ̂₁ relative-error statistics of warm-started estimates along a training run."""
    from weyl.optim import (
        ShardLayout,
        WeylClip,
        initial_vector,
        matrix_shape,
        spectral_norm_estimates,
    )
    from weyl.optim.spectral_norm import vector_seed
    from weyl.optim.weyl_clip import WARMUP_POWER_ITERS

    torch.set_num_threads(1)
    build = {"gpt": _char_gpt_trajectory, "vit": _vit_digits_trajectory}[trajectory]
    title, model, opt, loss_fn = build(steps)
    mats = [(n, p) for n, p in model.named_parameters() if matrix_shape(p.shape) is not None]
    views = {n: matrix_shape(p.shape) for n, p in mats}
    settings = [("power", 1), ("power", 2), ("power", 3)] + [("lanczos", k) for k in (1, 2, 3, 4)]
    vecs = {
        (s, kind, n): initial_vector(views[n][1], seed=vector_seed(f"{kind}/{n}"))
        for s in settings
        for kind in ("W", "dW")
        for n, _ in mats
    }
    errs: dict[tuple, list[tuple[int, float]]] = {(s, k): [] for s in settings for k in ("W", "dW")}
    for step in range(1, steps + 1):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            targets = {"W": [], "dW": []}
            for n, p in mats:
                group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
                b1, b2 = group["betas"]
                st = opt.state.get(p, {})
                m = st.get("exp_avg", torch.zeros_like(p)) * b1 + (1 - b1) * p.grad
                v = st.get("exp_avg_sq", torch.zeros_like(p)) * b2 + (1 - b2) * p.grad**2
                delta = (m / (1 - b1**step)) / ((v / (1 - b2**step)).sqrt() + group["eps"])
                targets["W"].append(p.detach().reshape(views[n]))
                targets["dW"].append(delta.reshape(views[n]))
            for kind, ts in targets.items():
                exact = [torch.linalg.matrix_norm(t.double(), ord=2).item() for t in ts]
                for s in settings:
                    method, k = s
                    iters = WARMUP_POWER_ITERS if step == 1 else k
                    vs = [vecs[(s, kind, n)] for n, _ in mats]
                    if method == "power":
                        est = [_power_iteration(t, v, iters) for t, v in zip(ts, vs)]
                    else:
                        lays = [ShardLayout(t.shape) for t in ts]
                        est = spectral_norm_estimates(ts, lays, vs, iters).tolist()
                    errs[(s, kind)].extend((step, e / x - 1) for e, x in zip(est, exact) if x > 0)
        opt.step()
    print(f"{title}: {len(mats)} matrices, {steps} steps, final loss {loss.item():.3f}")
    print("relative error of sigma-hat vs exact, steps 21-: mean | 5th pct | min | share < -10%")
    stats = {}
    for (s, kind), rows in errs.items():
        e = torch.tensor([r for st, r in rows if st >= 21])
        stats[(s, kind)] = (e.quantile(0.05).item(), (e < -0.1).float().mean().item())
        print(
            f"{s[0]:>7} {s[1]} {kind:>2}: {100 * e.mean():6.2f}% | {100 * e.quantile(0.05):6.2f}% | "
            f"{100 * e.min():6.1f}% | {100 * (e < -0.1).float().mean():5.2f}%   "
            f"max {100 * e.max():+.4f}%"
        )
    rule = WeylClip()
    for kind, k in (("W", rule.weight_iters), ("dW", rule.power_iters)):
        p5, below = stats[(("lanczos", k), kind)]
        ok = p5 >= -0.02 and below <= 0.005
        print(
            f"default ({kind}: lanczos {k}): 5th pct {100 * p5:.2f}% (target >= -2%), "
            f"below -10% {100 * below:.2f}% (target <= 0.5%): {'met' if ok else 'NOT met'}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--power-iters", type=int, default=3, help="Lanczos steps on ΔW")
    ap.add_argument("--weight-iters", type=int, default=1, help="Lanczos steps on W")
    ap.add_argument("--tau", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: default)")
    ap.add_argument(
        "--no-keep-scratch",
        action="store_true",
        help="allocate AdamW²'s ΔW buffer every step (less memory, slower on CPU)",
    )
    ap.add_argument("--accuracy", action="store_true", help="σ̂₁ error study instead of timing")
    ap.add_argument("--steps", type=int, default=200, help="trajectory length for --accuracy")
    ap.add_argument("--trajectory", default="gpt", choices=["gpt", "vit"], help="for --accuracy")
    args = ap.parse_args()
    if args.accuracy:
        accuracy(args.steps, args.trajectory)
        return
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
    ours = AdamW2(
        groups(ours_params),
        tau=args.tau,
        power_iters=args.power_iters,
        weight_iters=args.weight_iters,
        keep_scratch=not args.no_keep_scratch,
        **hyper,
    )

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
    scratch = ours.scratch_bytes()
    name = "fused" if args.device == "cuda" else "foreach"
    print(
        f"GPT-2 shapes: width {args.width}, {args.layers} layers, {n / 1e6:.1f}M params, "
        f"device {args.device}, threads {torch.get_num_threads()}, reps {args.reps}"
    )
    print(f"torch AdamW ({name}) step  median {mb * 1e3:8.1f} ms")
    print(
        f"AdamW2 (Lanczos steps dW {args.power_iters}, W {args.weight_iters}) step median "
        f"{mo * 1e3:8.1f} ms"
    )
    paired = statistics.median(o / b for o, b in zip(to, tb))
    print(f"time ratio AdamW2 / AdamW: {mo / mb:.3f} (medians), {paired:.3f} (median of pairs)")
    print(
        f"optimizer state: AdamW {sb / 2**20:.1f} MiB, AdamW2 {so / 2**20:.1f} MiB, "
        f"extra {(so - sb) / 2**10:.1f} KiB ({100 * (so - sb) / sb:.3f}%)"
    )
    # torch's AdamW allocates a buffer of this size inside every step: peak memory is equal.
    print(
        f"AdamW2 scratch kept between steps: {scratch / 2**20:.1f} MiB "
        f"({100 * scratch / sb:.1f}% of AdamW's state)"
    )
    print(f"clip fired on {100 * ours.clip_fraction():.0f}% of tensors in the last step")


if __name__ == "__main__":
    main()
