"""``weyl modes``: simulate Appendix G's three attention modes, print and plot their numbers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weyl.command_parser import CommandParser
from weyl.diagnostics.modes import ModeResult, simulate_attention_modes

FIGURE_NAME = "attention_modes.png"


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``weyl modes``."""
    p = CommandParser(
        prog="weyl modes",
        description=(
            "Simulate the normal / malignant-collapse / benign-collapse attention maps of "
            "Appendix G and report entropy, effective rank, σ₁(WqᵀWk), SEC and the label."
        ),
    )
    p.add_argument("--d-q", type=int, default=64, help="head dimension d_q (default 64)")
    p.add_argument("--dim", type=int, default=768, help="model dimension d (default 768)")
    p.add_argument("--tokens", type=int, default=197, help="number of tokens (default 197)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--gain",
        type=float,
        default=256.0,
        help="factor on the collapse-mode matrices: Theorem 1's large σ_i (default 256)",
    )
    p.add_argument(
        "--paper-scale",
        action="store_true",
        help="literal Appendix G code: N(0,1) weights, no 1/sqrt(d_q), no gain",
    )
    p.add_argument("--out", type=Path, default=None, help=f"write {FIGURE_NAME} into this folder")
    return p


def format_table(results: list[ModeResult]) -> str:
    """The numbers of each mode as a fixed-width text table."""
    s_values = sorted(results[0].sec)
    head = ["mode", "entropy", "erank", "erank/N", "σ1(WqᵀWk)"] + [f"SEC s={s}" for s in s_values]
    head.append("label")
    rows = [
        [
            r.name,
            f"{r.entropy:.4f}",
            f"{r.erank:.2f}",
            f"{r.erank_fraction:.3f}",
            f"{r.qk_sigma1:.4g}",
            *[f"{r.sec[s]:.4f}" for s in s_values],
            r.label.name.lower(),
        ]
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def write_figure(results: list[ModeResult], path: Path) -> None:
    """Save the three maps side by side, each titled with its numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 5.4))
    for ax, r in zip(axes, results):
        ax.imshow(r.attention.numpy(), cmap="viridis", interpolation="nearest")
        s_max = max(r.sec)
        ax.set_title(
            f"{r.name} → {r.label.name.lower()}\n"
            f"entropy {r.entropy:.3f}  erank {r.erank:.1f} ({r.erank_fraction:.2f}·N)\n"
            f"σ1(WqᵀWk) {r.qk_sigma1:.3g}  SEC(s={s_max}) {r.sec[s_max]:.3f}",
            fontsize=10,
        )
        ax.set_xlabel("key")
        ax.set_ylabel("query")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> int:
    """Entry point of ``weyl modes``; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        results = simulate_attention_modes(
            d_q=args.d_q,
            d=args.dim,
            num_tokens=args.tokens,
            seed=args.seed,
            collapse_gain=args.gain,
            paper_scale=args.paper_scale,
            sec_s=tuple(s for s in (1, 2, 4, 8) if s <= args.d_q),
        )
    except ValueError as err:
        print(f"weyl modes: {err}", file=sys.stderr)
        return 2
    print(format_table(results))
    if args.out is not None:
        path = args.out / FIGURE_NAME
        write_figure(results, path)
        print(f"wrote {path}")
    return 0
