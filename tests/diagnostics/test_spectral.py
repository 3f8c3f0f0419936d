"""σ(WqᵀWk), σ(WoWv), σ₁ and SEC against svdvals of the explicitly formed products (fp64)."""

import math

import pytest
import torch

from weyl.diagnostics.spectral import (
    ov_singular_values,
    product_singular_values,
    product_spectral_norm,
    qk_singular_values,
    sec_index,
    spectral_norm,
)

L, H, DQ, D = 2, 3, 8, 48


def _orthonormal(rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(rows, cols, generator=gen, dtype=torch.float64))
    return q


def _heads_with_spectrum(spectrum: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(L, H, d_q, d) weights whose every head has exactly the given singular values."""
    out = torch.empty(L, H, DQ, D, dtype=torch.float64)
    for i in range(L):
        for h in range(H):
            out[i, h] = (
                _orthonormal(DQ, DQ, gen) @ torch.diag(spectrum) @ _orthonormal(D, DQ, gen).T
            )
    return out


def _construction(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed({"random": 0, "low_rank": 1, "ill": 2, "huge": 3}[kind])
    if kind == "random":
        q = torch.randn(L, H, DQ, D, generator=gen, dtype=torch.float64)
        k = torch.randn(L, H, DQ, D, generator=gen, dtype=torch.float64)
    elif kind == "low_rank":
        # rank-2 heads, and one all-zero head (a zero-initialised query projection)
        q = torch.randn(L, H, DQ, 2, generator=gen, dtype=torch.float64) @ torch.randn(
            L, H, 2, D, generator=gen, dtype=torch.float64
        )
        q[1, 2] = 0.0
        k = torch.randn(L, H, DQ, D, generator=gen, dtype=torch.float64)
    elif kind == "ill":
        # condition number 1e6 in each factor: the Gram route would lose everything below
        # ~3e-4·σ₁ in fp32
        q = _heads_with_spectrum(torch.logspace(0, -6, DQ, dtype=torch.float64), gen)
        k = _heads_with_spectrum(torch.logspace(0, -6, DQ, dtype=torch.float64), gen)
    else:
        # σ₁(WqᵀWk) of order 1e5, the scale of a crashed ViT in Fig. 1
        q = 300.0 * torch.randn(L, H, DQ, D, generator=gen, dtype=torch.float64)
        k = 0.05 * torch.randn(L, H, DQ, D, generator=gen, dtype=torch.float64)
    return q, k


def _explicit_qk_svdvals(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(q.mT @ k)[..., :DQ]  # the d×d product, rank <= d_q


@pytest.mark.parametrize("kind", ["random", "low_rank", "ill", "huge"])
def test_qk_singular_values_match_explicit_product(kind: str) -> None:
    q64, k64 = _construction(kind)
    ref = _explicit_qk_svdvals(q64, k64)
    got = qk_singular_values(q64.float(), k64.float())
    assert got.dtype == torch.float32
    assert got.shape == (L, H, DQ)
    scale = ref[..., :1].clamp_min(1e-30)
    err = ((got.double() - ref).abs() / scale).max()
    assert err <= 1e-4, f"{kind}: max error relative to σ₁ = {err:.2e}"
    # per-value relative error, for every σ_i down to 1e-3·σ₁ (the ill-conditioned heads'
    # spectrum spans 1e-12·σ₁ in the product; fp32 cannot resolve values near ε·σ₁)
    resolvable = ref >= 1e-3 * ref[..., :1]
    per_value = ((got.double() - ref).abs() / ref.clamp_min(1e-30))[resolvable & (ref > 0)]
    assert per_value.max() <= 1e-4
    nonzero = ref[..., 0] > 0
    rel1 = ((got[..., 0].double() - ref[..., 0]).abs() / ref[..., 0])[nonzero].max()
    assert rel1 <= 1e-4
    if kind == "low_rank":
        assert got[1, 2].abs().max() == 0.0  # zero head → zero spectrum
        assert (got[0, 0, 2:] / got[0, 0, 0]).max() < 1e-5  # rank 2 recovered


@pytest.mark.parametrize("kind", ["random", "ill"])
def test_sec_index_matches_explicit_energy_ratio(kind: str) -> None:
    q64, k64 = _construction(kind)
    ref_sigma = _explicit_qk_svdvals(q64, k64)
    got_sigma = qk_singular_values(q64.float(), k64.float())
    for s in (1, 2, 4, 8):
        energy = ref_sigma**2
        ref = energy[..., :s].sum(-1) / energy.sum(-1)
        got = sec_index(got_sigma, s)
        assert torch.allclose(got.double(), ref, rtol=1e-4, atol=0)
    assert torch.allclose(sec_index(got_sigma, DQ), torch.ones(L, H))


def test_sec_index_hand_values_and_errors() -> None:
    sigma = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert sec_index(sigma, 1).item() == pytest.approx(9 / 14)
    assert sec_index(sigma, 2).item() == pytest.approx(13 / 14)
    assert math.isnan(sec_index(torch.zeros(4), 2).item())
    with pytest.raises(ValueError, match="s <= d_q"):
        sec_index(sigma, 5)
    with pytest.raises(ValueError, match="s <= d_q"):
        sec_index(sigma, 0)


def test_ov_singular_values_match_explicit_product() -> None:
    gen = torch.Generator().manual_seed(4)
    o = torch.randn(L, H, D, DQ, generator=gen, dtype=torch.float64)
    v = torch.randn(L, H, DQ, D, generator=gen, dtype=torch.float64)
    ref = torch.linalg.svdvals(o @ v)[..., :DQ]
    got = ov_singular_values(o.float(), v.float())
    assert ((got.double() - ref).abs() / ref[..., :1]).max() <= 1e-4


def test_product_with_wide_inner_dim_uses_explicit_core() -> None:
    # W2 W1 with hidden = 4d > d: no rank saving, result must still be exact
    gen = torch.Generator().manual_seed(5)
    w2 = torch.randn(16, 64, generator=gen, dtype=torch.float64)
    w1 = torch.randn(64, 16, generator=gen, dtype=torch.float64)
    ref = torch.linalg.svdvals(w2 @ w1)
    got = product_singular_values(w2.float(), w1.float())
    assert got.shape == (16,)
    assert ((got.double() - ref).abs() / ref[0]).max() <= 1e-5
    assert product_spectral_norm(w2.float(), w1.float()).item() == pytest.approx(
        ref[0].item(), rel=1e-5
    )


@pytest.mark.parametrize("shape", [(12, 40), (40, 12), (3, 7, 9)])
def test_spectral_norm_matches_svdvals(shape: tuple[int, ...]) -> None:
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    ref = torch.linalg.svdvals(w)[..., 0]
    assert torch.allclose(spectral_norm(w.float()).double(), ref, rtol=1e-5, atol=0)


def test_shape_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="product_singular_values"):
        product_singular_values(torch.ones(3, 4), torch.ones(5, 3))
    with pytest.raises(ValueError, match="spectral_norm"):
        spectral_norm(torch.ones(3))
