"""The collapse rule on Appendix G's constructions and on hand inputs; the ``weyl modes`` CLI."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from weyl.commands.modes import FIGURE_NAME, main
from weyl.diagnostics.collapse import AttentionMode, CollapseThresholds, classify_heads
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.diagnostics.modes import simulate_attention_modes

# Small twins of Appendix G's (64, 768, 197) keep the test fast; the paper size runs in the CLI.
SMALL = {"d_q": 32, "d": 256, "num_tokens": 64}


@pytest.mark.parametrize("seed", [0, 1])
def test_appendix_g_constructions_get_the_right_labels(seed: int) -> None:
    normal, malignant, benign = simulate_attention_modes(seed=seed, **SMALL)
    assert [r.name for r in (normal, malignant, benign)] == ["normal", "malignant", "benign"]
    assert normal.label is AttentionMode.NORMAL
    assert malignant.label is AttentionMode.MALIGNANT
    assert benign.label is AttentionMode.BENIGN
    # the numbers behind the labels, from the construction itself:
    # malignant W has rank 3 → all spectral energy within 3 directions
    assert malignant.sec[4] == pytest.approx(1.0, abs=1e-6)
    # benign W = U Σ Uᵀ has the same singular values as the normal W, times the gain
    assert benign.sec == pytest.approx(normal.sec, rel=1e-4)
    assert benign.qk_sigma1 == pytest.approx(256.0 * normal.qk_sigma1, rel=1e-4)
    # benign map is the identity: diagonal ≈ 1
    assert benign.attention.diagonal().min() > 0.99
    assert malignant.erank_fraction < 0.25 < benign.erank_fraction
    # maps are row-stochastic
    for r in (normal, malignant, benign):
        assert torch.allclose(r.attention.sum(-1), torch.ones(SMALL["num_tokens"]), atol=1e-5)


def test_literal_paper_scale_saturates_even_the_normal_map() -> None:
    normal, malignant, benign = simulate_attention_modes(seed=0, paper_scale=True, **SMALL)
    assert normal.entropy < 0.05  # one-hot rows: why the default rescales (see modes docstring)
    assert malignant.label is AttentionMode.MALIGNANT
    assert benign.label is AttentionMode.BENIGN


def test_classify_heads_rule_on_hand_inputs() -> None:
    t = CollapseThresholds(entropy=0.2, rank_fraction=0.25, sec=0.95, qk_logit=1.5)
    d_q = 16  # σ₁ is large from 1.5·√16 = 6 on
    entropy = torch.tensor([3.0, 0.1, 0.1, 0.1, 3.0, 0.1])
    erank_fraction = torch.tensor([0.1, 0.9, 0.1, 0.9, 0.9, 0.9])
    sec = torch.tensor([0.99, 0.3, 0.3, 0.97, float("nan"), 0.97])
    sigma1 = torch.tensor([50.0, 50.0, 50.0, 50.0, 0.0, 2.0])
    got = classify_heads(entropy, erank_fraction, sec, sigma1, d_q, t).tolist()
    # dense low-rank → normal; sparse full-rank spread → benign; sparse low-rank → malignant;
    # sparse full-rank, concentrated and large → malignant (Theorem 1); NaN SEC (zero
    # weights) → normal; sparse full-rank, concentrated but small σ₁ → benign, not malignant
    assert got == [0, 1, 2, 2, 0, 1]
    # without maps only Theorem 1 can speak, and it needs both conditions
    no_map = classify_heads(None, None, sec, sigma1, d_q, t).tolist()
    assert no_map == [2, 0, 0, 2, 0, 0]
    # the threshold is σ₁/√d_q: exactly at 1.5 counts as large, just below does not
    edge = torch.tensor([6.0, 5.99])
    assert classify_heads(None, None, torch.ones(2), edge, d_q, t).tolist() == [2, 0]


def _sec(w: torch.Tensor, s: int, d_q: int) -> float:
    """SEC(d_q, s) of Eq. 4 straight from torch.linalg.svdvals (independent of the code)."""
    energy = torch.linalg.svdvals(w.double())[:d_q] ** 2
    return float(energy[:s].sum() / energy.sum())


def _map_stats(attn: torch.Tensor) -> tuple[float, float]:
    """Mean row entropy (nats) and Roy–Vetterli effective rank / N of one attention map."""
    p = attn.double()
    entropy = float(-(p * p.clamp_min(1e-300).log()).sum(-1).mean())
    sv = torch.linalg.svdvals(p)
    q = sv / sv.sum()
    erank = float(torch.exp(-(q * q.clamp_min(1e-300).log()).sum()))
    return entropy, erank / attn.shape[-1]


def _appendix_g_weights(seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Appendix G, Code 1, literally: W_q, W_k ~ N(0, 1) of 64 × 768, X of 768 × 197 tokens."""
    gen = torch.Generator().manual_seed(seed)
    wq = torch.randn(64, 768, generator=gen)
    wk = torch.randn(64, 768, generator=gen)
    x = torch.randn(768, 197, generator=gen)
    w = wq.T @ wk
    u, s, v = torch.svd(w)
    s_mal = s.clone()
    s_mal[0:3] = torch.tensor([3.0, 2.0, 1.0]) * s_mal[0:3]
    s_mal[3:] = 0.0
    weights = {
        "normal": w,
        "malignant": u @ torch.diag(s_mal) @ v.T,
        "benign": u @ torch.diag(s) @ u.T,
    }
    return weights, x


