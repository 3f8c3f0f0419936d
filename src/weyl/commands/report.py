"""``weyl report RUN_DIR``: a run directory's figures and Markdown summary, without wandb."""

from __future__ import annotations

import sys

from weyl.commands.command_parser import CommandParser
from weyl.report.run_reports import report_run


def main(argv: list[str]) -> int:
    """Entry point of ``weyl report``: 0 when the report was written, 2 when RUN_DIR is no run."""
    parser = CommandParser(
        prog="weyl report",
        description="Render a run directory's figures (Fig. 1, 2/3, 4, 15) and a Markdown summary.",
    )
    parser.add_argument("run_dir")
    parser.add_argument("--out", help="output directory (default RUN_DIR/report)")
    parser.add_argument(
        "--layers", nargs="*", help="blocks to detail, e.g. L00 L06 L11 (default first/middle/last)"
    )
    parser.add_argument(
        "--steps", nargs="*", type=int, help="steps for the SEC and attention-map panels"
    )
    args = parser.parse_args(argv)
    try:
        written = report_run(args.run_dir, args.out, args.layers, args.steps)
    except FileNotFoundError as exc:
        print(f"weyl report: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {written['markdown'].parent}")
    return 0
