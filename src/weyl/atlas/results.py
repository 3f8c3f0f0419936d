"""What each atlas run measured, read from its own run directory, and the per-method summaries.

Per run (:func:`run_row`): the final eval loss (the last ``eval/loss`` of ``metrics.jsonl``), the
outcome (``status.json``), the largest σ₁(WqᵀWk) (``attn/qk_sigma1_max``), the smallest head
entropy (``attn/entropy_min``) and the largest SEC(d_q,2) of any head (``attn/Lxx/sec_s2_max``)
over the run, each layer's final entropy and SEC(d_q,2) (``attn/Lxx/entropy_mean``,
``attn/Lxx/sec_s2_mean``, as the demo's verdicts read them), and the failure mode.

ℓ₀, the loss at initialisation of the LR-sensitivity metric, is ln(vocab): the cross-entropy of
the uniform prediction an initialised LM makes (:func:`weyl.train.crash_guard.chance_loss`). It is
the same for every run and needs no extra eval at step 0. A run that crashed, failed or ended
with a non-finite loss counts as ℓ₀ (:func:`weyl.report.lr_sensitivity.capped_losses`).

Two more reference levels (:mod:`weyl.atlas.reference_levels`) name what a run that trained
without failing is stuck at: the unigram loss ℓ₁ (a stall) and the uniform attention entropy
(attention that never left its initial, near-uniform pattern).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from weyl.atlas.reference_levels import STALL_MARGIN, UNIFORM_FRACTION
from weyl.report.lr_sensitivity import best_loss, lr_sensitivity
from weyl.report.run_data import RunData
from weyl.report.verdicts import COLLAPSE_ENTROPY, COLLAPSE_SEC2, final_layer_values

COLLAPSE = "attention-entropy collapse"
LOGIT_DIVERGENCE = "output-logit divergence"
LOSS_SPIKE = "loss spike"
STALL = "stall at unigram loss"
UNIFORM_ATTENTION = "attention stays uniform"
NO_FAILURE = "none"
RUN_ERROR = "error"  # the run stopped on an exception: no training outcome to classify
FAILURE_MODES = (
    COLLAPSE,
    LOGIT_DIVERGENCE,
    LOSS_SPIKE,
    STALL,
    UNIFORM_ATTENTION,
    NO_FAILURE,
    RUN_ERROR,
)

# A logged training loss this many times the lowest one logged before it is a spike (the crash
# guard's own spike test stops a run at 3× its running median; this one also catches the
# smaller spikes a run recovers from).
SPIKE_RISE = 1.5
DONE_STATES = ("finished", "crashed")  # a result; any other state is trained again


def collapsed_layers(run: RunData) -> list[str]:
    """Layers whose last diagnostics show entropy < 0.2 with SEC(d_q,2) > 0.95 (the demo's
    collapse signature)."""
    entropy = final_layer_values(run, "entropy_mean")
    sec2 = final_layer_values(run, "sec_s2_mean")
    return [
        layer
        for layer, value in entropy.items()
        if value < COLLAPSE_ENTROPY and sec2.get(layer, 0.0) > COLLAPSE_SEC2
    ]


def _has_spike(losses: Sequence[float]) -> bool:
    lowest = math.inf
    for loss in losses:
        if loss > SPIKE_RISE * lowest:
            return True
        lowest = min(lowest, loss)
    return False


def failure_mode(
    run: RunData,
    init_loss: float,
    unigram: float | None = None,
    uniform_entropy: float | None = None,
) -> str:
    """Why the run failed, from its diagnostics and outcome; :data:`NO_FAILURE` when it did not.

    In order: attention collapsed at its last diagnostics (whatever happened after, the
    attention explains it); the crash guard stopped it (a spike → loss spike; a non-finite loss
    or one above its bound → output-logit divergence: a cross-entropy far above ln(vocab) needs
    large, confidently wrong logits); it ended at or above ℓ₀ or non-finite (output-logit
    divergence); its training loss spiked and recovered (loss spike); its final eval loss is
    within STALL_MARGIN of the unigram loss ``unigram`` or above it (stall); every layer ended
    with uniform attention (entropy ≥ UNIFORM_FRACTION · ``uniform_entropy``). The last two are
    only tested when their level is given.
    """
    if collapsed_layers(run):
        return COLLAPSE
    state = (run.status or {}).get("state")
    reason = str((run.status or {}).get("reason") or "")
    if state == "crashed":
        return LOSS_SPIKE if reason.startswith("loss spike") else LOGIT_DIVERGENCE
    if state != "finished":
        return RUN_ERROR
    final = run.last("eval/loss")
    _, losses = run.series("loss")
    if final is None or not final < init_loss or (losses and not losses[-1] < init_loss):
        return LOGIT_DIVERGENCE
    if _has_spike(losses):
        return LOSS_SPIKE
    if unigram is not None and final >= unigram - STALL_MARGIN:
        return STALL
    entropy = final_layer_values(run, "entropy_mean").values()
    if uniform_entropy is not None and entropy:
        floor = UNIFORM_FRACTION * uniform_entropy
        return UNIFORM_ATTENTION if all(v >= floor for v in entropy) else NO_FAILURE
    return NO_FAILURE


def run_row(
    run: RunData,
    point: dict[str, Any],
    init_loss: float,
    unigram: float | None = None,
    uniform_entropy: float | None = None,
) -> dict[str, Any]:
    """One run's entry of ``atlas.json``: ``point`` (method, width, lr, seed, run name) plus what
    it measured; the levels are :func:`failure_mode`'s."""
    status = run.status or {}
    state = status.get("state", "not started")
    final = run.last("eval/loss") if state == "finished" else None
    _, qk = run.series("attn/qk_sigma1_max")
    _, entropy = run.series("attn/entropy_min")
    _, sec2 = run.layer_extreme("sec_s2_max", "max")
    final_entropy = final_layer_values(run, "entropy_mean")
    final_sec2 = final_layer_values(run, "sec_s2_mean")
    collapsed = collapsed_layers(run)
    mode = failure_mode(run, init_loss, unigram, uniform_entropy)
    counted = init_loss if final is None or not math.isfinite(final) else min(final, init_loss)
    return {
        **point,
        "status": state,
        "step": status.get("step"),
        "reason": status.get("reason"),
        "final_eval_loss": final,
        "counted_loss": counted,
        "failure_mode": mode,
        "max_qk_sigma1": max(qk) if qk else None,
        "final_qk_sigma1": qk[-1] if qk else None,
        "min_entropy": min(entropy) if entropy else None,
        "final_min_entropy": entropy[-1] if entropy else None,
        "max_sec_s2": max(sec2) if sec2 else None,
        "final_layer_entropy": final_entropy,
        "final_layer_sec_s2": final_sec2,
        "collapsed_layers": collapsed,
        "stable": state == "finished" and not collapsed and mode != LOGIT_DIVERGENCE,
        "wall_s": run.last("elapsed"),
    }


