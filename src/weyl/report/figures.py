"""The paper's figures from run directories: curves (Fig. 1, 4, 15; Fig. 2/3 attention maps).

Every function writes one PNG and returns its path; matplotlib runs headless (Agg).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from weyl.diagnostics.tensor_kinds import FIG15_KINDS, tensor_kind
from weyl.report.run_data import RunData

# Fig. 1's terms in the paper's order; the suffixes are weyl.diagnostics' ``terms/Lxx/<suffix>``.
FIG1_TERMS = [
    ("wq_sigma1", "σ₁(Wq)"),
    ("wk_sigma1", "σ₁(Wk)"),
    ("wv_sigma1", "σ₁(Wv)"),
    ("wo_sigma1", "σ₁(Wo)"),
    ("w1_sigma1", "σ₁(W1)"),
    ("w2_sigma1", "σ₁(W2)"),
    ("gamma1_norm", "‖γ₁‖"),
    ("beta1_norm", "‖β₁‖"),
    ("gamma2_norm", "‖γ₂‖"),
    ("beta2_norm", "‖β₂‖"),
    ("qk_sigma1", "σ₁(WqᵀWk)"),
    ("ov_sigma1", "σ₁(WoWv)"),
    ("ffn_sigma1", "σ₁(W2W1)"),
    ("x_norm", "‖x‖"),
    ("grad_x_norm", "‖∂L/∂x‖"),
]


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mark_crash(ax: plt.Axes, run: RunData, color: str | None = None) -> None:
    if run.crashed_at is not None:
        ax.axvline(run.crashed_at, color=color or "red", linestyle=":", linewidth=1)


def select_layers(layers: Sequence[str], wanted: Sequence[str] | None = None) -> list[str]:
    """First, middle and last layer (the paper's Block 0 / 6 / 11), or the requested ones."""
    if wanted:
        return [name for name in wanted if name in layers]
    if len(layers) <= 3:
        return list(layers)
    return [layers[0], layers[len(layers) // 2], layers[-1]]


def plot_curves(run: RunData, path: Path) -> Path:
    """Training and eval loss, and the scheduled learning rate."""
    fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps, loss = run.series("loss")
    ax_loss.plot(steps, loss, label="train loss")
    eval_steps, eval_loss = run.series("eval/loss")
    if eval_loss:
        ax_loss.plot(eval_steps, eval_loss, "o-", label="eval loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    _mark_crash(ax_loss, run)
    lr_steps, lr = run.series("lr")
    ax_lr.plot(lr_steps, lr)
    ax_lr.set_xlabel("step")
    ax_lr.set_ylabel("scheduled learning rate")
    fig.suptitle(run.name)
    return _save(fig, path)


def plot_terms(run: RunData, layer: str, path: Path) -> Path:
    """Fig. 1: the 15 terms of one block over training (absent terms leave an empty panel)."""
    fig, axes = plt.subplots(3, 5, figsize=(16, 8))
    for ax, (suffix, label) in zip(axes.flat, FIG1_TERMS):
        steps, values = run.series(f"terms/{layer}/{suffix}")
        if values:
            ax.plot(steps, values)
            _mark_crash(ax, run)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
    fig.suptitle(f"{run.name}: training dynamics of block {layer} (Fig. 1)")
    return _save(fig, path)


def sec_at(
    run: RunData, layer: str, step: int, stat: str = "mean"
) -> tuple[list[int], list[float]]:
    """SEC(d_q, s) against s for one layer at the logged step nearest to ``step``."""
    pattern = re.compile(rf"^attn/{layer}/sec_s(\d+)_{stat}$")
    candidates = [r for r in run.records if any(pattern.match(k) for k in r)]
    if not candidates:
        return [], []
    record = min(candidates, key=lambda r: abs(int(r["step"]) - step))
    pairs = sorted(
        (int(m.group(1)), float(v)) for k, v in record.items() if (m := pattern.match(k))
    )
    return [s for s, _ in pairs], [v for _, v in pairs]


def plot_sec(run: RunData, layers: Sequence[str], steps: Sequence[int], path: Path) -> Path:
    """Fig. 4: SEC(d_q, s) vs s for selected blocks at chosen steps (mean over heads)."""
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        for step in steps:
            s_values, sec = sec_at(run, layer, step)
            if sec:
                ax.plot(s_values, sec, "o-", label=f"step {step}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("s")
        ax.set_ylabel("SEC(d_q, s)")
        ax.set_title(f"block {layer}")
        ax.legend(fontsize=8)
    fig.suptitle(f"{run.name}: spectral energy concentration of WqᵀWk (Fig. 4)")
    return _save(fig, path)


def plot_layer_spectra(run: RunData, path: Path) -> Path:
    """σ₁(WqᵀWk) (max over heads) and attention entropy (min over heads) per layer over time."""
    fig, (ax_qk, ax_ent) = plt.subplots(1, 2, figsize=(11, 3.8))
    for layer in run.layers():
        steps, values = run.series(f"attn/{layer}/qk_sigma1_max")
        if values:
            ax_qk.plot(steps, values, label=layer)
        steps, values = run.series(f"attn/{layer}/entropy_min")
        if values:
            ax_ent.plot(steps, values, label=layer)
    ax_qk.set_yscale("log")
    ax_qk.set_ylabel("σ₁(WqᵀWk), max over heads")
    ax_ent.set_ylabel("attention entropy (nats), min over heads")
    for ax in (ax_qk, ax_ent):
        ax.set_xlabel("step")
        _mark_crash(ax, run)
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle(run.name)
    return _save(fig, path)


def plot_layer_lr(run: RunData, path: Path) -> Path:
    """Mean actual learning rate and clip rate of every block against the scheduled LR.

    A per-block summary (``lr/Lxx/effective_mean``, ``lr/Lxx/clip_rate``, logged with the
    diagnostics), for the depth trend; Fig. 15 itself is :func:`plot_tensor_lr`.
    """
    fig, (ax_lr, ax_clip) = plt.subplots(1, 2, figsize=(11, 3.8))
    steps, lr = run.series("lr")
    ax_lr.plot(steps, lr, "k--", label="scheduled")
    layers = sorted(
        {k.split("/")[1] for k in run.metric_keys() if re.match(r"^lr/L\d+/effective_mean$", k)}
    )
    for layer in layers:
        steps, values = run.series(f"lr/{layer}/effective_mean")
        ax_lr.plot(steps, values, label=layer)
        steps, values = run.series(f"lr/{layer}/clip_rate")
        ax_clip.plot(steps, values, label=layer)
    ax_lr.set_ylabel("learning rate (mean over the block's tensors)")
    ax_clip.set_ylabel("fraction of the block's tensors clipped")
    for ax in (ax_lr, ax_clip):
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"{run.name}: mean actual learning rate and clip rate per block")
    return _save(fig, path)


def plot_tensor_lr(run: RunData, path: Path, layers: Sequence[str] | None = None) -> Path | None:
    """Fig. 15: the actual learning rate of each tensor kind, one line per logged block.

    One panel per kind the run logged (γ₁, W_qkv, W_o, γ₂, W₁, W₂; kinds from the tensor's
    name in its block, :mod:`weyl.diagnostics.tensor_kinds`), the scheduled LR dashed, log y.
    Biases and β are logged but not drawn, as in the paper. ``layers`` limits the blocks.
    None (nothing written) when the run logged no per-tensor LR (no clip, or lr_every=0).
    """
    by_kind: dict[str, list[tuple[str, str]]] = {}
    for layer, name in run.tensor_lr_keys():
        if not layers or layer in layers:
            by_kind.setdefault(tensor_kind(name), []).append((layer, name))
    panels = [(kind, label) for kind, label in FIG15_KINDS if kind in by_kind]
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    sched_steps, sched = run.series("lr")
    for ax, (kind, label) in zip(axes.flat, panels):
        ax.plot(sched_steps, sched, "k--", linewidth=1, label="scheduled")
        tensors = by_kind[kind]
        several = len({layer for layer, _ in tensors}) < len(tensors)
        for layer, name in tensors:
            steps, values = run.series(f"lr/{layer}/{name}")
            ax.plot(steps, values, label=f"{layer} {name}" if several else layer)
        ax.set_yscale("log")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        _mark_crash(ax, run)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        fig.delaxes(ax)
    fig.suptitle(f"{run.name}: actual learning rate per tensor (Fig. 15)")
    return _save(fig, path)


def plot_attention_maps(
    maps: dict[str, object], step: int, layers: Sequence[str], path: Path, title: str
) -> Path:
    """Fig. 2/3: the probe sample's attention map (head 0) of selected layers at one step."""
    fig, axes = plt.subplots(1, len(layers), figsize=(3.4 * len(layers), 3.4), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        image = maps[layer]
        ax.imshow(image, cmap="viridis", interpolation="nearest")
        ax.set_title(f"{layer}, step {step}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return _save(fig, path)


def plot_comparison(runs: Sequence[RunData], path: Path) -> Path:
    """Warmup vs no-warmup (or any runs) overlaid: loss, eval, lr, σ₁(WqᵀWk), entropy, SEC."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    panels = [
        ("train loss", lambda r: r.series("loss"), False),
        ("eval loss", lambda r: r.series("eval/loss"), False),
        ("scheduled learning rate", lambda r: r.series("lr"), False),
        ("max σ₁(WqᵀWk) over layers", lambda r: r.series("attn/qk_sigma1_max"), True),
        ("min attention entropy (nats)", lambda r: r.series("attn/entropy_min"), False),
        ("max SEC(d_q, 2) over layers", lambda r: r.layer_extreme("sec_s2_max", "max"), False),
    ]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, get, log) in zip(axes.flat, panels):
        for i, run in enumerate(runs):
            steps, values = get(run)
            color = colors[i % len(colors)]
            if values:
                ax.plot(steps, values, color=color, label=run.name)
            _mark_crash(ax, run, color)
        ax.set_title(title)
        ax.set_xlabel("step")
        if log and any(line.get_ydata().size and min(line.get_ydata()) > 0 for line in ax.lines):
            ax.set_yscale("log")
        if ax.lines:
            ax.legend(fontsize=8)
    return _save(fig, path)


def plot_final_loss_vs_lr(rows: Sequence[dict], path: Path) -> Path:
    """Final loss against peak learning rate, one line per method (the demo's --lr-sweep)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    methods = sorted({row["method"] for row in rows})
    for method in methods:
        points = sorted((row["lr"], row["final_loss"]) for row in rows if row["method"] == method)
        xs = [lr for lr, loss in points if loss is not None and math.isfinite(loss)]
        ys = [loss for _, loss in points if loss is not None and math.isfinite(loss)]
        ax.plot(xs, ys, "o-", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final eval loss (train loss when not evaluated)")
    ax.legend()
    return _save(fig, path)
