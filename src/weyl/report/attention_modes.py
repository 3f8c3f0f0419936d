"""Appendix G's simulated attention modes as a text table and a figure (``weyl modes``)."""

from __future__ import annotations

from pathlib import Path

from weyl.diagnostics.modes import ModeResult


def modes_table(results: list[ModeResult]) -> str:
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


def plot_attention_modes(results: list[ModeResult], path: Path) -> None:
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
