"""Markdown tables of run summaries (``weyl compare``, ``weyl demo``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = [
    ("run", "run"),
    ("final_loss", "final loss"),
    ("final_eval_loss", "eval loss"),
    ("final_top1", "top-1 %"),
    ("max_qk_sigma1", "max σ₁(WqᵀWk)"),
    ("min_entropy", "min entropy"),
    ("final_entropy", "final entropy"),
    ("final_sec_s2", "SEC(d_q,2) end"),
    ("outcome", "outcome"),
    ("throughput", "throughput"),
    ("wall_s", "wall s"),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.4g}" if abs(value) < 100 else f"{value:.0f}"
        return f"{value:.3g}"
    return str(value)


def outcome(summary: dict[str, Any]) -> str:
    """ "crashed at step N", "finished", "preempted at step N", ..."""
    state = summary.get("state")
    if state == "crashed":
        return f"crashed at step {summary.get('crashed_at')}"
    return str(state)


def summary_table(summaries: Sequence[dict[str, Any]]) -> str:
    """A Markdown table, one row per run; columns no run has a value for are left out."""
    rows = [{**s, "outcome": outcome(s)} for s in summaries]
    columns = [(key, title) for key, title in COLUMNS if any(r.get(key) is not None for r in rows)]
    lines = ["| " + " | ".join(title for _, title in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines)
