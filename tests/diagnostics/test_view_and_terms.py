"""The fused-qkv view against an unfused reference layer; the 15 terms of Fig. 1 by hand."""

import math

import pytest
import torch
import torch.nn.functional as F

from weyl.diagnostics import Diagnostics
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.models.attention_view import attention_views, probe_attention

from .reference_model import RefTransformer, lm_loss

DIM, HEADS, DQ, SEQ = 32, 4, 8, 12


def _model(norm: str = "layernorm", causal: bool = True, seed: int = 0) -> RefTransformer:
    torch.manual_seed(seed)
    model = RefTransformer(dim=DIM, depth=2, num_heads=HEADS, seq_len=SEQ, causal=causal, norm=norm)
    with torch.no_grad():  # non-trivial norm parameters, so ‖γ‖ and ‖β‖ are informative
        for block in model.blocks:
            for norm_mod in (block.norm1, block.norm2):
                norm_mod.weight.uniform_(0.5, 1.5)
                if getattr(norm_mod, "bias", None) is not None:
                    norm_mod.bias.normal_(0.0, 0.3)
    return model


def _unfused_attention(attn, x: torch.Tensor, causal: bool):
    """Per-head loop with q, k, v, o sliced by hand out of the fused weights."""
    w, b = attn.qkv.weight, attn.qkv.bias
    n = x.shape[1]
    out = attn.proj.bias.expand(x.shape[0], n, DIM).clone()
    maps = []
    for h in range(HEADS):
        rows = slice(h * DQ, (h + 1) * DQ)
        wq, wk, wv = w[rows], w[DIM:][rows], w[2 * DIM :][rows]
        bq, bk, bv = b[rows], b[DIM:][rows], b[2 * DIM :][rows]
        q, k, v = x @ wq.T + bq, x @ wk.T + bk, x @ wv.T + bv
        logits = q @ k.transpose(-2, -1) / math.sqrt(DQ)
        if causal:
            logits = logits.masked_fill(torch.ones(n, n).triu(1).bool(), float("-inf"))
        a = logits.softmax(-1)
        maps.append(a)
        out = out + (a @ v) @ attn.proj.weight[:, rows].T
    return out, torch.stack(maps, dim=1)


def test_view_splits_match_hand_slices() -> None:
    model = _model()
    for view, block in zip(attention_views(model), model.blocks):
        w = block.attn.qkv.weight
        for h in range(HEADS):
            rows = slice(h * DQ, (h + 1) * DQ)
            assert torch.equal(view.q_weight()[h], w[rows])
            assert torch.equal(view.k_weight()[h], w[DIM:][rows])
            assert torch.equal(view.v_weight()[h], w[2 * DIM :][rows])
            assert torch.equal(view.o_weight()[h], block.attn.proj.weight[:, rows])


@pytest.mark.parametrize("causal", [True, False])
def test_captured_maps_and_output_match_unfused_layer(causal: bool) -> None:
    model = _model(causal=causal).eval()
    attn = model.blocks[0].attn
    x = torch.randn(2, SEQ, DIM)
    ref_out, ref_maps = _unfused_attention(attn, x, causal)
    with torch.no_grad():
        assert torch.allclose(attn(x), ref_out, atol=1e-5)  # fused (SDPA) path
        idx = torch.randint(0, 32, (2, SEQ))
        maps = probe_attention(model, idx)
        x0 = model.blocks[0].norm1(model.tok(idx) + model.pos[:SEQ])
        _, ref_maps = _unfused_attention(attn, x0, causal)
    assert attn.fused_attn is True  # capture switched fusion back on
    assert maps["L00"].shape == (2, HEADS, SEQ, SEQ)
    assert torch.allclose(maps["L00"], ref_maps, atol=1e-6)
    if causal:
        assert (maps["L00"].triu(1) == 0).all()  # masked entries are exact zeros


def _hand_forward(model: RefTransformer, idx: torch.Tensor):
    """The model's forward written out, keeping each block's input for autograd."""
    x = model.tok(idx) + model.pos[: idx.shape[1]]
    inputs = []
    for block in model.blocks:
        inputs.append(x)
        x = block(x)
    return model.head(model.norm(x)), inputs


def _svd1(m: torch.Tensor) -> float:
    return torch.linalg.svdvals(m.detach().double())[0].item()


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_fifteen_terms_match_hand_computation(norm: str) -> None:
    model = _model(norm=norm).eval()
    idx = torch.randint(0, 32, (3, SEQ + 1), generator=torch.Generator().manual_seed(1))
    diag = Diagnostics(
        model, DiagnosticsConfig(), probe_inputs=idx[:, :-1], loss_fn=lambda m: lm_loss(m, idx)
    )
    got = diag.compute()

    logits, inputs = _hand_forward(model, idx[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, 32), idx[:, 1:].reshape(-1))
    grads = torch.autograd.grad(loss, inputs)
    for i, block in enumerate(model.blocks):
        w = block.attn.qkv.weight
        wq, wk, wv = w[:DIM], w[DIM : 2 * DIM], w[2 * DIM :]
        wo, w1, w2 = block.attn.proj.weight, block.mlp.fc1.weight, block.mlp.fc2.weight
        expected = {
            "wq_sigma1": _svd1(wq),
            "wk_sigma1": _svd1(wk),
            "wv_sigma1": _svd1(wv),
            "wo_sigma1": _svd1(wo),
            "w1_sigma1": _svd1(w1),
            "w2_sigma1": _svd1(w2),
            "gamma1_norm": block.norm1.weight.norm().item(),
            "gamma2_norm": block.norm2.weight.norm().item(),
            "qk_sigma1": _svd1(wq.double().T @ wk.double()),
            "ov_sigma1": _svd1(wo.double() @ wv.double()),
            "ffn_sigma1": _svd1(w2.double() @ w1.double()),
            "x_norm": inputs[i].detach().square().sum(-1).mean().sqrt().item(),
            "grad_x_norm": grads[i].norm().item(),
        }
        if norm == "layernorm":
            expected["beta1_norm"] = block.norm1.bias.norm().item()
            expected["beta2_norm"] = block.norm2.bias.norm().item()
        prefix = f"terms/L{i:02d}/"
        names = {k.removeprefix(prefix) for k in got if k.startswith(prefix)}
        assert names == set(expected), f"{norm}: {sorted(names ^ set(expected))}"
        assert len(names) == (15 if norm == "layernorm" else 13)
        for name, value in expected.items():
            assert got[prefix + name] == pytest.approx(value, rel=1e-4), name


def test_forward_terms_without_loss_fn_use_the_probe_batch() -> None:
    model = _model().eval()
    idx = torch.randint(0, 32, (2, SEQ), generator=torch.Generator().manual_seed(2))
    got = Diagnostics(model, DiagnosticsConfig(), probe_inputs=idx).compute()
    _, inputs = _hand_forward(model, idx)
    assert "terms/L00/grad_x_norm" not in got
    for i, x in enumerate(inputs):
        ref = x.detach().square().sum(-1).mean().sqrt().item()
        assert got[f"terms/L{i:02d}/x_norm"] == pytest.approx(ref, rel=1e-5)
    off = Diagnostics(model, DiagnosticsConfig(terms=False), probe_inputs=idx).compute()
    assert not any(k.startswith("terms/") for k in off)
