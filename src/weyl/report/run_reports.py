"""A run directory's report and a comparison of runs, written as figures and Markdown.

The library behind ``weyl report`` and ``weyl compare`` (and the demo's comparison): the
paper's figures from the runs' own logs, without wandb.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from weyl.report.run_data import load_run, run_summary
from weyl.report.tables import summary_table


def attention_snapshots(run_dir: Path) -> dict[int, Path]:
    """Saved probe attention maps, step → file (written by the trainer on diagnostic steps)."""
    found = {}
    for path in sorted((run_dir / "attention").glob("step_*.pt")):
        try:
            found[int(path.stem.split("_")[1])] = path
        except (IndexError, ValueError):
            continue
    return found


def report_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    layers: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
) -> dict[str, Path]:
    """Write every per-run figure and ``report.md`` into ``out_dir`` (default RUN_DIR/report)."""
    from weyl.report import figures

    run = load_run(run_dir)
    out = Path(out_dir) if out_dir else run.path / "report"
    chosen = figures.select_layers(run.layers(), layers)
    all_steps = sorted({int(r["step"]) for r in run.records})
    if steps is None and all_steps:
        steps = sorted({all_steps[0], all_steps[len(all_steps) // 2], all_steps[-1]})
    written = {
        "curves": figures.plot_curves(run, out / "curves.png"),
        "spectra": figures.plot_layer_spectra(run, out / "layer_spectra.png"),
        "lr": figures.plot_layer_lr(run, out / "layer_lr.png"),
    }
    per_tensor = figures.plot_tensor_lr(run, out / "lr_per_tensor.png", layers)
    if per_tensor is not None:
        written["fig15"] = per_tensor
    if chosen:
        written["sec"] = figures.plot_sec(run, chosen, steps or [], out / "sec.png")
        for layer in chosen:
            written[f"terms_{layer}"] = figures.plot_terms(run, layer, out / f"terms_{layer}.png")
    snapshots = attention_snapshots(run.path)
    if snapshots:
        import torch

        picks = sorted(
            {min(snapshots, key=lambda s: abs(s - target)) for target in (steps or list(snapshots))}
        )
        for step in picks:
            maps = torch.load(snapshots[step], map_location="cpu", weights_only=True)
            names = figures.select_layers(sorted(maps), layers)
            images = {name: maps[name][0].float().numpy() for name in names}
            written[f"attention_{step}"] = figures.plot_attention_maps(
                images,
                step,
                names,
                out / f"attention_step{step}.png",
                f"{run.name}: probe attention maps (head 0)",
            )
    summary = run_summary(run)
    lines = [f"# Report: {run.name}", "", summary_table([summary]), ""]
    lines += [f"![{key}]({path.name})" for key, path in written.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    written["markdown"] = out / "report.md"
    return written


def compare_runs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> tuple[list[dict], Path]:
    """Overlay the runs' curves into ``compare.png`` and write ``compare.md`` + ``compare.json``."""
    from weyl.report.figures import plot_comparison

    runs = [load_run(d) for d in run_dirs]
    out = Path(out_dir)
    png = plot_comparison(runs, out / "compare.png")
    summaries = [run_summary(r) for r in runs]
    table = summary_table(summaries)
    (out / "compare.md").write_text(f"# Comparison\n\n{table}\n\n![comparison]({png.name})\n")
    (out / "compare.json").write_text(json.dumps(summaries, indent=1) + "\n")
    return summaries, png
