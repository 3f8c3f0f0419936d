"""Entropy and effective rank on hand-built maps with known answers."""

import math

import pytest
import torch

from weyl.diagnostics.attention_maps import attention_entropy, effective_rank


def test_uniform_map_has_entropy_log_n() -> None:
    n = 7
    maps = torch.full((2, 3, n, n), 1.0 / n)
    assert torch.allclose(attention_entropy(maps), torch.full((2, 3), math.log(n)))


def test_one_hot_map_has_zero_entropy() -> None:
    n = 6
    one_hot = torch.zeros(n, n)
    one_hot[torch.arange(n), torch.tensor([3, 0, 5, 5, 1, 2])] = 1.0
    got = attention_entropy(one_hot)
    assert got.item() == 0.0
    assert not str(got.item()).startswith("-")  # no negative zero


def test_causal_uniform_rows_give_mean_log_row_length() -> None:
    # row i attends uniformly to i+1 keys; masked entries are exact zeros (0·log 0 = 0)
    n = 9
    causal = torch.tril(torch.ones(n, n))
    causal = causal / causal.sum(-1, keepdim=True)
    expected = sum(math.log(i + 1) for i in range(n)) / n
    assert attention_entropy(causal).item() == pytest.approx(expected, rel=1e-6)


def test_rectangular_map_entropy_by_direct_formula() -> None:
    a = torch.tensor([[0.5, 0.25, 0.25, 0.0], [0.1, 0.2, 0.3, 0.4]])
    row0 = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    row1 = -sum(p * math.log(p) for p in (0.1, 0.2, 0.3, 0.4))
    assert attention_entropy(a).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_effective_rank_identity_is_n_and_rank_one_is_one() -> None:
    n = 12
    assert effective_rank(torch.eye(n)).item() == pytest.approx(n, rel=1e-5)
    # every query attends to key 0: the paper's sparse-yet-low-rank state C
    sink = torch.zeros(n, n)
    sink[:, 0] = 1.0
    assert effective_rank(sink).item() == pytest.approx(1.0, abs=1e-5)
    uniform = torch.full((n, n), 1.0 / n)  # dense yet rank one: state A
    assert effective_rank(uniform).item() == pytest.approx(1.0, abs=1e-4)


def test_effective_rank_hand_value_and_batching() -> None:
    # singular values (3, 1, 0): p = (3/4, 1/4) → exp(H) with H = -(.75 ln .75 + .25 ln .25)
    m = torch.diag(torch.tensor([3.0, 1.0, 0.0]))
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    batch = torch.stack([m, torch.eye(3)]).reshape(2, 1, 3, 3)
    got = effective_rank(batch)
    assert got.shape == (2, 1)
    assert got[0, 0].item() == pytest.approx(expected, rel=1e-5)
    assert got[1, 0].item() == pytest.approx(3.0, rel=1e-5)
    assert math.isnan(effective_rank(torch.zeros(3, 3)).item())


def test_bad_shapes_raise_value_error() -> None:
    with pytest.raises(ValueError, match="N_q, N_k"):
        attention_entropy(torch.ones(4))
    with pytest.raises(ValueError, match="N_q, N_k"):
        effective_rank(torch.ones(4))
