"""σ₁ helpers against torch.linalg.svdvals and hand-computed matrix views."""

from __future__ import annotations

import importlib
import itertools
import math

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


def _plain_power_iteration(m: torch.Tensor, v: torch.Tensor, iters: int) -> float:
    """The paper's power iteration written out: the reference Lanczos must never fall below."""
    m, v = m.double(), v.double()
    sigma = 0.0
    for _ in range(iters):
        u = m @ v
        u = u / u.norm()
        w = m.t() @ u
        sigma = w.norm().item()
        v = w / sigma
    return sigma


def _hard_spectra() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    left, _ = torch.linalg.qr(torch.randn(96, 40, generator=g))
    right, _ = torch.linalg.qr(torch.randn(64, 40, generator=g))
    near = torch.linspace(1.0, 0.1, 40)
    near[1] = 0.999  # near-degenerate top two
    return {
        "sign-like": torch.randint(0, 2, (96, 64), generator=g).float() * 2 - 1,
        "near-degenerate": left @ torch.diag(near) @ right.t(),
        "rank-1": torch.outer(torch.randn(96, generator=g), torch.randn(64, generator=g)),
        "gaussian": torch.randn(96, 64, generator=g),
        "zero": torch.zeros(96, 64),
    }


@pytest.mark.parametrize("name", list(_hard_spectra()))
@pytest.mark.parametrize("steps", [1, 2, 3, 40])
def test_lanczos_is_a_lower_bound_at_least_power_iteration(name, steps):
    m = _hard_spectra()[name]
    exact = torch.linalg.svdvals(m.double())[0].item()
    v = initial_vector(64, seed=11)
    power = _plain_power_iteration(m, v.clone(), steps) if exact > 0 else 0.0
    est = spectral_norm_estimates([m], [ShardLayout(m.shape)], [v], iters=steps).item()
    assert est <= exact * (1 + 1e-5) + 1e-12
    assert est >= power * (1 - 1e-5)
    if steps == 40 or name == "rank-1":
        assert est == pytest.approx(exact, rel=1e-4, abs=1e-12)
    assert v.norm().item() == pytest.approx(1.0, rel=1e-5)


def test_warm_start_keeps_the_ritz_vector():
    m = _hard_spectra()["near-degenerate"]
    v = initial_vector(64, seed=2)
    spectral_norm_estimates([m], [ShardLayout(m.shape)], [v], iters=30)
    top = torch.linalg.svd(m.double())[2][0].float()
    # Near-degenerate top two: the kept vector lies in their span, and restarts from it are exact.
    span = torch.linalg.svd(m.double())[2][:2].float()
    assert (span @ v).norm().item() == pytest.approx(1.0, abs=1e-3)
    again = spectral_norm_estimates([m], [ShardLayout(m.shape)], [v], iters=1).item()
    assert again == pytest.approx(torch.linalg.svdvals(m.double())[0].item(), rel=1e-4)
    assert top.norm().item() == pytest.approx(1.0, rel=1e-5)


def test_per_tensor_step_counts_equal_separate_calls():
    g = torch.Generator().manual_seed(3)
    mats = [torch.randn(40, 24, generator=g), torch.randn(40, 24, generator=g)]
    vecs = [initial_vector(24, seed=i) for i in range(2)]
    alone = [v.clone() for v in vecs]
    est = spectral_norm_estimates(mats, [ShardLayout(m.shape) for m in mats], vecs, iters=[1, 3])
    for m, v, k, e in zip(mats, alone, (1, 3), est.tolist()):
        one = spectral_norm_estimates([m], [ShardLayout(m.shape)], [v], iters=k).item()
        assert e == pytest.approx(one, rel=1e-6)


@pytest.mark.parametrize("steps", [1, 3])
def test_batched_path_does_the_row_block_paths_maths(monkeypatch, steps):
    """The accelerator path (stacked bmm), forced on the CPU, against the CPU row-block path."""
    sn = importlib.import_module("weyl.optim.spectral_norm")  # the module, not the function
    hard = _hard_spectra()
    g = torch.Generator().manual_seed(5)
    # Two same-shape matrices share a bmm bucket; 700×100 is row-blocked on the CPU path.
    mats = [hard["sign-like"], hard["gaussian"], hard["zero"], torch.randn(700, 100, generator=g)]
    mats.append(torch.randn(30, 100, generator=g).to(torch.bfloat16))
    layouts = [ShardLayout(m.shape) for m in mats]
    vec_a = [initial_vector(m.shape[1], seed=i) for i, m in enumerate(mats)]
    vec_b = [v.clone() for v in vec_a]
    results = []
    for forced, vecs in ((False, vec_a), (True, vec_b)):
        monkeypatch.setattr(sn, "_FORCE_STACKED", forced)
        first = spectral_norm_estimates(mats, layouts, vecs, iters=steps)
        second = spectral_norm_estimates(mats, layouts, vecs, iters=steps)  # from the kept vectors
        results.append((first, second))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(vec_a, vec_b):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


