"""σ₁ helpers against torch.linalg.svdvals and hand-computed matrix views."""

from __future__ import annotations

import pytest
import torch

from weyl.optim import ShardLayout, initial_vector, matrix_shape, spectral_norm
from weyl.optim.spectral_norm import spectral_norm_estimates


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((7,), None),
        ((), None),
        ((1, 1, 8), None),  # cls token → vector
        ((1, 5, 8), (5, 8)),  # pos embed → (N, d)
        ((4, 3, 2, 2), (4, 12)),  # conv kernel → (out, in·k·k)
        ((169, 3), (169, 3)),  # relative-position-bias table
        ((6, 1, 8), (6, 8)),
    ],
)
def test_matrix_view_rule(shape, expected):
    assert matrix_shape(shape) == expected


def test_exact_norm_matches_svdvals_and_l2():
    g = torch.Generator().manual_seed(0)
    conv = torch.randn(4, 3, 2, 2, generator=g)
    assert spectral_norm(conv) == pytest.approx(
        torch.linalg.svdvals(conv.reshape(4, 12))[0].item(), rel=1e-5
    )
    beta = torch.randn(9, generator=g)
    assert spectral_norm(beta) == pytest.approx(beta.norm().item(), rel=1e-6)


def test_power_iteration_converges_and_batches_like_one_by_one():
    g = torch.Generator().manual_seed(0)
    # Same-shape small matrices are stacked; the big one goes through a view: both paths.
    mats = [torch.randn(16, 8, generator=g) for _ in range(3)] + [
        torch.randn(300, 256, generator=g)
    ]
    mats.append(torch.randn(16, 8, generator=g).to(torch.bfloat16))
    # Above the stacking limit on CPU: row-blocked, fp32 blocks converted from bf16.
    mats.append(torch.randn(520, 130, generator=g).to(torch.bfloat16))
    exact = [torch.linalg.svdvals(m.float())[0].item() for m in mats]
    layouts = [ShardLayout(m.shape) for m in mats]
    vecs = [initial_vector(m.shape[1], seed=i) for i, m in enumerate(mats)]
    first = spectral_norm_estimates(mats, layouts, vecs, iters=1)
    assert all(f <= e * (1 + 1e-5) for f, e in zip(first.tolist(), exact))  # lower bounds
    est = spectral_norm_estimates(mats, layouts, vecs, iters=200)
    assert est.dtype == torch.float32
    assert est.tolist() == pytest.approx(exact, rel=1e-3)
    for i, m in enumerate(mats):
        v = initial_vector(m.shape[1], seed=i)
        alone = spectral_norm_estimates([m], [ShardLayout(m.shape)], [v], iters=200)
        assert alone.item() == pytest.approx(est[i].item(), rel=1e-5)


def test_zero_matrix_keeps_vector_and_gives_zero():
    v = initial_vector(5, seed=3)
    before = v.clone()
    est = spectral_norm_estimates([torch.zeros(4, 5)], [ShardLayout(torch.Size((4, 5)))], [v])
    assert est.item() == 0.0 and torch.equal(v, before)


def test_initial_vector_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = initial_vector(10, seed=42)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)
    assert torch.equal(a, initial_vector(10, seed=42))
    assert a.norm().item() == pytest.approx(1.0, rel=1e-6)


def test_zero_matrices_among_others_keep_their_vectors_in_one_call():
    g = torch.Generator().manual_seed(1)
    # a small and a row-blocked (> 64K elements) zero matrix between two ordinary ones
    mats = [
        torch.randn(12, 7, generator=g),
        torch.zeros(6, 7),
        torch.zeros(700, 100),
        torch.randn(700, 100, generator=g),
    ]
    vecs = [initial_vector(m.shape[1], seed=i) for i, m in enumerate(mats)]
    before = [v.clone() for v in vecs]
    est = spectral_norm_estimates(mats, [ShardLayout(m.shape) for m in mats], vecs, iters=300)
    assert est[1].item() == 0.0 and est[2].item() == 0.0
    assert torch.equal(vecs[1], before[1]) and torch.equal(vecs[2], before[2])
    for i in (0, 3):
        exact = torch.linalg.svdvals(mats[i].double())[0].item()
        assert est[i].item() == pytest.approx(exact, rel=1e-4)
        assert vecs[i].norm().item() == pytest.approx(1.0, rel=1e-5)
