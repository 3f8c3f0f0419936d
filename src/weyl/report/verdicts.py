"""Verdicts on the paper's claim, read from the runs' own logs (``weyl demo``'s verdict table).

Three runs with the same model, data, seed and peak LR: AdamW without warmup, AdamW with
warmup, AdamW² without warmup. The claim holds when the no-warmup AdamW run's attention
collapses (entropy near 0, spectral energy of WqᵀWk in ≤2 directions) and it ends clearly
worse, while AdamW² without warmup does not collapse and matches AdamW with warmup.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weyl.report.run_data import RunData

# The runs verdicts() reads, named as their recipes in recipes/cpu/.
METHODS = ("adamw_nowarmup", "adamw_warmup", "adamw2_nowarmup")

# The signature the demo must show (the thresholds).
COLLAPSE_ENTROPY = 0.2  # nats: some layer of AdamW no-warmup ends below this
COLLAPSE_SEC2 = 0.95  # ... with SEC(d_q, 2) above this
CRASH_LOSS_GAP = 0.20  # AdamW no-warmup ends >= 20% worse than AdamW + warmup
HEALTHY_ENTROPY = 0.5  # AdamW² no-warmup: every layer above this
HEALTHY_SEC2 = 0.9  # ... and SEC(d_q, 2) below this in every layer
MATCH_LOSS_GAP = 0.03  # AdamW² no-warmup within 3% of AdamW + warmup


@dataclass
class Verdict:
    """One checked claim: what was measured, the threshold and whether it held."""

    claim: str
    measured: str
    passed: bool


def _as_run(run: RunData | Path) -> RunData:
    from weyl.report.run_data import RunData, load_run

    return run if isinstance(run, RunData) else load_run(run)


def final_layer_values(run: RunData | Path, suffix: str) -> dict[str, float]:
    """Each layer's value of ``attn/<layer>/<suffix>`` at the last step that logged it."""
    run = _as_run(run)
    values = {}
    for layer in run.layers():
        last = run.last(f"attn/{layer}/{suffix}")
        if last is not None:
            values[layer] = last
    return values


def final_loss(run: RunData | Path) -> float:
    """The run's final eval loss (train loss when it never evaluated; inf when it crashed)."""
    from weyl.report.run_data import run_summary

    summary = run_summary(_as_run(run))
    if summary["state"] == "crashed":
        return math.inf
    value = (
        summary["final_eval_loss"]
        if summary["final_eval_loss"] is not None
        else summary["final_loss"]
    )
    return float(value) if value is not None else math.inf


def verdicts(runs: dict[str, Path]) -> list[Verdict]:
    """Check the paper's signature on the three demo runs."""
    data = {name: _as_run(path) for name, path in runs.items()}  # each metrics file read once
    loss = {name: final_loss(run) for name, run in data.items()}
    ent = {name: final_layer_values(run, "entropy_mean") for name, run in data.items()}
    sec2 = {name: final_layer_values(run, "sec_s2_mean") for name, run in data.items()}
    base = loss["adamw_warmup"]
    out = []

    collapsed = [
        layer
        for layer, e in ent["adamw_nowarmup"].items()
        if e < COLLAPSE_ENTROPY and sec2["adamw_nowarmup"].get(layer, 0.0) > COLLAPSE_SEC2
    ]
    worst = min(ent["adamw_nowarmup"], key=ent["adamw_nowarmup"].get, default=None)
    measured = (
        f"{worst}: entropy {ent['adamw_nowarmup'][worst]:.3f}, SEC(d_q,2) {sec2['adamw_nowarmup'].get(worst, float('nan')):.3f}"
        if worst
        else "no diagnostics logged"
    )
    out.append(
        Verdict(
            f"AdamW no-warmup collapses: some layer ends with entropy < {COLLAPSE_ENTROPY} and SEC(d_q,2) > {COLLAPSE_SEC2}",
            measured,
            bool(collapsed),
        )
    )
    gap = loss["adamw_nowarmup"] / base - 1.0
    out.append(
        Verdict(
            f"AdamW no-warmup ends >= {CRASH_LOSS_GAP:.0%} worse than AdamW + warmup",
            f"{loss['adamw_nowarmup']:.4f} vs {base:.4f} ({gap:+.1%})",
            gap >= CRASH_LOSS_GAP,
        )
    )
    e2, s2 = ent["adamw2_nowarmup"], sec2["adamw2_nowarmup"]
    out.append(
        Verdict(
            f"AdamW² no-warmup does not collapse: every layer entropy > {HEALTHY_ENTROPY}, SEC(d_q,2) < {HEALTHY_SEC2}",
            f"min entropy {min(e2.values(), default=float('nan')):.3f}, max SEC(d_q,2) {max(s2.values(), default=float('nan')):.3f}",
            bool(e2) and min(e2.values()) > HEALTHY_ENTROPY and max(s2.values()) < HEALTHY_SEC2,
        )
    )
    gap2 = loss["adamw2_nowarmup"] / base - 1.0
    out.append(
        Verdict(
            f"AdamW² no-warmup within {MATCH_LOSS_GAP:.0%} of AdamW + warmup, or better",
            f"{loss['adamw2_nowarmup']:.4f} vs {base:.4f} ({gap2:+.1%})",
            abs(gap2) <= MATCH_LOSS_GAP or gap2 < 0,
        )
    )
    return out


def verdict_table(checks: list[Verdict]) -> str:
    """Markdown table of the checked claims."""
    lines = ["| claim | measured | holds |", "|---|---|---|"]
    lines += [f"| {c.claim} | {c.measured} | {'yes' if c.passed else 'NO'} |" for c in checks]
    return "\n".join(lines)
