"""LR sensitivity (Wortsman et al. 2023) on hand-made loss-vs-LR curves."""

from __future__ import annotations

import math

import pytest

from weyl.report.lr_sensitivity import best_loss, capped_losses, lr_sensitivity

L0 = math.log(65)  # loss at initialisation of a 65-character model


def test_u_shaped_curve_with_a_diverged_run_capped_at_l0():
    curve = {1e-3: 2.0, 3e-3: 1.5, 1e-2: 1.8, 3e-2: float("nan")}
    # by hand: capped [2.0, 1.5, 1.8, ℓ₀], best 1.5 → mean of [0.5, 0, 0.3, ℓ₀ − 1.5]
    expected = (0.5 + 0.0 + 0.3 + (L0 - 1.5)) / 4
    assert lr_sensitivity(curve, L0) == pytest.approx(expected)
    assert best_loss(curve, L0) == 1.5


def test_crashes_and_losses_above_l0_all_count_as_l0():
    curve = {1e-3: 1.5, 1e-2: None, 3e-2: float("inf"), 1e-1: 9.0}
    assert capped_losses(curve, L0) == {1e-3: 1.5, 1e-2: L0, 3e-2: L0, 1e-1: L0}
    assert lr_sensitivity(curve, L0) == pytest.approx(3 * (L0 - 1.5) / 4)


def test_flat_curve_is_insensitive_and_a_wider_stable_range_scores_lower():
    assert lr_sensitivity({1e-3: 1.6, 1e-2: 1.6, 1e-1: 1.6}, L0) == 0.0
    narrow = {1e-3: 1.6, 1e-2: 1.5, 1e-1: float("nan")}
    wide = {1e-3: 1.6, 1e-2: 1.5, 1e-1: 1.9}
    assert lr_sensitivity(wide, L0) < lr_sensitivity(narrow, L0)


def test_all_diverged_scores_zero_with_best_loss_l0():
    curve = {1e-2: None, 1e-1: float("nan")}
    assert lr_sensitivity(curve, L0) == 0.0
    assert best_loss(curve, L0) == L0


@pytest.mark.parametrize(
    ("curve", "init", "match"),
    [
        ({}, L0, "final_losses is empty"),
        ({1e-3: 1.0}, float("nan"), "init_loss"),
        ({1e-3: 1.0}, 0.0, "init_loss"),
        ({0.0: 1.0}, L0, "peak LR 0.0"),
    ],
)
def test_bad_input_is_one_line(curve, init, match):
    with pytest.raises(ValueError, match=match) as err:
        lr_sensitivity(curve, init)
    assert "\n" not in str(err.value)
