"""ViT, Swin and Flatten-Swin twins: forward/backward, structure, and the linear attention
block against a naive O(N²) formulation written out here."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import WindowAttention

from tests.models.twins import twin
from weyl.config import model_config
from weyl.models import FocusedLinearAttention, build_model


@pytest.mark.parametrize("name", ["vit_tiny", "swin_tiny", "flatten_swin_tiny"])
def test_forward_backward(name: str) -> None:
    model = build_model(twin(name))
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    F.cross_entropy(out, torch.tensor([1, 2])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_drop_path_is_exposed() -> None:
    model = build_model(twin("vit_tiny"))
    assert model.blocks[-1].drop_path1.drop_prob == pytest.approx(0.1)
    swin = build_model(twin("swin_tiny", drop_path_rate=0.5))
    assert swin.layers[-1].blocks[-1].drop_path1.drop_prob == pytest.approx(0.5)


@pytest.mark.parametrize("init", ["xavier", "trunc_xavier"])
def test_vit_reinit(init: str) -> None:
    model = build_model(twin("vit_tiny", embed_dim=128, num_heads=4, init=init))
    fc1 = model.blocks[0].mlp.fc1
    assert fc1.weight.std().item() == pytest.approx(math.sqrt(2 / (128 + 512)), rel=0.03)
    assert torch.count_nonzero(fc1.bias) == 0


def test_flatten_swin_s_structure() -> None:
    with torch.device("meta"):
        model = build_model(model_config("flatten_swin_s"))
    kinds = [[type(b.attn) for b in stage.blocks] for stage in model.layers]
    assert all(k is FocusedLinearAttention for k in kinds[0] + kinds[1])
    assert all(k is WindowAttention for k in kinds[2] + kinds[3])
    # Linear stages attend globally (window clipped to the 56² and 28² maps, never shifted);
    # softmax stages keep Swin's 7×7 windows, shifted in every other block.
    assert [tuple(b.window_size) for b in model.layers[0].blocks] == [(56, 56)] * 2
    assert [tuple(b.window_size) for b in model.layers[1].blocks] == [(28, 28)] * 2
    assert all(not any(b.shift_size) for s in model.layers[:2] for b in s.blocks)
    assert tuple(model.layers[2].blocks[1].window_size) == (7, 7)
    assert tuple(model.layers[2].blocks[1].shift_size) == (3, 3)
    attn = model.layers[0].blocks[0].attn
    assert attn.focusing_factor == 3 and attn.dwc.kernel_size == (5, 5)
    assert attn.positional_encoding.shape == (1, 56 * 56, 96)


def _naive_focused_attention(attn: FocusedLinearAttention, x: torch.Tensor):
    """Han et al.'s focused linear attention written out token by token, with an explicit
    N×N map; returns (output, row-normalised map)."""
    b, n, c = x.shape
    h = attn.num_heads
    d = c // h
    w = attn.qkv.weight
    bias = attn.qkv.bias
    q = x @ w[:c].T + bias[:c]
    k = x @ w[c : 2 * c].T + bias[c : 2 * c] + attn.positional_encoding
    v = x @ w[2 * c :].T + bias[2 * c :]
    s = torch.log1p(torch.exp(attn.scale))  # softplus

    def phi(t):
        t = (torch.clamp(t, min=0) + 1e-6) / s
        p = t**3
        return (
            p
            / torch.linalg.vector_norm(p, dim=-1, keepdim=True)
            * torch.linalg.vector_norm(t, dim=-1, keepdim=True)
        )

    fq, fk = phi(q), phi(k)
    out = x.new_zeros(b, n, c)
    maps = x.new_zeros(b, h, n, n)
    for head in range(h):
        sl = slice(head * d, (head + 1) * d)
        sim = torch.einsum("bid,bjd->bij", fq[..., sl], fk[..., sl])
        denom = sim.sum(-1, keepdim=True)
        maps[:, head] = sim / denom
        out[..., sl] = (sim / (denom + n * 1e-6)) @ v[..., sl]
    side = math.isqrt(n)
    for head in range(h):
        sl = slice(head * d, (head + 1) * d)
        grid = v[..., sl].transpose(1, 2).reshape(b, d, side, side)
        conv = F.conv2d(grid, attn.dwc.weight, attn.dwc.bias, padding=2, groups=d)
        out[..., sl] += conv.reshape(b, d, n).transpose(1, 2)
    return out @ attn.proj.weight.T + attn.proj.bias, maps


def test_focused_linear_attention_matches_naive_quadratic_form() -> None:
    attn = FocusedLinearAttention(dim=16, num_heads=2, window_size=(6, 6)).eval()
    with torch.no_grad():
        # Non-trivial learned parts so each term of the formula is exercised.
        attn.positional_encoding.normal_(0, 0.3)
        attn.scale.normal_(0, 0.5)
        attn.qkv.weight.normal_(0, 0.3)
    x = torch.randn(3, 36, 16, dtype=torch.float64)
    attn = attn.double()
    expected, expected_map = _naive_focused_attention(attn, x.double())
    torch.testing.assert_close(attn(x), expected.double(), atol=1e-10, rtol=1e-8)

    captured = []
    handle = attn.attn_drop.register_forward_pre_hook(lambda _m, a: captured.append(a[0]))
    attn.fused_attn = False
    torch.testing.assert_close(attn(x), expected.double(), atol=1e-10, rtol=1e-8)
    handle.remove()
    torch.testing.assert_close(captured[0], expected_map.double(), atol=1e-10, rtol=1e-8)


def test_flatten_rejects_shifted_linear_windows() -> None:
    cfg = twin("flatten_swin_tiny", window_size=4)  # < the 16×16 stage-1 map → shifted windows
    with pytest.raises(ValueError, match=r"model\.window_size"):
        build_model(cfg)


@pytest.mark.parametrize(
    ("name", "key", "value", "message"),
    [
        ("flatten_swin_tiny", "attention_pattern", "LLS", r"model\.attention_pattern"),
        ("swin_tiny", "num_heads", [2], r"model\.depths"),
        ("swin_tiny", "img_size", 30, r"model\.img_size"),
        ("vit_tiny", "init", "he", r"model\.init"),
        ("vit_tiny", "num_heads", 5, r"model\.embed_dim"),
    ],
)
def test_bad_configs_name_the_key(name, key, value, message) -> None:
    with pytest.raises(ValueError, match=message):  # raised when the config is created
        build_model(twin(name, **{key: value}))


def test_unknown_family_and_preset() -> None:
    with pytest.raises(ValueError, match=r"model\.family.*gpt, vit, swin, flatten_swin"):
        build_model(twin("vit_tiny", family="resnet"))
    with pytest.raises(ValueError, match=r"model=vit_h14: no such model; available: .*vit_b16"):
        model_config("vit_h14")