def test_theorem1_on_appendix_g_constructions_at_paper_size() -> None:
    d_q = 64
    t = CollapseThresholds()
    weights, x = _appendix_g_weights(seed=0)
    s_star = t.sec_rank(d_q)
    sec = torch.tensor([_sec(w, s_star, d_q) for w in weights.values()])
    sigma1 = torch.stack([torch.linalg.svdvals(w)[0] for w in weights.values()])
    # Theorem 1's two conditions, measured: only the malignant W is concentrated (rank 3);
    # every W has σ₁ far above the 1.5·√64 = 12 threshold at the appendix's N(0, 1) scale.
    assert sec[1] == pytest.approx(1.0, abs=1e-6)
    assert sec[0] < 0.5 and sec[2] < 0.5
    assert (sigma1 > 50 * 1.5 * d_q**0.5).all()
    # weights alone: the malignant head, and only it
    no_map = classify_heads(None, None, sec, sigma1, d_q, t).tolist()
    assert no_map == [AttentionMode.NORMAL, AttentionMode.MALIGNANT, AttentionMode.NORMAL]
    # with the appendix's maps A = softmax(XᵀWX): malignant is sparse and low-rank, benign is
    # sparse (near-identity) and full rank
    stats = [_map_stats((x.T @ w @ x).softmax(dim=1)) for w in weights.values()]
    entropy = torch.tensor([e for e, _ in stats])
    fraction = torch.tensor([f for _, f in stats])
    assert entropy[1] < 0.2 and entropy[2] < 0.2
    assert fraction[1] < 0.25 < fraction[2]
    labels = classify_heads(entropy, fraction, sec, sigma1, d_q, t).tolist()
    assert labels[1:] == [AttentionMode.MALIGNANT, AttentionMode.BENIGN]


def _head(spectrum: torch.Tensor, d: int, seed: int) -> torch.Tensor:
    """W_qᵀW_k (d × d) with the given singular values, from random orthonormal factors."""
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d, spectrum.numel(), generator=gen))
    v, _ = torch.linalg.qr(torch.randn(d, spectrum.numel(), generator=gen))
    return (u * spectrum) @ v.T


def test_large_sigma1_with_spread_spectrum_is_not_malignant() -> None:
    d_q, d = 32, 128
    t = CollapseThresholds()
    # all 32 singular values equal and huge: σ₁/√d_q = 1000, SEC(32, 4) = 4/32
    w = _head(torch.full((d_q,), 1000.0 * d_q**0.5), d, seed=0)
    sec = torch.tensor([_sec(w, t.sec_rank(d_q), d_q)])
    sigma1 = torch.linalg.svdvals(w)[:1]
    assert sec.item() == pytest.approx(4 / 32, abs=1e-6)
    assert classify_heads(None, None, sec, sigma1, d_q, t).item() == AttentionMode.NORMAL
    # even with a sparse, full-rank map the head is benign, not malignant
    got = classify_heads(torch.tensor([0.01]), torch.tensor([0.9]), sec, sigma1, d_q, t)
    assert got.item() == AttentionMode.BENIGN