def test_row_shard_path_with_one_rank_does_the_same_maths():
    """The all-reduce path (one rank of gloo, in process) against the CPU row-block path."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        hard = _hard_spectra()
        g = torch.Generator().manual_seed(9)
        mats = [hard["near-degenerate"], hard["zero"], torch.randn(700, 100, generator=g)]
        mats.append(torch.randn(5, generator=g))  # a vector: its norm is summed over ranks
        vec_a = [
            None if m.ndim == 1 else initial_vector(m.shape[1], seed=i) for i, m in enumerate(mats)
        ]
        vec_b = [None if v is None else v.clone() for v in vec_a]
        plain = [ShardLayout(m.shape) for m in mats]
        sharded = [ShardLayout(m.shape, dist.group.WORLD) for m in mats]
        for _ in range(2):  # the second call starts from the kept vectors
            a = spectral_norm_estimates(mats, plain, vec_a, iters=[1, 3, 3, 1])
            b = spectral_norm_estimates(mats, sharded, vec_b, iters=[1, 3, 3, 1])
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        for va, vb in zip(vec_a, vec_b):
            if va is not None:
                torch.testing.assert_close(va, vb, rtol=1e-4, atol=1e-5)
    finally:
        dist.destroy_process_group()


def test_prepare_forms_each_row_block_once_before_it_is_read():
    """A caller forms its matrices through ``prepare`` (AdamW² forms ΔW so on the CPU path)."""
    g = torch.Generator().manual_seed(4)
    # 700×100 is read in row blocks, 30×100 whole; a vector is formed whole.
    mats = [torch.randn(700, 100, generator=g), torch.randn(30, 100, generator=g)]
    mats.append(torch.randn(9, generator=g))
    blank = [torch.full_like(m, math.nan) for m in mats]
    calls: list[tuple[int, int, int]] = []

    def prepare(i: int, lo: int, hi: int) -> None:
        calls.append((i, lo, hi))
        view = blank[i].view(-1, mats[i].shape[-1]) if blank[i].ndim == 2 else blank[i]
        source = mats[i].view_as(view)
        assert view[lo:hi].isnan().all()  # formed once, just before its first read
        view[lo:hi] = source[lo:hi]

    layouts = [ShardLayout(m.shape) for m in mats]
    vec_a = [initial_vector(100, seed=1), initial_vector(100, seed=2), None]
    vec_b = [None if v is None else v.clone() for v in vec_a]
    formed = spectral_norm_estimates(blank, layouts, vec_a, iters=3, prepare=prepare)
    plain = spectral_norm_estimates(mats, layouts, vec_b, iters=3)
    assert torch.equal(formed, plain)
    for i, m in enumerate(mats):
        torch.testing.assert_close(blank[i], m, rtol=0, atol=0)
        covered = sorted((lo, hi) for j, lo, hi in calls if j == i)
        assert covered[0][0] == 0 and covered[-1][1] == (m.shape[0] if m.ndim == 2 else m.numel())
        assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
    assert len({(i, lo) for i, lo, _ in calls}) == len(calls) > 3


def test_two_threads_split_the_products_and_give_bitwise_the_same_estimates(monkeypatch):
    sn = importlib.import_module("weyl.optim.spectral_norm")
    g = torch.Generator().manual_seed(6)
    mats = [torch.randn(700, 100, generator=g), torch.randn(300, 100, generator=g)]
    mats += [torch.randn(40, 64, generator=g), torch.randn(64, 40, generator=g)]
    layouts = [ShardLayout(m.shape) for m in mats]
    vec_a = [initial_vector(m.shape[1], seed=i) for i, m in enumerate(mats)]
    vec_b = [v.clone() for v in vec_a]
    one = [spectral_norm_estimates(mats, layouts, vec_a, iters=[3, 1, 3, 2]) for _ in range(2)]
    monkeypatch.setattr(sn, "_MIN_THREADED_NUMEL", 0)
    torch.set_num_threads(2)
    try:
        two = [spectral_norm_estimates(mats, layouts, vec_b, iters=[3, 1, 3, 2]) for _ in range(2)]
        assert torch.get_num_threads() == 2  # restored after the single-threaded shares
    finally:
        torch.set_num_threads(1)
    assert sn._HELPER is not None  # the second thread really ran
    for a, b in zip(one, two):
        assert torch.equal(a, b)
    for a, b in zip(vec_a, vec_b):
        assert torch.equal(a, b)
