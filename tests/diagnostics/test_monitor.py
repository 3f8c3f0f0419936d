"""The Diagnostics object: keys, summaries, collapse labels, LR view, and leaving the run alone."""

import math

import pytest
import torch

from weyl.diagnostics import Diagnostics, spectral_report
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.models.attention_view import probe_attention

from .reference_model import RefTransformer, lm_loss

DIM, HEADS, DQ, SEQ, VOCAB = 32, 4, 8, 16, 32


def _model(depth: int = 2, causal: bool = True, seed: int = 0) -> RefTransformer:
    torch.manual_seed(seed)
    return RefTransformer(
        vocab_size=VOCAB, dim=DIM, depth=depth, num_heads=HEADS, seq_len=SEQ, causal=causal
    )


def _probe(seed: int = 0, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, SEQ), generator=torch.Generator().manual_seed(seed))


def test_keys_and_summaries_agree_with_independent_values() -> None:
    model = _model()
    probe = _probe()
    got = Diagnostics(model, DiagnosticsConfig(), probe).compute()
    maps = probe_attention(model, probe)
    for i, block in enumerate(model.blocks):
        layer = f"attn/L{i:02d}"
        w = block.attn.qkv.weight.detach().double()
        sigma1, entropies = [], []
        for h in range(HEADS):
            wq, wk = w[h * DQ : (h + 1) * DQ], w[DIM + h * DQ : DIM + (h + 1) * DQ]
            sv = torch.linalg.svdvals(wq.T @ wk)[:DQ]
            sigma1.append(sv[0].item())
            energy = sv**2
            for s in (1, 2, 4, 8):
                ref = (energy[:s].sum() / energy.sum()).item()
                assert got[f"{layer}/h{h:02d}/sec_s{s}"] == pytest.approx(ref, rel=1e-4)
            a = maps[f"L{i:02d}"][:, h].double()
            ent = -(a * torch.log(torch.where(a > 0, a, 1.0))).sum(-1).mean().item()
            entropies.append(ent)
            assert got[f"{layer}/h{h:02d}/entropy"] == pytest.approx(ent, rel=1e-5)
            assert got[f"{layer}/h{h:02d}/qk_sigma1"] == pytest.approx(sigma1[-1], rel=1e-4)
        assert got[f"{layer}/qk_sigma1_max"] == pytest.approx(max(sigma1), rel=1e-4)
        assert got[f"{layer}/qk_sigma1_mean"] == pytest.approx(sum(sigma1) / HEADS, rel=1e-4)
        assert got[f"{layer}/entropy_min"] == pytest.approx(min(entropies), rel=1e-5)
        assert got[f"{layer}/entropy_mean"] == pytest.approx(sum(entropies) / HEADS, rel=1e-5)
        assert got[f"collapse/L{i:02d}"] == 0.0  # an initialised model attends normally
    assert all(isinstance(v, float) and not math.isnan(v) for v in got.values())


def test_per_head_switch_keeps_only_layer_summaries() -> None:
    model = _model()
    full = Diagnostics(model, DiagnosticsConfig(), _probe()).compute()
    short = Diagnostics(model, DiagnosticsConfig(), _probe(), per_head=False).compute()
    assert not any("/h0" in k for k in short)
    assert set(short) == {k for k in full if "/h0" not in k}
    assert short["attn/L01/erank_mean"] == pytest.approx(full["attn/L01/erank_mean"])


def _force_modes(model: RefTransformer) -> None:
    """Layer 0: rank-1 W_qᵀW_k with a large σ₁ (malignant); layer 1: scaled PSD (benign)."""
    gen = torch.Generator().manual_seed(3)
    u, v = torch.randn(DIM, generator=gen), torch.randn(DIM, generator=gen)
    with torch.no_grad():
        for i, block in enumerate(model.blocks[:2]):
            w = block.attn.qkv.weight
            block.attn.qkv.bias.zero_()
            w[: 2 * DIM] = 0.0
            for h in range(HEADS):
                q_rows, k_rows = (
                    slice(h * DQ, (h + 1) * DQ),
                    slice(DIM + h * DQ, DIM + (h + 1) * DQ),
                )
                if i == 0:
                    w[q_rows.start] = 30.0 * u / u.norm()
                    w[k_rows.start] = 30.0 * v / v.norm()
                else:
                    coords = torch.arange(h * DQ, (h + 1) * DQ)
                    w[q_rows][torch.arange(DQ), coords] = math.sqrt(50.0)
                    w[k_rows][torch.arange(DQ), coords] = math.sqrt(50.0)


