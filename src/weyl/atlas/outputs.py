"""The atlas's outputs: ``atlas.json``, ``atlas.md`` and five figures, and the same in wandb.

Figures (one PNG each, headless):
(a) ``final_loss_vs_lr.png``: final eval loss vs peak LR, one panel per width, one line per
    method (mean over seeds); a run that crashed or never produced a loss is drawn at ℓ₀ with ×;
(b) ``lr_sensitivity.png``: Wortsman et al.'s LR sensitivity per method and width;
(c) ``stable_lr.png``: each method's largest stable LR per width;
(d) ``best_loss.png``: each method's best loss over the grid, per width;
(e) ``failure_modes.png``: per width a method × LR map of the failure modes, each cell
    annotated with σ₁(WqᵀWk) and the smallest head entropy at the run's last diagnostics (what
    the mode is judged on; the extremes over the run are in ``atlas.md``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from weyl.atlas.methods import METHODS
from weyl.atlas.reference_levels import STALL_MARGIN, UNIFORM_FRACTION
from weyl.atlas.results import (
    COLLAPSE,
    FAILURE_MODES,
    LOGIT_DIVERGENCE,
    LOSS_SPIKE,
    NO_FAILURE,
    RUN_ERROR,
    STALL,
    UNIFORM_ATTENTION,
)

FIGURES = {
    "final_loss_vs_lr": "(a) final eval loss vs peak LR",
    "lr_sensitivity": "(b) LR sensitivity",
    "stable_lr": "(c) largest stable LR",
    "best_loss": "(d) best loss",
    "failure_modes": "(e) failure modes",
}
_MODE_COLOURS = {
    NO_FAILURE: "#4daf4a",
    COLLAPSE: "#e41a1c",
    LOGIT_DIVERGENCE: "#984ea3",
    LOSS_SPIKE: "#ff7f00",
    STALL: "#ffd92f",
    UNIFORM_ATTENTION: "#80b1d3",
    RUN_ERROR: "#999999",
}


def _label(method: str) -> str:
    return METHODS[method].label if method in METHODS else method


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _ordered(values: Sequence[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def plot_loss_vs_lr(
    rows: Sequence[dict], init_loss: float, path: Path, unigram: float | None = None
) -> Path:
    """(a): one panel per width, one line per method; crashed / lossless runs as × at ℓ₀; the
    unigram loss ℓ₁ as a dashed line when known."""
    widths = sorted({r["width"] for r in rows})
    methods = _ordered(r["method"] for r in rows)
    fig, axes = plt.subplots(1, len(widths), figsize=(5 * len(widths), 4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, width in zip(axes[0], widths):
        for i, method in enumerate(methods):
            mine = [r for r in rows if r["method"] == method and r["width"] == width]
            lrs = sorted({r["lr"] for r in mine})
            means = [
                sum(r["counted_loss"] for r in mine if r["lr"] == lr)
                / sum(1 for r in mine if r["lr"] == lr)
                for lr in lrs
            ]
            colour = colours(i % 10)
            ax.plot(lrs, means, "o-", color=colour, label=_label(method), markersize=4)
            failed = [r["lr"] for r in mine if r["final_eval_loss"] is None]
            if failed:
                ax.plot(failed, [init_loss] * len(failed), "x", color=colour, markersize=9)
        ax.axhline(init_loss, color="grey", linestyle=":", linewidth=1)
        if unigram is not None:
            ax.axhline(unigram, color="grey", linestyle="--", linewidth=1, label="unigram loss ℓ₁")
        ax.set_xscale("log")
        ax.set_title(f"width {width}")
        ax.set_xlabel("peak learning rate")
        ax.set_ylabel("final eval loss (× = crashed, counted as ℓ₀)")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def _bars(summaries: Sequence[dict], key: str, ylabel: str, path: Path, log: bool = False) -> Path:
    widths = sorted({s["width"] for s in summaries})
    methods = _ordered(s["method"] for s in summaries)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(methods) * max(1, len(widths) / 2)), 4))
    step = 0.8 / len(widths)
    for j, width in enumerate(widths):
        xs, ys = [], []
        for i, method in enumerate(methods):
            value = next(
                (s[key] for s in summaries if s["method"] == method and s["width"] == width), None
            )
            if value is not None:
                xs.append(i + (j - (len(widths) - 1) / 2) * step)
                ys.append(value)
        ax.bar(xs, ys, width=step, label=f"width {width}")
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([_label(m) for m in methods], rotation=30, ha="right", fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_failure_modes(rows: Sequence[dict], path: Path) -> Path:
    """(e): per width a method × LR grid coloured by failure mode (first seed), annotated
    with σ₁(WqᵀWk) and the smallest entropy at the run's end."""
    widths = sorted({r["width"] for r in rows})
    methods = _ordered(r["method"] for r in rows)
    lrs = sorted({r["lr"] for r in rows})
    fig, axes = plt.subplots(
        1,
        len(widths),
        figsize=(1.3 * len(lrs) * len(widths) + 2, 0.5 * len(methods) + 1.5),
        squeeze=False,
    )
    for ax, width in zip(axes[0], widths):
        for i, method in enumerate(methods):
            for j, lr in enumerate(lrs):
                at = [r for r in rows if (r["method"], r["width"], r["lr"]) == (method, width, lr)]
                if not at:
                    continue
                row = min(at, key=lambda r: r["seed"])
                ax.add_patch(plt.Rectangle((j, i), 1, 1, color=_MODE_COLOURS[row["failure_mode"]]))
                qk, ent = row.get("final_qk_sigma1"), row.get("final_min_entropy")
                text = f"σ {qk:.3g}\nH {ent:.2g}" if qk is not None and ent is not None else "—"
                ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=6)
        ax.set_xlim(0, len(lrs))
        ax.set_ylim(len(methods), 0)
        ax.set_xticks([j + 0.5 for j in range(len(lrs))])
        ax.set_xticklabels([f"{lr:g}" for lr in lrs], fontsize=7)
        ax.set_yticks([i + 0.5 for i in range(len(methods))])
        ax.set_yticklabels([_label(m) for m in methods], fontsize=7)
        ax.set_xlabel("peak learning rate")
        ax.set_title(f"width {width}\nσ: σ₁(WqᵀWk), H: min entropy, at the end", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=_MODE_COLOURS[m]) for m in FAILURE_MODES]
    axes[0][-1].legend(handles, FAILURE_MODES, fontsize=6, loc="upper left", bbox_to_anchor=(1, 1))
    return _save(fig, path)