def missing_row(point: dict[str, Any], init_loss: float, state: str = "not run") -> dict[str, Any]:
    """The entry of a run that left no metrics (it never started): counted as ℓ₀."""
    return {
        **point,
        "status": state,
        "final_eval_loss": None,
        "counted_loss": init_loss,
        "failure_mode": RUN_ERROR,
        "max_qk_sigma1": None,
        "final_qk_sigma1": None,
        "min_entropy": None,
        "final_min_entropy": None,
        "max_sec_s2": None,
        "collapsed_layers": [],
        "stable": False,
    }


def method_summaries(rows: Sequence[dict[str, Any]], init_loss: float) -> list[dict[str, Any]]:
    """Per (method, width): LR sensitivity, best loss, the largest stable LR and the LRs where
    every seed was stable. Seeds are averaged per LR after capping each at ℓ₀."""
    out = []
    keys = list(dict.fromkeys((r["method"], r["width"]) for r in rows))
    for method, width in keys:
        mine = [r for r in rows if r["method"] == method and r["width"] == width]
        lrs = sorted({r["lr"] for r in mine})
        mean_loss = {}
        stable_lrs = []
        for lr in lrs:
            at = [r for r in mine if r["lr"] == lr]
            mean_loss[lr] = sum(r["counted_loss"] for r in at) / len(at)
            if all(r["stable"] for r in at):
                stable_lrs.append(lr)
        out.append(
            {
                "method": method,
                "width": width,
                "lr_sensitivity": lr_sensitivity(mean_loss, init_loss),
                "best_loss": best_loss(mean_loss, init_loss),
                "best_lr": min(lrs, key=lambda lr: mean_loss[lr]),
                "largest_stable_lr": max(stable_lrs) if stable_lrs else None,
                "stable_lrs": stable_lrs,
                "mean_loss_by_lr": {str(lr): loss for lr, loss in mean_loss.items()},
            }
        )
    return out