def test_concentrated_head_with_small_sigma1_is_not_malignant() -> None:
    d_q, d = 32, 128
    t = CollapseThresholds()
    # rank 2 (SEC(32, 4) = 1) at the scale of a freshly initialised head: σ₁/√d_q = 0.05
    spectrum = torch.zeros(d_q)
    spectrum[:2] = torch.tensor([0.05, 0.03]) * d_q**0.5
    w = _head(spectrum, d, seed=1)
    sec = torch.tensor([_sec(w, t.sec_rank(d_q), d_q)])
    sigma1 = torch.linalg.svdvals(w)[:1]
    assert sec.item() == pytest.approx(1.0, abs=1e-6)
    # SEC alone (the old rule) would call it malignant; Theorem 1 needs the large σ₁ too
    assert classify_heads(None, None, sec, sigma1, d_q, t).item() == AttentionMode.NORMAL
    # its map on LayerNorm-scale tokens is dense: normal with the map as well
    x = torch.randn(d, 64, generator=torch.Generator().manual_seed(2))
    entropy, fraction = _map_stats((x.T @ w @ x / d_q**0.5).softmax(dim=1))
    assert entropy > 4.0  # ≈ ln 64
    labels = classify_heads(torch.tensor([entropy]), torch.tensor([fraction]), sec, sigma1, d_q, t)
    assert labels.item() == AttentionMode.NORMAL


class _CreationDevices(TorchDispatchMode):
    """Records the device of every tensor an aten op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for leaf in torch.utils._pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.devices.add(leaf.device.type)
        return out


def test_classify_heads_follows_the_maps_device() -> None:
    # On a GPU the maps' statistics live on cuda while the spectra were brought to the host:
    # the 'meta' device stands in for cuda here. The old rule mixed the two and failed.
    entropy = torch.tensor([3.0, 0.1, 0.1], device="meta")
    fraction = torch.tensor([0.9, 0.9, 0.1], device="meta")
    sec = torch.tensor([0.99, 0.99, 0.3])
    sigma1 = torch.tensor([50.0, 50.0, 1.0])
    with _CreationDevices() as seen:
        labels = classify_heads(entropy, fraction, sec, sigma1, 16)
    assert labels.device.type == "meta" and labels.dtype == torch.int64
    assert seen.devices == {"meta"}  # no tensor was made on the CPU on the way
    with _CreationDevices() as seen:
        no_map = classify_heads(None, None, sec.to("meta"), sigma1, 16)
    assert no_map.device.type == "meta" and seen.devices == {"meta"}


def test_thresholds_validate_and_pick_s_star() -> None:
    t = CollapseThresholds()
    assert [t.sec_rank(d_q) for d_q in (2, 4, 8, 16, 32, 64, 128)] == [1, 1, 2, 4, 4, 4, 8]
    with pytest.raises(ValueError, match="entropy_collapse"):
        CollapseThresholds(entropy=0.0)
    with pytest.raises(ValueError, match="sec_concentrated"):
        CollapseThresholds(sec=1.5)
    with pytest.raises(ValueError, match="qk_logit_large"):
        CollapseThresholds(qk_logit=-1.0)
    with pytest.raises(ValueError, match=r"diagnostics\.qk_logit_large"):
        DiagnosticsConfig(qk_logit_large=-1.0)


def test_modes_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="d_q"):
        simulate_attention_modes(d_q=64, d=32)


def test_modes_cli_prints_table_and_writes_png(tmp_path, capsys) -> None:
    argv = ["--d-q", "16", "--dim", "64", "--tokens", "24", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["mode", "entropy", "erank"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["normal", "malignant", "benign"]
    assert [ln.split()[-1] for ln in lines[1:4]] == ["normal", "malignant", "benign"]
    # entropy column is the measured value of the simulation with the same arguments
    expected = simulate_attention_modes(d_q=16, d=64, num_tokens=24)
    assert float(lines[1].split()[1]) == pytest.approx(expected[0].entropy, abs=1e-4)
    png = tmp_path / FIGURE_NAME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_modes_cli_help_and_bad_input(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--out" in capsys.readouterr().out
    assert main(["--d-q", "2"]) == 2
    assert "d_q" in capsys.readouterr().err