def write_figures(
    rows: Sequence[dict],
    summaries: Sequence[dict],
    init_loss: float,
    out: Path,
    unigram: float | None = None,
) -> dict[str, Path]:
    """The five PNGs into ``out``; returns name → path."""
    any_stable = any(s["largest_stable_lr"] is not None for s in summaries)
    return {
        "final_loss_vs_lr": plot_loss_vs_lr(rows, init_loss, out / "final_loss_vs_lr.png", unigram),
        "lr_sensitivity": _bars(
            summaries, "lr_sensitivity", "LR sensitivity (nats)", out / "lr_sensitivity.png"
        ),
        "stable_lr": _bars(
            summaries,
            "largest_stable_lr",
            "largest stable peak LR (none: no bar)",
            out / "stable_lr.png",
            log=any_stable,
        ),
        "best_loss": _bars(summaries, "best_loss", "best final eval loss", out / "best_loss.png"),
        "failure_modes": plot_failure_modes(rows, out / "failure_modes.png"),
    }


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


FAIRNESS = """## Fairness

Every run of this atlas trains the same model on the same data in the same order (the recipe's
data pipeline and the grid's seed), for the same number of steps, with the same batch, betas,
weight decay, cosine schedule and schedule floor; only the method and the peak LR differ. Each
method keeps its published settings and nothing else is tuned per method: warmup (when on) is
linear over 10% of the steps; AdamW²'s τ is the recipe's (0.02 for the CPU GPT, the value the
demo measured for a 1000-step horizon, where the paper's 0.01 learns slowly); z-loss uses PaLM's
1e-4; Muon follows torch.optim.Muon's documented `match_rms_adamw` LR convention, so the same
peak LR and weight decay are AdamW's; σReparam, QK-norm, StableAdamW, RAdam and GI-Adam run
with their defaults. Any change to the grid (LRs, widths, steps, overrides) applies to every
method alike. ℓ₀ (the loss a crashed run counts as) is ln(vocab), the loss of the uniform
prediction at initialisation."""