def test_collapse_labels_on_forced_malignant_and_benign_layers() -> None:
    model = _model(depth=3, causal=False)
    _force_modes(model)
    probe = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(0))[:SEQ][None]
    got = Diagnostics(model, DiagnosticsConfig(), probe).compute()
    assert [got[f"collapse/L{i:02d}"] for i in range(3)] == [2.0, 1.0, 0.0]
    assert got["collapse/L00/malignant_heads"] == HEADS
    assert got["collapse/L01/benign_heads"] == HEADS
    assert got["collapse/any_malignant"] == 1.0
    assert got["collapse/first_malignant_layer"] == 0.0
    assert got["collapse/malignant_layers"] == 1.0
    assert got["collapse/any_concentrated"] == 1.0
    assert got["attn/L00/sec_s1_max"] == pytest.approx(1.0, abs=1e-5)  # rank 1
    # identity-like map: entropy ≈ 0 and effective rank close to SEQ
    assert got["attn/L01/entropy_mean"] < 0.2
    assert got["attn/L01/erank_mean"] > 0.75 * SEQ
    healthy = Diagnostics(_model(depth=3, causal=False), DiagnosticsConfig(), probe).compute()
    assert healthy["collapse/any_malignant"] == 0.0
    assert healthy["collapse/first_malignant_layer"] == -1.0


def test_compute_leaves_mode_grads_rng_and_fusion_untouched() -> None:
    model = _model()
    idx = _probe(batch=3)
    lm_loss(model, idx).backward()
    grads = {n: (p.grad, p.grad.clone()) for n, p in model.named_parameters()}
    model.train()
    diag = Diagnostics(model, DiagnosticsConfig(), idx[:, :-1], loss_fn=lambda m: lm_loss(m, idx))
    rng = torch.random.get_rng_state()
    out = diag.compute()
    assert "terms/L01/grad_x_norm" in out
    assert model.training
    assert all(b.attn.fused_attn for b in model.blocks)
    assert torch.equal(torch.random.get_rng_state(), rng)
    for n, p in model.named_parameters():
        assert p.grad is grads[n][0] and torch.equal(p.grad, grads[n][1]), n
    model.eval()
    diag.compute()
    assert not model.training
    # hooks are gone: a further forward records nothing and the outputs are unchanged
    assert all(not b._forward_pre_hooks for b in model.blocks)
    assert all(not b.attn.attn_drop._forward_pre_hooks for b in model.blocks)


def test_training_with_diagnostics_is_bitwise_identical_to_without() -> None:
    def run(with_diag: bool) -> list[torch.Tensor]:
        model = _model(seed=5)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        # the probe loss draws from the global RNG, as the training batches do: diagnostics
        # must not shift the run's random stream
        diag = Diagnostics(
            model,
            DiagnosticsConfig(every=2),
            _probe(),
            loss_fn=lambda m: lm_loss(m, torch.randint(0, VOCAB, (2, SEQ))),
        )
        torch.manual_seed(11)
        for step in range(4):
            loss = lm_loss(model, torch.randint(0, VOCAB, (4, SEQ)))
            opt.zero_grad()
            loss.backward()
            if with_diag and diag.due(step):
                diag.compute(opt)
            opt.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(False), run(True)):
        assert torch.equal(a, b)


class _RecordingOptimizer:
    """Stands in for AdamW²: a fixed lr_report over the given parameter names."""

    def __init__(self, report: dict[str, dict[str, float]]) -> None:
        self.report = report

    def lr_report(self) -> dict[str, dict[str, float]]:
        return self.report


@pytest.mark.parametrize("prefix", ["", "module."])
def test_lr_view_aggregates_per_layer(prefix: str) -> None:
    model = _model()
    names = [n for n, _ in model.named_parameters()]
    report = {}
    for j, name in enumerate(names):
        clipped = float(j % 2)
        report[prefix + name] = {
            "lr": 1e-3,
            "lr_eff": 1e-3 * (0.5 if clipped else 1.0),
            "clipped": clipped,
        }
    got = Diagnostics(model, DiagnosticsConfig(), None).compute(_RecordingOptimizer(report))
    for layer, start in (("L00", "blocks.0."), ("L01", "blocks.1.")):
        mine = [report[prefix + n] for n in names if n.startswith(start)]
        assert got[f"lr/{layer}/clip_rate"] == pytest.approx(
            sum(r["clipped"] for r in mine) / len(mine)
        )
        assert got[f"lr/{layer}/effective_mean"] == pytest.approx(
            sum(r["lr_eff"] for r in mine) / len(mine)
        )
        assert got[f"lr/{layer}/effective_min"] == pytest.approx(5e-4)
        assert got[f"lr/{layer}/scheduled_mean"] == pytest.approx(1e-3)
    others = [report[prefix + n] for n in names if not n.startswith("blocks.")]
    assert got["lr/other/clip_rate"] == pytest.approx(
        sum(r["clipped"] for r in others) / len(others)
    )
    assert got["lr/clip_rate"] == pytest.approx(
        sum(r["clipped"] for r in report.values()) / len(names)
    )


