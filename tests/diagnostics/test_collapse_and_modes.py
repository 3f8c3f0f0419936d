"""The collapse rule on Appendix G's constructions and on hand inputs; the ``weyl modes`` CLI."""

import pytest
import torch

from weyl.commands.modes import FIGURE_NAME, main
from weyl.diagnostics.collapse import AttentionMode, CollapseThresholds, classify_heads
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
    t = CollapseThresholds(entropy=0.2, rank_fraction=0.25, sec=0.95)
    entropy = torch.tensor([3.0, 0.1, 0.1, 0.1, 3.0])
    erank_fraction = torch.tensor([0.1, 0.9, 0.1, 0.9, 0.9])
    sec = torch.tensor([0.99, 0.3, 0.3, 0.97, float("nan")])
    got = classify_heads(entropy, erank_fraction, sec, t).tolist()
    # dense low-rank → normal; sparse full-rank spread → benign; sparse low-rank → malignant;
    # sparse full-rank but concentrated weights → malignant; NaN SEC (zero weights) → normal
    assert got == [0, 1, 2, 2, 0]
    # without maps only SEC can speak
    assert classify_heads(None, None, torch.tensor([0.99, 0.5]), t).tolist() == [2, 0]


def test_thresholds_validate_and_pick_s_star() -> None:
    t = CollapseThresholds()
    assert [t.sec_rank(d_q) for d_q in (2, 4, 8, 16, 32, 64, 128)] == [1, 1, 2, 4, 4, 4, 8]
    with pytest.raises(ValueError, match="entropy_collapse"):
        CollapseThresholds(entropy=0.0)
    with pytest.raises(ValueError, match="sec_concentrated"):
        CollapseThresholds(sec=1.5)


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
