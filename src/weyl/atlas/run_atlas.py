"""One atlas from grid to outputs: check every method composes, train what is not done yet,
read every run directory, write ``atlas.json``, ``atlas.md`` and the figures (and wandb).

The default grid is the CPU demo's character GPT (``recipe=cpu/gpt_cpu``: 4 layers, context 64,
4 heads, the KJV text) at three widths; :data:`DEFAULT` and :data:`QUICK` say what was chosen
and why.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from weyl.atlas.grid import AtlasGrid, RunPoint
from weyl.atlas.methods import METHODS
from weyl.atlas.outputs import atlas_markdown, log_to_wandb, write_figures, write_json
from weyl.atlas.reference_levels import data_unigram_loss, uniform_causal_entropy
from weyl.atlas.results import method_summaries, missing_row, run_row
from weyl.atlas.scheduler import Job, is_done, run_pool, uses_hydra_launcher
from weyl.train.exit_codes import CRASHED

DEFAULT_RECIPE = "cpu/gpt_cpu"


@dataclass(frozen=True)
class GridDefaults:
    """The grid ``weyl atlas`` runs when no option narrows it."""

    methods: tuple[str, ...]
    lrs: tuple[float, ...]
    widths: tuple[int, ...]
    seeds: tuple[int, ...]
    steps: int


# The LR grid spans "every method trains" to "all but the most stable diverge": at 1e-2 AdamW
# without warmup already stalls near the unigram loss (eval 3.03 at 100 steps, widths 64-256, while
# Muon reached 2.15-2.21 and AdamW² 2.26-3.26), and at 2e-2 the CPU demo saw even the warmup run
# collapse (1000 steps, NOTES.md); 1e-3 is below every measured failure. Widths 64 and 128 only:
# one thread trains width 64 at ~19k tokens/s (AdamW; Muon ~12.6k), width 128 at ~10.4k (Muon
# ~2.0k: torch's Muon runs its Newton-Schulz steps in bfloat16, slow on CPU), width 256 at a
# quarter of width 128 and Muon there ~12× slower still. With ~7 s of start-up per run, the 80
# runs below take ~3700 core-seconds (~31 min on 2 cores, quiet machine); width 256 would not
# fit the 60-minute budget. Add --widths 64 128 256 where time allows.
DEFAULT = GridDefaults(
    methods=tuple(METHODS),
    lrs=(1e-3, 3e-3, 1e-2, 3e-2),
    widths=(64, 128),
    seeds=(0,),
    steps=200,
)
# --quick (target: 10 minutes on 2 cores): the narrowest width and three LRs, every method.
QUICK = GridDefaults(
    methods=tuple(METHODS),
    lrs=(1e-3, 1e-2, 3e-2),
    widths=(64,),
    seeds=(0,),
    steps=200,
)


@dataclass
class AtlasResult:
    """What an atlas wrote and how its runs went."""

    rows: list[dict[str, Any]]
    summaries: list[dict[str, Any]]
    paths: dict[str, Path]
    trained: int
    reused: int
    wall_s: float


def check_grid(grid: AtlasGrid, runs_dir: Path) -> tuple[float, Any]:
    """Compose and validate the first run of every method (a bad override fails here, in one
    line, before anything trains); returns (ℓ₀ = ln(vocab), the first run's typed config)."""
    from weyl.config import ConfigError, compose_run
    from weyl.config.compose import without_hydra_overrides
    from weyl.train.crash_guard import chance_loss

    first = None
    for method in grid.methods:
        point = RunPoint(method, grid.widths[0], grid.lrs[0], grid.seeds[0])
        overrides = without_hydra_overrides(grid.run_overrides(point, runs_dir))
        try:
            config = compose_run(overrides).config
        except ConfigError as exc:
            raise ConfigError(f"method {method}: {exc}") from None
        first = first or config
    vocab = getattr(first.model, "vocab_size", None)
    if not isinstance(vocab, int) or vocab < 2:
        raise ConfigError(
            f"--recipe {grid.recipe}: the atlas needs a language model (model.vocab_size) for ℓ₀"
        )
    return chance_loss(vocab), first


def prepare_embedded_data(config: Any) -> None:
    """Prepare the embedded KJV text once, before runs start side by side (each run would
    otherwise prepare it on first use, and two at once would race on the same files)."""
    from weyl.data.factory import TOKEN_SET_FILES, text_data_dir

    data = config.data
    if getattr(data, "name", None) != "kjv":
        return
    out_dir = text_data_dir(data)
    if not any((out_dir / name).exists() for name in TOKEN_SET_FILES):
        from weyl.data.kjv import prepare_kjv

        prepare_kjv(out_dir, data.tokenizer, progress=False)


def recipe_steps(recipe: str) -> int:
    """``trainer.max_steps`` of ``recipe`` (the atlas's step budget when ``--steps`` is not given)."""
    from weyl.config import compose_run

    return int(compose_run([f"recipe={recipe}"]).config.trainer.max_steps)


def recipe_width(recipe: str) -> int:
    """The recipe's ``model.n_embd`` (the atlas's width when ``--widths`` is not given)."""
    from weyl.config import ConfigError, compose_run

    width = getattr(compose_run([f"recipe={recipe}"]).config.model, "n_embd", None)
    if not isinstance(width, int):
        raise ConfigError(f"--recipe {recipe}: the atlas varies model.n_embd, a GPT's width")
    return width


def earlier_invocations(path: Path) -> list[dict[str, Any]]:
    """What earlier ``weyl atlas`` commands into this directory trained (from its atlas.json; a
    file from before the list was kept counts as one command), so a rerun that only reuses runs
    keeps the time the training took. [] when there is no readable file."""
    import json

    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(previous, dict):
        return []
    if isinstance(previous.get("invocations"), list):
        return [i for i in previous["invocations"] if isinstance(i, dict)]
    if isinstance(previous.get("trained"), int) and isinstance(previous.get("wall_s"), float):
        return [{k: previous[k] for k in ("trained", "reused", "wall_s") if k in previous}]
    return []


def _jobs(grid: AtlasGrid, runs_dir: Path, logs: Path, todo: Sequence[RunPoint]) -> list[Job]:
    if uses_hydra_launcher(grid.extra):
        methods = list(dict.fromkeys(p.method for p in todo))
        return [
            Job(m, ["train", "-m", *grid.sweep_overrides(m, runs_dir)], logs / f"{m}.log")
            for m in methods
        ]
    return [
        Job(p.name, ["train", *grid.run_overrides(p, runs_dir)], logs / f"{p.name}.log")
        for p in todo
    ]


def run_atlas(
    grid: AtlasGrid,
    out: Path,
    workers: int,
    say: Callable[[str], None] = print,
) -> AtlasResult:
    """Train what the atlas in ``out`` lacks and write its outputs; see :mod:`weyl.atlas`."""
    from weyl.report.run_data import load_run
    from weyl.train.run_status import read_status

    started = time.time()
    runs_dir = (out / "runs").resolve()
    init_loss, first = check_grid(grid, runs_dir)
    points = grid.points()
    todo = [p for p in points if not is_done(read_status(runs_dir / p.name))]
    reused = len(points) - len(todo)
    say(
        f"weyl atlas: {len(points)} runs ({len(grid.methods)} methods × {len(grid.lrs)} LRs × "
        f"{len(grid.widths)} widths × {len(grid.seeds)} seeds, {grid.steps} steps each) in "
        f"{out}; {reused} done already, {len(todo)} to train, {workers} at a time"
    )
    jobs = _jobs(grid, runs_dir, out / "logs", todo)
    if jobs and not uses_hydra_launcher(grid.extra):
        prepare_embedded_data(first)
    done = 0

    def on_exit(job: Job, code: int, seconds: float) -> None:
        nonlocal done
        done += 1
        state = (read_status(runs_dir / job.name) or {}).get("state", f"exit {code}")
        note = "" if code in (0, CRASHED) else f" (exit {code}; log: {job.log})"
        say(f"  [{done}/{len(jobs)}] {job.name}: {state} in {seconds:.0f} s{note}")

    if jobs:
        run_pool(jobs, workers, on_exit)

    unigram = data_unigram_loss(first.data, first.model.vocab_size)
    uniform_entropy = uniform_causal_entropy(first.model.block_size)
    rows = []
    for p in points:
        point = {"method": p.method, "width": p.width, "lr": p.lr, "seed": p.seed, "run": p.name}
        run_dir = runs_dir / p.name
        if (run_dir / "metrics.jsonl").is_file():
            rows.append(run_row(load_run(run_dir), point, init_loss, unigram, uniform_entropy))
        else:
            state = (read_status(run_dir) or {}).get("state", "not run")
            rows.append(missing_row(point, init_loss, state))
    summaries = method_summaries(rows, init_loss)
    figures = write_figures(rows, summaries, init_loss, out, unigram)
    wall = time.time() - started
    header = [
        f"Recipe `{grid.recipe}`, {grid.steps} steps per run, methods {', '.join(grid.methods)}, "
        f"peak LRs {', '.join(f'{lr:g}' for lr in grid.lrs)}, widths "
        f"{', '.join(map(str, grid.widths))}, seeds {', '.join(map(str, grid.seeds))}, "
        f"schedule floor {grid.min_lr:g}"
        + (f", overrides `{' '.join(grid.extra)}`" if grid.extra else "")
        + ".",
        f"{len(points)} runs: {len(todo)} trained by this command, {reused} reused; "
        f"wall time of this command {wall / 60:.1f} min with {workers} runs at a time.",
    ]
    invocations = [
        *earlier_invocations(out / "atlas.json"),
        {"trained": len(todo), "reused": reused, "wall_s": wall, "workers": workers},
    ]
    earlier = [i for i in invocations[:-1] if i.get("trained")]
    if earlier:
        header.append(
            "Earlier commands into this directory trained "
            + "; ".join(
                f"{i['trained']} runs in {i['wall_s'] / 60:.1f} min"
                + (f" ({i['workers']} at a time)" if i.get("workers") else "")
                for i in earlier
            )
            + "."
        )
    (out / "atlas.md").write_text(
        atlas_markdown(rows, summaries, init_loss, figures, header, unigram, uniform_entropy)
    )
    write_json(
        out / "atlas.json",
        {
            "grid": {**asdict(grid), "min_lr": grid.min_lr},
            "init_loss": init_loss,
            "init_loss_is": f"ln(model.vocab_size = {first.model.vocab_size})",
            "unigram_loss": unigram,
            "uniform_attention_entropy": uniform_entropy,
            "runs": rows,
            "methods": summaries,
            "figures": {name: path.name for name, path in figures.items()},
            "trained": len(todo),
            "reused": reused,
            "wall_s": wall,
            "invocations": invocations,
        },
    )
    paths = {"atlas.md": out / "atlas.md", "atlas.json": out / "atlas.json", **figures}
    wandb_cfg = first.logger.wandb
    if wandb_cfg.enabled:
        folder = log_to_wandb(
            rows, summaries, figures, out, project=wandb_cfg.project, mode=wandb_cfg.mode
        )
        if folder is not None:
            paths["wandb"] = folder
    return AtlasResult(rows, summaries, paths, len(todo), reused, wall)