def test_lr_view_is_a_no_op_for_plain_optimizers() -> None:
    model = _model()
    got = Diagnostics(model, DiagnosticsConfig(), None).compute(
        torch.optim.AdamW(model.parameters())
    )
    assert not any(k.startswith("lr") for k in got)
    with pytest.raises(ValueError, match="lr_eff"):
        Diagnostics(model, DiagnosticsConfig(), None).compute(
            _RecordingOptimizer({"tok.weight": {"lr": 1.0, "clipped": 0.0}})
        )


def test_bad_configuration_raises_value_error_naming_the_key() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"diagnostics\.sec_s"):
        Diagnostics(model, DiagnosticsConfig(sec_s=[0, 2]), None)
    with pytest.raises(ValueError, match=r"diagnostics\.every"):
        Diagnostics(model, DiagnosticsConfig(every=0), None)
    with pytest.raises(ValueError, match=r"diagnostics\.entropy_collapse"):
        Diagnostics(model, DiagnosticsConfig(entropy_collapse=-1.0), None)
    diag = Diagnostics(model, DiagnosticsConfig(), None, loss_fn=lambda m: m(_probe()).sum(-1))
    with pytest.raises(ValueError, match="scalar"):
        diag.compute()
    with pytest.raises(TypeError, match="no attention view"):
        Diagnostics(torch.nn.Linear(2, 2), DiagnosticsConfig(), None)


def test_spectral_report_needs_no_data_and_skips_s_above_head_dim() -> None:
    model = _model()
    rep = spectral_report(model, sec_s=(2, 16))
    assert "attn/L00/h03/sec_s2" in rep and "attn/L00/sec_s16_max" not in rep  # d_q = 8
    assert "terms/L01/qk_sigma1" in rep and "terms/L01/x_norm" not in rep
    assert not any(k.startswith("collapse/L") for k in rep)
    w = model.blocks[1].attn.qkv.weight.detach().double()
    ref = torch.linalg.svdvals(w[:DIM].T @ w[DIM : 2 * DIM])[0].item()
    assert rep["terms/L01/qk_sigma1"] == pytest.approx(ref, rel=1e-4)


def test_spectral_report_on_the_project_gpt() -> None:
    gpt = pytest.importorskip("weyl.models.gpt")
    from weyl.models.model_config import GPTModelConfig

    cfg = GPTModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11)
    model = gpt.GPT(cfg)
    rep = spectral_report(model, per_head=False)
    w = model.blocks[1].attn.qkv.weight.detach().double()
    ref = torch.linalg.svdvals(w[:16].T @ w[16:32])[0].item()
    assert rep["terms/L01/qk_sigma1"] == pytest.approx(ref, rel=1e-4)
    assert "terms/L01/beta1_norm" not in rep  # bias-free LayerNorm: the 13-term case
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
    got = Diagnostics(model, DiagnosticsConfig(sec_s=[1, 2]), idx).compute()
    a = probe_attention(model, idx)["L01"].double()  # GPT's own causal maps
    entropy = -(a * torch.log(torch.where(a > 0, a, 1.0))).sum(-1).mean((0, 2))
    assert got["attn/L01/entropy_mean"] == pytest.approx(entropy.mean().item(), rel=1e-5)
    assert got["collapse/L01"] == 0.0


def test_layer_lr_stats_reads_the_real_adamw2_record():
    """The optimizer's own lr_report feeds the per-layer LR view (Fig. 15)."""
    from weyl.diagnostics import layer_lr_stats
    from weyl.models import build_model
    from weyl.models.attention_view import attention_views
    from weyl.models.model_config import GPTModelConfig
    from weyl.optim import build_optimizer
    from weyl.optim.optim_config import OptimConfig

    torch.manual_seed(0)
    model = build_model(GPTModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=32))
    opt = build_optimizer(model, OptimConfig(name="adamw2", lr=1.0, tau=0.01))
    idx = torch.randint(0, 32, (2, 8))
    model(idx).logsumexp(-1).mean().backward()
    opt.step()
    stats = layer_lr_stats(model, opt, attention_views(model))
    assert stats["lr/L00/scheduled_mean"] == pytest.approx(1.0)
    # lr=1 with tau=0.01 clips every matrix: the effective LR is far below the schedule.
    assert stats["lr/L00/clip_rate"] > 0.5 and stats["lr/L00/effective_mean"] < 0.5
