"""Failure modes, stable runs and per-method summaries of the atlas on hand-made metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from weyl.atlas.reference_levels import uniform_causal_entropy, unigram_loss
from weyl.atlas.results import (
    COLLAPSE,
    LOGIT_DIVERGENCE,
    LOSS_SPIKE,
    NO_FAILURE,
    RUN_ERROR,
    STALL,
    UNIFORM_ATTENTION,
    failure_mode,
    method_summaries,
    missing_row,
    run_row,
)
from weyl.report.run_data import RunData

L0 = math.log(128)


def layer_diag(step: int, entropy: list[float], sec2: list[float], qk: float) -> dict:
    """One diagnostics record: per-layer entropy / SEC(d_q,2) means and the run-wide extremes."""
    record = {"step": step, "attn/qk_sigma1_max": qk, "attn/entropy_min": min(entropy) / 2}
    for i, (e, s) in enumerate(zip(entropy, sec2)):
        record |= {
            f"attn/L{i:02d}/entropy_mean": e,
            f"attn/L{i:02d}/sec_s2_mean": s,
            f"attn/L{i:02d}/sec_s2_max": min(1.0, s + 0.01),
        }
    return record


def make_run(losses, diags, state="finished", reason=None, eval_loss=None) -> RunData:
    records = [{"step": 10 * (i + 1), "loss": loss} for i, loss in enumerate(losses)]
    records += diags
    if eval_loss is not None:
        records.append({"step": 10 * len(losses), "eval/loss": eval_loss})
    records.sort(key=lambda r: r["step"])
    status = {"state": state, "step": 10 * len(losses), "reason": reason}
    return RunData(Path("hand_made"), records, status, {})


HEALTHY = [layer_diag(0, [3.0, 3.0], [0.3, 0.3], 0.1), layer_diag(50, [1.0, 0.8], [0.6, 0.7], 5.0)]
COLLAPSED = [
    layer_diag(0, [3.0, 3.0], [0.3, 0.3], 0.1),
    layer_diag(50, [0.05, 0.9], [0.98, 0.7], 70),
]


def test_a_healthy_run_has_no_failure():
    run = make_run([4.0, 3.0, 2.5, 2.2, 2.0], HEALTHY, eval_loss=2.05)
    assert failure_mode(run, L0) == NO_FAILURE


def test_entropy_collapse_needs_low_entropy_and_concentrated_sec_in_one_layer():
    run = make_run([4.0, 3.0, 2.5, 2.4, 2.4], COLLAPSED, eval_loss=2.4)
    assert failure_mode(run, L0) == COLLAPSE
    # Low entropy with spread spectral energy (SEC 0.5) is not the collapse signature.
    spread = [layer_diag(50, [0.05, 0.9], [0.5, 0.7], 70)]
    assert failure_mode(make_run([4.0, 3.0, 2.5], spread, eval_loss=2.4), L0) == NO_FAILURE
    # Collapse in the middle of the run, recovered at the end: the final diagnostics decide.
    recovered = [*COLLAPSED, layer_diag(60, [0.6, 0.9], [0.9, 0.7], 20)]
    assert failure_mode(make_run([4.0, 3.0, 2.5], recovered, eval_loss=2.3), L0) == NO_FAILURE


def test_crashes_by_the_guards_reason():
    spike = make_run([4.0, 3.0], HEALTHY, "crashed", "loss spike: 9 > 3 x running median 3")
    assert failure_mode(spike, L0) == LOSS_SPIKE
    nan = make_run([4.0, 3.0], HEALTHY, "crashed", "non-finite loss (nan)")
    assert failure_mode(nan, L0) == LOGIT_DIVERGENCE
    bound = make_run([4.0, 3.0], HEALTHY, "crashed", "divergence: loss 60 > 48.5 = 10 x ln(128)")
    assert failure_mode(bound, L0) == LOGIT_DIVERGENCE
    # A crash after the attention collapsed is explained by the collapse.
    assert failure_mode(make_run([4.0], COLLAPSED, "crashed", "non-finite loss"), L0) == COLLAPSE


def test_finished_runs_that_did_not_learn_or_spiked():
    stuck = make_run([4.9, 4.9, 4.95], HEALTHY, eval_loss=4.9)  # never below ln(128) = 4.852
    assert failure_mode(stuck, L0) == LOGIT_DIVERGENCE
    spiked = make_run([4.0, 2.0, 3.2, 2.1, 1.9], HEALTHY, eval_loss=1.95)  # 3.2 > 1.5 x 2.0
    assert failure_mode(spiked, L0) == LOSS_SPIKE
    wobble = make_run([4.0, 2.0, 2.9, 2.1, 1.9], HEALTHY, eval_loss=1.95)  # 2.9 < 3.0
    assert failure_mode(wobble, L0) == NO_FAILURE
    assert failure_mode(make_run([4.0], HEALTHY, "failed", "OSError"), L0) == RUN_ERROR


def test_unigram_loss_is_the_cross_entropy_of_smoothed_training_frequencies():
    train = np.array([0, 0, 0, 1, 1, 2], dtype=np.uint16)
    val = np.array([0, 1, 3, 0], dtype=np.uint16)
    vocab = 4
    # By hand: add-one counts 4, 3, 2, 1 over 10.
    p = {0: 0.4, 1: 0.3, 2: 0.2, 3: 0.1}
    expected = -sum(math.log(p[int(t)]) for t in val) / len(val)
    assert unigram_loss(train, val, vocab) == pytest.approx(expected, rel=1e-12)


def test_a_large_split_is_counted_on_evenly_spaced_chunks(monkeypatch):
    import weyl.atlas.reference_levels as levels

    tokens = np.arange(1000) % 7
    monkeypatch.setattr(levels, "COUNT_CHUNK", 10)
    monkeypatch.setattr(levels, "MAX_COUNTED", 1000)  # small enough: every token, once
    assert np.array_equal(np.concatenate(levels.counted_chunks(tokens)), tokens)
    monkeypatch.setattr(levels, "MAX_COUNTED", 40)  # 4 chunks of 10, first and last at the ends
    chunks = levels.counted_chunks(tokens)
    assert [c.tolist() for c in chunks] == [tokens[s : s + 10].tolist() for s in (0, 330, 660, 990)]
    by_hand = np.zeros(7)
    for c in chunks:
        for t in c:
            by_hand[t] += 1
    assert np.array_equal(levels.token_counts(tokens, 7), by_hand)


@pytest.mark.parametrize("context", [1, 2, 7, 64])
def test_uniform_causal_entropy_is_the_entropy_of_a_uniform_causal_map(context):
    keep = torch.tril(torch.ones(context, context, dtype=torch.float64))
    probs = keep / keep.sum(-1, keepdim=True)
    rows = -(probs * torch.where(probs > 0, probs.log(), 0.0)).sum(-1)
    assert uniform_causal_entropy(context) == pytest.approx(rows.mean().item(), rel=1e-12)


def test_a_stall_at_the_unigram_loss_and_attention_that_stayed_uniform():
    unigram, h_u = 3.02, uniform_causal_entropy(64)
    stalled = make_run([4.0, 3.1, 3.05], HEALTHY, eval_loss=3.0)  # within 0.05 of ℓ₁
    assert failure_mode(stalled, L0, unigram, h_u) == STALL
    assert failure_mode(stalled, L0) == NO_FAILURE  # no level given, nothing to test against
    learned = make_run([4.0, 3.0, 2.5], HEALTHY, eval_loss=2.9)
    assert failure_mode(learned, L0, unigram, h_u) == NO_FAILURE
    flat = [
        layer_diag(0, [h_u, h_u], [0.3, 0.3], 0.05),
        layer_diag(50, [h_u, 0.999 * h_u], [0.9, 0.9], 0.01),
    ]
    uniform = make_run([4.0, 3.0, 2.4], flat, eval_loss=2.35)
    assert failure_mode(uniform, L0, unigram, h_u) == UNIFORM_ATTENTION
    # One layer that learned to attend is enough to use the attention.
    one_used = [layer_diag(50, [h_u, 0.99 * h_u], [0.9, 0.9], 0.01)]
    assert (
        failure_mode(make_run([4.0, 2.4], one_used, eval_loss=2.35), L0, unigram, h_u) == NO_FAILURE
    )
    row = run_row(uniform, {"method": "sigma_reparam"}, L0, unigram, h_u)
    assert row["failure_mode"] == UNIFORM_ATTENTION
    assert row["max_qk_sigma1"] == 0.05 and row["final_qk_sigma1"] == 0.01


def test_run_row_reads_the_run_extremes_and_counts_crashes_as_l0():
    point = {"method": "adamw", "width": 64, "lr": 0.01, "seed": 0}
    row = run_row(make_run([4.0, 3.0, 2.5], COLLAPSED, eval_loss=2.4), point, L0)
    assert row["final_eval_loss"] == 2.4 and row["counted_loss"] == 2.4
    assert row["max_qk_sigma1"] == 70 and row["min_entropy"] == 0.025
    assert row["max_sec_s2"] == pytest.approx(0.99)
    assert row["collapsed_layers"] == ["L00"] and not row["stable"]
    crashed = run_row(make_run([4.0], HEALTHY, "crashed", "non-finite loss"), point, L0)
    assert crashed["final_eval_loss"] is None and crashed["counted_loss"] == L0
    healthy = run_row(make_run([4.0, 2.0], HEALTHY, eval_loss=2.0), point, L0)
    assert healthy["stable"] and healthy["failure_mode"] == NO_FAILURE
    assert missing_row(point, L0)["counted_loss"] == L0


def _row(method, lr, loss, stable, seed=0, width=64):
    counted = L0 if loss is None else min(loss, L0)
    point = {"method": method, "width": width, "lr": lr, "seed": seed}
    return {**point, "counted_loss": counted, "stable": stable}


def test_method_summaries_by_hand():
    rows = [
        _row("a", 1e-3, 2.0, True),
        _row("a", 1e-2, 1.5, True),
        _row("a", 1e-1, None, False),  # crashed: ℓ₀
        _row("b", 1e-3, 2.2, True, seed=0),
        _row("b", 1e-3, 2.4, True, seed=1),
        _row("b", 1e-2, 1.8, True, seed=0),
        _row("b", 1e-2, 1.6, False, seed=1),  # one unstable seed makes the LR unstable
    ]
    by = {s["method"]: s for s in method_summaries(rows, L0)}
    # a: mean of [2.0 - 1.5, 0, L0 - 1.5]
    assert by["a"]["lr_sensitivity"] == pytest.approx((0.5 + 0.0 + (L0 - 1.5)) / 3)
    assert by["a"]["best_loss"] == 1.5 and by["a"]["best_lr"] == 1e-2
    assert by["a"]["largest_stable_lr"] == 1e-2
    # b: seeds averaged per LR: 2.3 and 1.7.
    assert by["b"]["lr_sensitivity"] == pytest.approx((2.3 - 1.7) / 2)
    assert by["b"]["best_loss"] == pytest.approx(1.7)
    assert by["b"]["stable_lrs"] == [1e-3] and by["b"]["largest_stable_lr"] == 1e-3
