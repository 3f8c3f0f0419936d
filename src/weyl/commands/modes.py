"""``weyl modes``: simulate Appendix G's three attention modes, print and plot their numbers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weyl.commands.command_parser import CommandParser
from weyl.diagnostics.modes import simulate_attention_modes
from weyl.report.attention_modes import modes_table, plot_attention_modes

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
    print(modes_table(results))
    if args.out is not None:
        path = args.out / FIGURE_NAME
        plot_attention_modes(results, path)
        print(f"wrote {path}")
    return 0
