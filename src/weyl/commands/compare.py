"""``weyl compare RUN_DIR...``: overlay runs and print a comparison table, without wandb."""

from __future__ import annotations

import sys

from weyl.commands.command_parser import CommandParser
from weyl.report.run_reports import compare_runs
from weyl.report.tables import summary_table


def main(argv: list[str]) -> int:
    """Entry point of ``weyl compare``: 0 when the comparison was written, 2 when a run is missing."""
    parser = CommandParser(
        prog="weyl compare",
        description="Overlay runs (e.g. warmup vs no-warmup) and print a comparison table.",
    )
    parser.add_argument("run_dirs", nargs="+")
    parser.add_argument(
        "--out", default="runs/compare", help="output directory (default runs/compare)"
    )
    args = parser.parse_args(argv)
    try:
        summaries, png = compare_runs(args.run_dirs, args.out)
    except FileNotFoundError as exc:
        print(f"weyl compare: {exc}", file=sys.stderr)
        return 2
    print(summary_table(summaries))
    print(f"\nfigure: {png}")
    return 0
