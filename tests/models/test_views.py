"""Attention views of every family: per-head weight splits against the model's own q/k/v,
captured maps against explicit recomputations, capture side effects, wrappers."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tests.models.twins import twin
from weyl.models import (
    apply_sigma_reparam,
    attention_views,
    build_model,
    capture_attention,
    probe_attention,
)
from weyl.models.sigma_reparam import SigmaReparamLinear

TWINS = ["gpt_tiny", "vit_tiny", "swin_tiny", "flatten_swin_tiny"]


def _model_and_batch(name: str, sigma: bool = False) -> tuple[nn.Module, torch.Tensor]:
    model = build_model(twin(name))
    if sigma:
        apply_sigma_reparam(model)
        with torch.no_grad():
            # Move Ŵ away from W so a view returning raw weights would be caught.
            for m in model.modules():
                if isinstance(m, SigmaReparamLinear):
                    m.gamma.mul_(1.7)
    model.eval()
    if name.startswith("gpt"):
        return model, torch.randint(0, 64, (2, 16))
    return model, torch.randn(2, 3, 32, 32)


@pytest.mark.parametrize("sigma", [False, True])
@pytest.mark.parametrize("name", TWINS)
def test_per_head_weights_reproduce_the_models_projections(name: str, sigma: bool) -> None:
    model, batch = _model_and_batch(name, sigma)
    views = attention_views(model)
    blocks = {"gpt_tiny": 2, "vit_tiny": 2, "swin_tiny": 4, "flatten_swin_tiny": 8}
    assert len(views) == blocks[name]
    seen: dict[str, tuple] = {}
    hooks = []
    for v in views:
        hooks.append(
            v.attention.qkv.register_forward_hook(
                lambda _m, a, out, key=v.name: seen.__setitem__(key + "qkv", (a[0], out))
            )
        )
        hooks.append(
            v.attention.proj.register_forward_hook(
                lambda _m, a, out, key=v.name: seen.__setitem__(key + "proj", (a[0], out))
            )
        )
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    for v in views:
        x, out = seen[v.name + "qkv"]
        bias = v.attention.qkv.bias
        hd, heads = v.head_dim, v.num_heads
        assert v.q_weight().shape == (heads, hd, v.dim)
        assert v.o_weight().shape == (heads, v.dim, hd)
        for which, weight in enumerate((v.q_weight(), v.k_weight(), v.v_weight())):
            for h in range(heads):
                rows = slice(which * heads * hd + h * hd, which * heads * hd + (h + 1) * hd)
                ref = x @ weight[h].T + (0 if bias is None else bias[rows])
                torch.testing.assert_close(out[..., rows], ref, atol=1e-5, rtol=1e-4)
        y, proj_out = seen[v.name + "proj"]
        pb = v.attention.proj.bias
        ref = sum(y[..., h * hd : (h + 1) * hd] @ v.o_weight()[h].T for h in range(heads))
        torch.testing.assert_close(proj_out, ref + (0 if pb is None else pb), atol=1e-5, rtol=1e-4)
        w1, w2 = v.mlp_w1(), v.mlp_w2()
        assert w1.shape[1] == v.dim and w2.shape == (v.dim, w1.shape[0])


@pytest.mark.parametrize("name", TWINS)
def test_capture_keeps_output_and_rows_sum_to_one(name: str) -> None:
    model, batch = _model_and_batch(name)
    views = attention_views(model)
    fused_before = [v.attention.fused_attn for v in views]
    with torch.no_grad():
        plain = model(batch)
        with capture_attention(views) as sinks:
            captured_out = model(batch)
    torch.testing.assert_close(captured_out, plain, atol=1e-5, rtol=1e-5)
    assert [v.attention.fused_attn for v in views] == fused_before
    for v in views:
        (maps,) = sinks[v.name]
        assert maps.dtype == torch.float32 and maps.shape[1] == v.num_heads
        assert maps.shape[-1] == maps.shape[-2]
        assert (maps >= 0).all()
        torch.testing.assert_close(maps.sum(-1), torch.ones(maps.shape[:-1]), atol=1e-5, rtol=0)
    # After the block, no hook is left behind.
    with torch.no_grad(), capture_attention(views) as sinks:
        pass
    model(batch)
    assert all(not s for s in sinks.values())


def test_gpt_capture_equals_causal_softmax() -> None:
    model, batch = _model_and_batch("gpt_tiny")
    views = attention_views(model)
    inputs = {}
    hooks = [
        v.attention.register_forward_pre_hook(
            lambda _m, a, key=v.name: inputs.__setitem__(key, a[0])
        )
        for v in views
    ]
    maps = probe_attention(model, batch, views)
    for h in hooks:
        h.remove()
    t = batch.shape[1]
    for v in views:
        assert v.causal and v.kind == "softmax"
        x = inputs[v.name]
        q = torch.einsum("btd,hed->bhte", x, v.q_weight())
        k = torch.einsum("btd,hed->bhte", x, v.k_weight())
        logits = q @ k.transpose(-1, -2) / v.head_dim**0.5
        logits = logits.masked_fill(torch.ones(t, t).triu(1).bool(), float("-inf"))
        torch.testing.assert_close(maps[v.name], logits.softmax(-1), atol=1e-6, rtol=1e-5)
        assert (maps[v.name][..., torch.ones(t, t).triu(1).bool()] == 0).all()


def test_vit_capture_equals_softmax() -> None:
    model, batch = _model_and_batch("vit_tiny")
    views = attention_views(model)
    inputs = {}
    hooks = [
        v.attention.register_forward_pre_hook(
            lambda _m, a, key=v.name: inputs.__setitem__(key, a[0])
        )
        for v in views
    ]
    maps = probe_attention(model, batch, views)
    for h in hooks:
        h.remove()
    for v in views:
        x, b = inputs[v.name], v.attention.qkv.bias
        hd, heads = v.head_dim, v.num_heads
        q = torch.einsum("bnd,hed->bhne", x, v.q_weight()) + b[: heads * hd].view(heads, 1, hd)
        k = torch.einsum("bnd,hed->bhne", x, v.k_weight()) + b[heads * hd : 2 * heads * hd].view(
            heads, 1, hd
        )
        ref = (q @ k.transpose(-1, -2) / hd**0.5).softmax(-1)
        assert maps[v.name].shape == (2, heads, 17, 17)
        torch.testing.assert_close(maps[v.name], ref, atol=1e-6, rtol=1e-5)


def _relative_position_index(win: int) -> torch.Tensor:
    coords = [(i, j) for i in range(win) for j in range(win)]
    return torch.tensor(
        [
            [(a[0] - b[0] + win - 1) * (2 * win - 1) + (a[1] - b[1] + win - 1) for b in coords]
            for a in coords
        ]
    )


def test_swin_capture_includes_relative_bias_and_shift_mask() -> None:
    model, batch = _model_and_batch("swin_tiny")
    views = attention_views(model)
    inputs = {}
    hooks = [
        v.attention.register_forward_pre_hook(
            lambda _m, a, kw, key=v.name: inputs.__setitem__(key, (a[0], kw.get("mask"))),
            with_kwargs=True,
        )
        for v in views
    ]
    maps = probe_attention(model, batch, views)
    for h in hooks:
        h.remove()
    shifted = 0
    for v in views:
        assert v.kind == "window_softmax"
        x, mask = inputs[v.name]
        attn = v.attention
        win = v.extra["window_size"][0]
        hd, heads, n = v.head_dim, v.num_heads, win * win
        b = attn.qkv.bias
        q = torch.einsum("bnd,hed->bhne", x, v.q_weight()) + b[: heads * hd].view(heads, 1, hd)
        k = torch.einsum("bnd,hed->bhne", x, v.k_weight()) + b[heads * hd : 2 * heads * hd].view(
            heads, 1, hd
        )
        logits = q @ k.transpose(-1, -2) * hd**-0.5
        table = attn.relative_position_bias_table
        rel = table[_relative_position_index(win).view(-1)].view(n, n, heads).permute(2, 0, 1)
        logits = logits + rel
        if any(v.extra["shift_size"]):
            shifted += 1
            assert mask is not None
            nw = mask.shape[0]
            logits = (logits.view(-1, nw, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
        torch.testing.assert_close(maps[v.name], logits.softmax(-1), atol=1e-6, rtol=1e-5)
    assert shifted == 2


def test_flatten_views_mark_linear_layers() -> None:
    model, batch = _model_and_batch("flatten_swin_tiny")
    views = attention_views(model)
    assert [v.kind for v in views] == ["linear"] * 4 + ["window_softmax"] * 4
    maps = probe_attention(model, batch, views)
    assert maps["L00"].shape == (2, 2, 256, 256)  # one global window of 16×16 tokens
    assert maps["L02"].shape == (2, 2, 64, 64)


def test_views_see_through_compile_and_ddp(tmp_path) -> None:
    model, batch = _model_and_batch("vit_tiny")
    compiled = torch.compile(model)  # wrapping only; nothing is compiled until called
    assert [v.path for v in attention_views(compiled)] == ["blocks.0.attn", "blocks.1.attn"]
    assert attention_views(compiled)[0].attention is model.blocks[0].attn
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        views = attention_views(ddp)
        assert views[1].attention is model.blocks[1].attn
        maps = probe_attention(ddp, batch)
        assert maps["L01"].shape == (2, 4, 17, 17)
    finally:
        dist.destroy_process_group()


def test_unknown_model_has_no_view() -> None:
    with pytest.raises(TypeError, match="no attention view"):
        attention_views(nn.Linear(2, 2))