def _levels_paragraph(unigram: float | None, uniform_entropy: float | None) -> list[str]:
    text = (
        "Failure modes, in the order they are tested: attention-entropy collapse (a layer ends "
        "with entropy < 0.2 and SEC(d_q,2) > 0.95); output-logit divergence (crashed on a "
        "non-finite or diverging loss, or ended at or above ℓ₀); loss spike (stopped by the "
        "spike guard, or a logged loss 1.5× the lowest before it)"
    )
    if unigram is not None:
        text += (
            f"; stall at unigram loss (final eval loss ≥ ℓ₁ − {STALL_MARGIN:g}, with "
            f"ℓ₁ = {unigram:.4f} the validation loss of predicting the training split's token "
            "frequencies whatever the context)"
        )
    if uniform_entropy is not None:
        text += (
            f"; attention stays uniform (every layer ends with entropy ≥ {UNIFORM_FRACTION:g} × "
            f"{uniform_entropy:.4f}, the entropy of a uniform causal map: the model learned "
            "without using its attention)"
        )
    return [text + ".", ""]


def atlas_markdown(
    rows: Sequence[dict],
    summaries: Sequence[dict],
    init_loss: float,
    figures: dict[str, Path],
    header: Sequence[str],
    unigram: float | None = None,
    uniform_entropy: float | None = None,
) -> str:
    """``atlas.md``: the grid, the per-method table, the per-run table, the figures, fairness."""
    lines = ["# Stability atlas", "", *header, ""]
    lines += [
        "## Per method and width",
        "",
        f"LR sensitivity (Wortsman et al. 2023) with ℓ₀ = ln(vocab) = {init_loss:.4f}; "
        "stable: finished, final loss below ℓ₀ and no layer ending with entropy < 0.2 and "
        "SEC(d_q,2) > 0.95 (every seed).",
        "",
        "| method | width | LR sensitivity | best loss | at LR | largest stable LR |",
        "|---|---|---|---|---|---|",
    ]
    for s in sorted(summaries, key=lambda s: (s["width"], s["lr_sensitivity"])):
        lines.append(
            f"| {_label(s['method'])} | {s['width']} | {s['lr_sensitivity']:.4f} | "
            f"{s['best_loss']:.4f} | {s['best_lr']:g} | {_fmt(s['largest_stable_lr'])} |"
        )
    lines += [
        "",
        "## Every run",
        "",
        *_levels_paragraph(unigram, uniform_entropy),
        "σ₁(WqᵀWk) and the smallest head entropy: over the run's diagnostics, and at its last.",
        "",
        "| run | status | final eval loss | failure mode | max σ₁(WqᵀWk) | σ₁ at end | "
        "min entropy | at end | max SEC(d_q,2) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['status']} | {_fmt(r['final_eval_loss'])} | "
            f"{r['failure_mode']} | {_fmt(r['max_qk_sigma1'])} | {_fmt(r.get('final_qk_sigma1'))} | "
            f"{_fmt(r['min_entropy'])} | {_fmt(r.get('final_min_entropy'))} | "
            f"{_fmt(r['max_sec_s2'])} |"
        )
    lines += ["", "## Figures", ""]
    for name, path in figures.items():
        lines.append(f"![{FIGURES[name]}]({path.name})")
    lines += ["", FAIRNESS, ""]
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON through a temporary file (a killed atlas leaves the old one)."""
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)


def log_to_wandb(
    rows: Sequence[dict],
    summaries: Sequence[dict],
    figures: dict[str, Path],
    out: Path,
    project: str = "weyl",
    mode: str | None = None,
) -> Path | None:
    """One wandb run ``atlas`` (group ``atlas``) with both tables and the figures; returns its
    directory (None under a ``wandb agent``, whose sweep groups the runs itself). Offline unless
    ``mode`` / ``WANDB_MODE`` says otherwise."""
    import os

    if os.environ.get("WANDB_SWEEP_ID"):
        return None  # the agent's run id is the grid point's run, not this summary's
    import wandb

    from weyl.train.loggers import resolve_wandb_mode

    columns = ["method", "width", "lr", "seed", "status", "final_eval_loss", "failure_mode"]
    columns += ["max_qk_sigma1", "final_qk_sigma1", "min_entropy", "final_min_entropy"]
    columns += ["max_sec_s2"]
    run = wandb.init(
        project=project,
        group="atlas",
        name=f"atlas-{out.name}",
        job_type="atlas",
        dir=str(out),
        mode=resolve_wandb_mode(mode),
    )
    runs_table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
    keys = ["method", "width", "lr_sensitivity", "best_loss", "best_lr", "largest_stable_lr"]
    method_table = wandb.Table(columns=keys, data=[[s.get(k) for k in keys] for s in summaries])
    run.log(
        {
            "atlas/runs": runs_table,
            "atlas/methods": method_table,
            **{f"atlas/{name}": wandb.Image(str(path)) for name, path in figures.items()},
        }
    )
    folder = Path(run.dir).parent
    run.finish()
    return folder
