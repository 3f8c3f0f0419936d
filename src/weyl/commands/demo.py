"""``weyl demo``: the paper's claim on a laptop CPU, offline, in minutes.

Three runs share model, data, seed and peak LR (``recipes/cpu/``): AdamW without warmup,
AdamW with warmup, AdamW² without warmup (σReparam without warmup with ``--sigma-reparam``).
They run in sequence, then ``weyl compare`` overlays them and a verdict table
(:mod:`weyl.report.verdicts`) checks the
signature the paper describes: the no-warmup AdamW run's attention collapses (entropy near
0, spectral energy of WqᵀWk in ≤2 directions) and it ends clearly worse, while AdamW²
without warmup does not collapse and matches AdamW with warmup. Every number comes from the
runs' own logs.

Exit code: 0 when every verdict holds, 1 when one does not; a Ctrl-C (130) or a preemption (3)
stops the demo after the current run checkpointed, and rerunning the command continues it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from weyl.commands.command_parser import CommandParser
from weyl.report.verdicts import METHODS, final_loss, verdict_table, verdicts

SIGMA_REPARAM = "sigma_reparam_nowarmup"
QUICK_STEPS = 300
WARMUP_FRACTION = 0.1  # the warmup run warms up over this fraction of its steps


def _move_aside(path: Path) -> None:
    """Keep a previous run instead of deleting it (nothing a user saved is lost)."""
    if path.exists():
        target = path.with_name(f"{path.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(path), target)
        print(f"demo: kept the previous run as {target}")


def shortened_run(steps: int) -> list[str]:
    """Overrides that shorten every demo run to ``steps``."""
    return [
        f"trainer.max_steps={steps}",
        f"trainer.eval_every={steps}",
        f"trainer.ckpt_every={steps}",
        f"diagnostics.every={max(10, steps // 6)}",
    ]


class DemoStop(Exception):
    """A demo run cannot start; the message is one line for the user."""


def demo_dir(out: Path, quick: bool, steps: int) -> Path:
    """Where one kind of demo keeps its runs: the full demo in ``out``, shortened ones apart.

    A 300-step run is not the first 300 steps of a 1000-step run (the cosine decays sooner), so
    ``--quick`` and ``--steps N`` never share run directories with the full demo.
    """
    if steps:
        return out / f"steps{steps}"
    return out / "quick" if quick else out


def run_recipe(recipe: str, run_dir: Path, overrides: list[str], progress: bool) -> dict[str, Any]:
    """Compose one recipe and start it into ``run_dir`` through the same launcher as ``weyl train``."""
    from weyl.train.launch import launch_recipe

    args = [
        f"recipe={recipe}",
        f"run_dir={run_dir}",
        f"logger.progress={str(progress).lower()}",
        *overrides,
    ]
    return launch_recipe(args, ["weyl", "train", *args], extra={"recipe": recipe})


def main(argv: list[str]) -> int:
    """Entry point of ``weyl demo``: 0 when every verdict holds, 1 when one does not, 2 on bad input."""
    try:
        return _demo(argv)
    except DemoStop as exc:
        print(f"weyl demo: {exc}", file=sys.stderr)
        return 2


def _demo(argv: list[str]) -> int:
    parser = CommandParser(
        prog="weyl demo",
        description="Reproduce the paper's claim on CPU: AdamW without warmup collapses, with warmup trains, "
        "AdamW² without warmup trains as well (3 runs on the embedded KJV text, then a comparison).",
    )
    parser.add_argument(
        "--out",
        default="runs/demo",
        help="directory for the runs and the comparison (default runs/demo)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_STEPS} steps per run instead of 1000 (smoke use, < 3 min)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=0,
        help="steps per run (overrides --quick; warmup stays 10%% of it)",
    )
    parser.add_argument(
        "--sigma-reparam", action="store_true", help="also run σReparam without warmup"
    )
    parser.add_argument(
        "--lr-sweep",
        nargs="*",
        type=float,
        metavar="LR",
        help="run the methods over these peak LRs (default 5e-3 1e-2 2e-2) and plot final loss vs LR",
    )
    parser.add_argument(
        "--fresh", action="store_true", help="move earlier demo runs aside and train again"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (default: all cores)"
    )
    parser.add_argument(
        "overrides", nargs="*", help="extra key=value overrides applied to every run"
    )
    args = parser.parse_args(argv)

    import torch

    from weyl.train.exit_codes import INTERRUPTED, PREEMPTED

    if args.threads:
        torch.set_num_threads(args.threads)
    out = demo_dir(Path(args.out), args.quick, args.steps)
    methods = list(METHODS) + ([SIGMA_REPARAM] if args.sigma_reparam else [])
    overrides = list(args.overrides)
    steps = args.steps or (QUICK_STEPS if args.quick else 0)
    if steps:
        overrides += shortened_run(steps)
    sweep = args.lr_sweep if args.lr_sweep is None or args.lr_sweep else [5e-3, 1e-2, 2e-2]
    started = time.time()

    def train(method: str, run_dir: Path, extra: list[str]) -> None:
        if steps and "_warmup" in method:
            extra = [*extra, f"schedule.warmup_steps={int(steps * WARMUP_FRACTION)}"]
        if args.fresh:
            _move_aside(run_dir)
        print(f"\n== {method} -> {run_dir}", flush=True)
        t0 = time.time()
        try:
            result = run_recipe(
                f"cpu/{method}", run_dir, overrides + extra, progress=not args.no_progress
            )
        except RunConfigChanged as exc:
            raise DemoStop(
                f"{run_dir} holds an earlier demo run with a different config "
                f"({describe_changes(exc.changes)}); pass --fresh to move it aside and train "
                "again, or --out DIR for a separate demo"
            ) from None
        print(
            f"   {result.get('state')} at step {result.get('step')} in {time.time() - t0:.0f} s",
            flush=True,
        )
        code = int(result.get("exit_code", 0))
        if code in (INTERRUPTED, PREEMPTED):
            # The user (or the scheduler) asked to stop: the demo stops too, resumable as is.
            print(
                f"weyl demo: {result.get('state')} at step {result.get('step')} of {method}; "
                "checkpoint saved; rerun the same command to continue",
                file=sys.stderr,
            )
            raise SystemExit(code)

    from weyl.report.run_reports import compare_runs
    from weyl.report.tables import summary_table
    from weyl.train.config_drift import describe_changes
    from weyl.train.launch import RunConfigChanged

    if sweep is not None:
        rows = []
        for lr in sweep:
            for method in methods:
                run_dir = out / "lr_sweep" / f"{method}_lr{lr:g}"
                train(method, run_dir, [f"optim.lr={lr}", f"schedule.min_lr={lr / 100}"])
                rows.append({"method": method, "lr": lr, "final_loss": final_loss(run_dir)})
        from weyl.report.figures import plot_final_loss_vs_lr

        png = plot_final_loss_vs_lr(rows, out / "lr_sweep" / "final_loss_vs_lr.png")
        (out / "lr_sweep" / "lr_sweep.json").write_text(json.dumps(rows, indent=1) + "\n")
        print("\n| method | peak LR | final loss |\n|---|---|---|")
        for row in rows:
            print(f"| {row['method']} | {row['lr']:g} | {row['final_loss']:.4f} |")
        print(f"\nfigure: {png}")
        return 0

    runs = {}
    for method in methods:
        runs[method] = out / method
        train(method, runs[method], [])
    summaries, png = compare_runs([runs[m] for m in methods], out / "compare")
    checks = verdicts(runs)
    total = time.time() - started
    print("\n" + summary_table(summaries))
    print("\n" + verdict_table(checks))
    print(
        f"\nfigure: {png}\ntotal wall time: {total / 60:.1f} min on {torch.get_num_threads()} CPU threads"
    )
    (out / "verdict.md").write_text(
        summary_table(summaries)
        + "\n\n"
        + verdict_table(checks)
        + f"\n\ntotal wall time: {total / 60:.1f} min\n"
    )
    return 0 if all(c.passed for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
