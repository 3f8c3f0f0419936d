"""AdamW² step vs torch.optim.AdamW step on GPT-2-small parameter shapes.

Usage: python benchmarks/optimizer_step.py [--width 384] [--layers 12] [--reps 15]
           [--device cpu|cuda] [--power-iters 3] [--weight-iters 1] [--tau 0.01] [--threads N]
       python benchmarks/optimizer_step.py --profile [--device cpu|cuda|meta]
       python benchmarks/optimizer_step.py --accuracy [--trajectory gpt|vit] [--steps 200]

Shapes are nanoGPT's GPT-2 (bias=False): wte (50304, d), wpe (1024, d), per layer ln_1/ln_2
(d,), c_attn (3d, d), attn c_proj (d, d), c_fc (4d, d), mlp c_proj (d, 4d), ln_f (d,).
Width 768 is GPT-2-small (124M parameters); the default width 384 (~40M) keeps the run
short on a shared 2-core CPU. The baseline is torch's foreach AdamW on CPU and its fused
kernel on CUDA. Steps are interleaved (A, B, A, B, ...) on fixed random gradients and the
median per optimizer is reported (and the median of the per-step ratios, steadier on a
loaded machine), with the extra optimizer-state bytes of AdamW².

``--profile`` counts what one step issues (:func:`profile_step`) at GPT-2-S (768 × 12) and
GPT-2-L (1280 × 36) shapes, for AdamW² on its accelerator path and for torch's AdamW. Off a GPU the
accelerator path runs on the CPU (forced, at width 64: the counts depend on the tensors' number
and shapes' gcds only) and on the ``meta`` device (full widths; no data, so any value read back to
the host raises). What is counted, on the CPU profiler's op tree:

- **kernels**: ops that would launch a kernel on a GPU — a ``_foreach_*`` op counts once (the
  lists AdamW² passes meet CUDA's multi-tensor fast route: equal shapes and dtypes, host scalars;
  on a GPU one launch per ~320 blocks of 64 Ki elements), a composite op counts the compute ops
  under it, and views, reshapes without copy and allocations count nothing. Ops on the CPU ``step``
  counters (2 per param group, as in torch's AdamW) are included although they launch nothing.
- **dispatches**: top-level aten ops issued by ``step()``, views and allocations excluded.
- **syncs**: ops that read a tensor's value on the host (``aten::item``, ``_local_scalar_dense``,
  ``is_nonzero``, ``nonzero``, ``masked_select``, ``equal``): on a GPU each waits for the device
  (torch's foreach AdamW reads its CPU step counters so, which waits for nothing). AdamW² has none.
- **conversions**: dtype/device conversions issued by ``step()`` (top-level ``aten::to`` that
  copy; not the CPU's wrapping of Python scalars inside arithmetic ops).

On CUDA the profiler's own kernel count is reported too, and the step runs under
``torch.cuda.set_sync_debug_mode("error")``.

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


# Ops that launch no kernel by themselves (views, metadata, allocation): only what runs under
# them counts (a reshape that copies, a real dtype conversion).
_NO_KERNEL = {
    "aten::alias",
    "aten::as_strided",
    "aten::contiguous",
    "aten::detach",
    "aten::diagonal",
    "aten::empty",
    "aten::empty_like",
    "aten::empty_permuted",
    "aten::empty_strided",
    "aten::expand",
    "aten::expand_as",
    "aten::lift_fresh",
    "aten::narrow",
    "aten::new_empty",
    "aten::new_empty_strided",
    "aten::permute",
    "aten::reshape",
    "aten::_reshape_alias",
    "aten::resolve_conj",
    "aten::resolve_neg",
    "aten::result_type",
    "aten::select",
    "aten::slice",
    "aten::split",
    "aten::split_with_sizes",
    "aten::squeeze",
    "aten::t",
    "aten::to",
    "aten::transpose",
    "aten::unbind",
    "aten::unsqueeze",
    "aten::view",
    "aten::view_as",
    "aten::view_as_real",
    "aten::_unsafe_view",
}
SYNC_OPS = frozenset(
    {
        "aten::item",
        "aten::_local_scalar_dense",
        "aten::is_nonzero",
        "aten::nonzero",
        "aten::masked_select",
        "aten::equal",
    }
)


def _kernels(event) -> int:
    """Kernels an op tree stands for (see the module docstring)."""
    name = event.name
    if name.startswith("aten::_foreach_"):
        return 1
    if name in SYNC_OPS:  # counted apart
        return 0
    below = sum(_kernels(c) for c in event.cpu_children)
    if not name.startswith("aten::") or name in _NO_KERNEL:
        return below
    return below if below else 1


def _top_level(events) -> list:
    """Aten ops with no aten op above them (children of the step's record_function are kept)."""
    out = []
    for e in events:
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None and e.name.startswith("aten::"):
            out.append(e)
    return out


def count_step_ops(opt: torch.optim.Optimizer, warmup: int = 2) -> dict[str, int]:
    """Profile one ``opt.step()`` after ``warmup`` steps: kernels, dispatches, syncs, conversions.

    On CUDA also ``cuda_kernels`` (the profiler's kernel events), and the step runs under
    ``torch.cuda.set_sync_debug_mode("error")``, so a synchronising op raises.
    """
    from torch.profiler import ProfilerActivity, profile

    for _ in range(warmup):  # state, vectors and kept buffers are created in the first steps
        opt.step()
    params = [p for g in opt.param_groups for p in g["params"]]
    cuda = params[0].device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        with profile(activities=activities) as prof:
            opt.step()
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
                torch.cuda.synchronize()
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode(0)
    events = list(prof.events())
    top = _top_level(events)
    counts = {
        "kernels": sum(_kernels(e) for e in top),
        "dispatches": sum(e.name not in _NO_KERNEL for e in top),
        "syncs": sum(e.name in SYNC_OPS for e in events),
        "conversions": sum(
            e.name == "aten::to" and any(c.name == "aten::_to_copy" for c in e.cpu_children)
            for e in top
        ),
        "tensors": len(params),
    }
    if cuda:
        counts["cuda_kernels"] = sum(
            e.device_type == torch.autograd.DeviceType.CUDA and "memcpy" not in e.name.lower()
            for e in events
        )
    return counts


def profile_step(
    device: str | torch.device,
    width: int = 768,
    layers: int = 12,
    optimizer: str = "adamw2",
    power_iters: int = 3,
    weight_iters: int = 1,
    force_batched: bool = False,
) -> dict[str, int]:
    """Counts of one optimizer step (:func:`count_step_ops`) on GPT-2 shapes on ``device``.

    ``optimizer``: ``adamw2`` or ``adamw`` (torch's: fused on CUDA, foreach elsewhere).
    ``force_batched`` runs AdamW²'s accelerator path on the CPU (the tests' switch).
    """
    import importlib

    device = torch.device(device)
    shapes = gpt2_shapes(width, layers)
    if device.type == "meta":
        params = [_meta_param(s) for s in shapes]
    else:
        params = make_params(shapes, str(device))
    hyper = dict(lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(
            groups(params), fused=device.type == "cuda", foreach=device.type != "cuda", **hyper
        )
        return count_step_ops(opt)
    sn = importlib.import_module("weyl.optim.spectral_norm")
    forced = sn._FORCE_STACKED
    sn._FORCE_STACKED = force_batched or forced
    try:
        opt = AdamW2(groups(params), power_iters=power_iters, weight_iters=weight_iters, **hyper)
        return count_step_ops(opt)
    finally:
        sn._FORCE_STACKED = forced


def _meta_param(shape: tuple) -> torch.nn.Parameter:
    p = torch.nn.Parameter(torch.empty(shape, device="meta"))
    p.grad = torch.empty_like(p)
    return p


def print_profile(device: str) -> None:
    """Counts at GPT-2-S and GPT-2-L shapes for AdamW² and torch AdamW (``--profile``)."""
    runs = []
    for label, width, layers in (("GPT-2-S", 768, 12), ("GPT-2-L", 1280, 36)):
        if device == "cpu":
            # Counts depend on the number of tensors and their shapes' gcds, not the width.
            runs.append(
                (
                    f"{label} (width 64, forced)",
                    dict(device="cpu", width=64, layers=layers, force_batched=True),
                )
            )
        else:
            runs.append((label, dict(device=device, width=width, layers=layers)))
    print("| shapes | optimizer | tensors | kernels | dispatches | syncs | conversions |")
    print("|---|---|---|---|---|---|---|")
    for label, kw in runs:
        for name in ("adamw2", "adamw"):
            c = profile_step(optimizer=name, **kw)
            extra = f" (CUDA kernels {c['cuda_kernels']})" if "cuda_kernels" in c else ""
            print(
                f"| {label} | {name} | {c['tensors']} | {c['kernels']}{extra} | "
                f"{c['dispatches']} | {c['syncs']} | {c['conversions']} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "meta"])
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
    ap.add_argument("--profile", action="store_true", help="count kernels and syncs per step")
    ap.add_argument("--steps", type=int, default=200, help="trajectory length for --accuracy")
    ap.add_argument("--trajectory", default="gpt", choices=["gpt", "vit"], help="for --accuracy")
    args = ap.parse_args()
    if args.accuracy:
        accuracy(args.steps, args.trajectory)
        return
    if args.profile:
        print_profile(args.device)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    r = time_step(
        args.device,
        args.width,
        args.layers,
        args.reps,
        power_iters=args.power_iters,
        weight_iters=args.weight_iters,
        tau=args.tau,
        keep_scratch=not args.no_keep_scratch,
    )
    print(
        f"GPT-2 shapes: width {args.width}, {args.layers} layers, {r['params'] / 1e6:.1f}M "
        f"params, device {args.device}, threads {torch.get_num_threads()}, reps {args.reps}"
    )
    print(f"torch AdamW ({r['baseline']}) step  median {r['adamw_ms']:8.1f} ms")
    print(
        f"AdamW2 (Lanczos steps dW {args.power_iters}, W {args.weight_iters}) step median "
        f"{r['adamw2_ms']:8.1f} ms"
    )
    print(
        f"time ratio AdamW2 / AdamW: {r['ratio']:.3f} (medians), "
        f"{r['paired_ratio']:.3f} (median of pairs)"
    )
    sb, so = r["adamw_state_bytes"], r["adamw2_state_bytes"]
    print(
        f"optimizer state: AdamW {sb / 2**20:.1f} MiB, AdamW2 {so / 2**20:.1f} MiB, "
        f"extra {(so - sb) / 2**10:.1f} KiB ({100 * (so - sb) / sb:.3f}%)"
    )
    # torch's AdamW allocates a buffer of this size inside every step: peak memory is equal.
    scratch = r["adamw2_scratch_bytes"]
    print(
        f"AdamW2 scratch kept between steps: {scratch / 2**20:.1f} MiB "
        f"({100 * scratch / sb:.1f}% of AdamW's state)"
    )
    print(f"clip fired on {100 * r['clip_fraction']:.0f}% of tensors in the last step")


def time_step(
    device: str | torch.device,
    width: int = 384,
    layers: int = 12,
    reps: int = 15,
    power_iters: int = 3,
    weight_iters: int = 1,
    tau: float = 0.01,
    keep_scratch: bool = True,
) -> dict[str, float]:
    """Median step times (ms) of AdamW² and torch's AdamW (fused on CUDA, foreach elsewhere),
    interleaved on fixed random gradients, with their ratio and state sizes."""
    device = torch.device(device)
    shapes = gpt2_shapes(width, layers)
    base_params = make_params(shapes, str(device))
    ours_params = make_params(shapes, str(device))
    hyper = dict(lr=6e-4, betas=(0.9, 0.95), eps=1e-8)
    cuda = device.type == "cuda"
    base = torch.optim.AdamW(groups(base_params), fused=cuda, foreach=not cuda, **hyper)
    ours = AdamW2(
        groups(ours_params),
        tau=tau,
        power_iters=power_iters,
        weight_iters=weight_iters,
        keep_scratch=keep_scratch,
        **hyper,
    )

    def timed(opt: torch.optim.Optimizer) -> float:
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for _ in range(2):  # state allocation and the vectors' warm-up iterations
        timed(base)
        timed(ours)
    tb, to = [], []
    for _ in range(reps):
        tb.append(timed(base))
        to.append(timed(ours))
    mb, mo = statistics.median(tb), statistics.median(to)
    return {
        "params": sum(p.numel() for p in base_params),
        "baseline": "fused" if cuda else "foreach",
        "adamw_ms": mb * 1e3,
        "adamw2_ms": mo * 1e3,
        "ratio": mo / mb,
        "paired_ratio": statistics.median(o / b for o, b in zip(to, tb)),
        "adamw_state_bytes": state_bytes(base),
        "adamw2_state_bytes": state_bytes(ours),
        "adamw2_scratch_bytes": ours.scratch_bytes(),
        "clip_fraction": ours.clip_fraction(),
    }


if __name__ == "__main__":
    main()
