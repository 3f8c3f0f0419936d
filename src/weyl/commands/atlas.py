"""``weyl atlas``: every warmup-free stabilizer's learning-rate sensitivity, side by side.

A grid of methods × peak LRs × widths × seeds (:mod:`weyl.atlas`), each point an ordinary
``weyl train`` run in ``<out>/runs/<method>_w<width>_lr<lr>_s<seed>``, then ``atlas.json``,
``atlas.md`` and five figures in ``<out>``. Rerunning the command reuses every finished (or
crashed) run and continues the others from their checkpoints, so a killed atlas continues where
it stopped. ``hydra/launcher=slurm hydra.launcher.<key>=...`` sends the same grid to a cluster.

Exit codes: 0 when the outputs were written (crashed runs are results), 2 for bad input, 130 /
3 when the atlas was stopped (Ctrl-C / SIGTERM; rerun the command to continue).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from weyl.commands.command_parser import CommandParser


def _parser() -> CommandParser:
    from weyl.atlas.methods import METHODS
    from weyl.atlas.run_atlas import DEFAULT, DEFAULT_RECIPE, QUICK

    def fmt(values) -> str:
        return " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)

    parser = CommandParser(
        prog="weyl atlas",
        description="Stability atlas: train every warmup-free stabilizer over a grid of peak "
        "LRs and widths on the same model, data and seed, and report each method's LR "
        "sensitivity (Wortsman et al. 2023), stable LR range, best loss and failure modes.",
    )
    parser.add_argument(
        "--out", help="atlas directory (default runs/atlas, runs/atlas_quick with --quick)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"widths {fmt(QUICK.widths)} and {QUICK.steps} steps per run instead of widths "
        f"{fmt(DEFAULT.widths)} and {DEFAULT.steps} steps",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="M",
        help=f"methods (default all): {' '.join(METHODS)}",
    )
    parser.add_argument(
        "--lrs", nargs="+", type=float, metavar="LR", help=f"peak LRs (default {fmt(DEFAULT.lrs)})"
    )
    parser.add_argument(
        "--widths",
        nargs="+",
        type=int,
        metavar="W",
        help=f"model.n_embd values (default {fmt(DEFAULT.widths)}; the recipe's own with --recipe)",
    )
    parser.add_argument(
        "--seeds", nargs="+", type=int, metavar="S", help=f"seeds (default {fmt(DEFAULT.seeds)})"
    )
    parser.add_argument(
        "--steps",
        type=int,
        help=f"steps per run (default {DEFAULT.steps}; the recipe's trainer.max_steps with --recipe)",
    )
    parser.add_argument(
        "--recipe",
        default=DEFAULT_RECIPE,
        help=f"the recipe every run starts from (default {DEFAULT_RECIPE}: the CPU demo's GPT)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="runs at a time, one thread each (default: the number of cores); with a Hydra "
        "launcher, method sweeps submitted at a time (default: all)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="extra key=value overrides for every run (logger=wandb, hydra/launcher=slurm ...)",
    )
    return parser


def main(argv: list[str]) -> int:
    """Entry point of ``weyl atlas``: 0 when the outputs were written, 2 on bad input."""
    from weyl.atlas.grid import AtlasGrid
    from weyl.atlas.run_atlas import DEFAULT, DEFAULT_RECIPE, QUICK, recipe_steps, recipe_width
    from weyl.atlas.scheduler import AtlasStopped, uses_hydra_launcher
    from weyl.config import ConfigError

    args = _parser().parse_args(argv)
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"weyl atlas: {bad[0]!r} is not a key=value override", file=sys.stderr)
        return 2
    if args.jobs < 0:
        print(f"weyl atlas: --jobs {args.jobs} must be >= 1", file=sys.stderr)
        return 2
    base = QUICK if args.quick else DEFAULT
    own = args.recipe == DEFAULT_RECIPE
    try:
        grid = AtlasGrid(
            recipe=args.recipe,
            methods=args.methods or list(base.methods),
            lrs=args.lrs or list(base.lrs),
            widths=args.widths or (list(base.widths) if own else [recipe_width(args.recipe)]),
            seeds=args.seeds or list(base.seeds),
            steps=args.steps or (base.steps if own else recipe_steps(args.recipe)),
            extra=list(args.overrides),
        )
    except (ValueError, ConfigError) as exc:
        print(f"weyl atlas: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out or ("runs/atlas_quick" if args.quick else "runs/atlas"))
    hydra = uses_hydra_launcher(grid.extra)
    workers = args.jobs or (len(grid.methods) if hydra else len(os.sched_getaffinity(0)))

    from weyl.atlas.run_atlas import run_atlas

    try:
        out.mkdir(parents=True, exist_ok=True)
        result = run_atlas(grid, out, workers)
    except ConfigError as exc:
        print(f"weyl atlas: {exc}", file=sys.stderr)
        return 2
    except AtlasStopped as stop:
        if stop.code == 2:  # a run refused its config: its own one line says why
            print(f"weyl atlas: {str(stop).removeprefix('weyl train: ')}", file=sys.stderr)
            return 2
        print(
            f"weyl atlas: stopped ({stop}); finished runs are kept, rerun the same command to "
            "continue",
            file=sys.stderr,
        )
        return stop.code
    print(
        "\n| method | width | LR sensitivity | best loss | largest stable LR |\n|---|---|---|---|---|"
    )
    for s in result.summaries:
        stable = s["largest_stable_lr"]
        print(
            f"| {s['method']} | {s['width']} | {s['lr_sensitivity']:.4f} | {s['best_loss']:.4f} "
            f"| {'—' if stable is None else f'{stable:g}'} |"
        )
    print(f"\natlas: {result.paths['atlas.md']} ({result.paths['atlas.json'].name} beside it)")
    pngs = [str(p) for p in result.paths.values() if p.suffix == ".png"]
    print(f"figures: {', '.join(pngs)}")
    print(f"total wall time: {result.wall_s / 60:.1f} min, {workers} runs at a time")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
