"""Diagnostics on the project's timm-based families (ViT, Swin), reached only through the view."""

import pytest
import torch
import torch.nn.functional as F

from weyl.diagnostics import Diagnostics
from weyl.diagnostics.diagnostics_config import DiagnosticsConfig
from weyl.models.attention_view import attention_views, probe_attention


def _qk_sigma1(block) -> float:
    w = block.attn.qkv.weight.detach().double()
    d = w.shape[1]
    return torch.linalg.svdvals(w[:d].T @ w[d : 2 * d])[0].item()


def test_vit_fifteen_terms_and_maps() -> None:
    vit = pytest.importorskip("weyl.models.vit")
    from weyl.models.model_config import ViTModelConfig

    torch.manual_seed(0)
    cfg = ViTModelConfig(
        img_size=16,
        patch_size=4,
        num_classes=5,
        embed_dim=32,
        depth=2,
        num_heads=4,
        drop_path_rate=0.0,
    )
    model = vit.build_vit(cfg)
    images = torch.randn(2, 3, 16, 16)
    labels = torch.tensor([1, 3])
    got = Diagnostics(
        model, DiagnosticsConfig(), images, loss_fn=lambda m: F.cross_entropy(m(images), labels)
    ).compute()
    terms = {k.split("/")[-1] for k in got if k.startswith("terms/L01/")}
    assert len(terms) == 15
    assert got["terms/L01/qk_sigma1"] == pytest.approx(_qk_sigma1(model.blocks[1]), rel=1e-4)
    maps = probe_attention(model, images)
    assert maps["L00"].shape == (2, 4, 17, 17)  # 16 patches + class token
    a = maps["L00"].double()
    entropy = -(a * torch.log(a)).sum(-1).mean((0, 2))
    assert got["attn/L00/entropy_min"] == pytest.approx(entropy.min().item(), rel=1e-5)
    assert got["terms/L00/grad_x_norm"] > 0.0


def test_swin_stages_of_different_width() -> None:
    swin = pytest.importorskip("weyl.models.swin")
    from weyl.models.model_config import SwinModelConfig

    torch.manual_seed(0)
    cfg = SwinModelConfig(
        img_size=32,
        patch_size=4,
        num_classes=5,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=4,
        drop_path_rate=0.0,
    )
    model = swin.build_swin(cfg)
    views = attention_views(model)
    images = torch.randn(2, 3, 32, 32)
    got = Diagnostics(model, DiagnosticsConfig(sec_s=[1, 2]), images).compute()
    for view in views:
        assert got[f"terms/{view.name}/qk_sigma1"] == pytest.approx(
            _qk_sigma1(view.block), rel=1e-4
        )
        assert f"attn/{view.name}/h{view.num_heads - 1:02d}/entropy" in got
    # window maps: (B·windows, H, 16, 16); entropy ≤ log(16) per row
    assert max(got[f"attn/{v.name}/entropy_mean"] for v in views) <= torch.log(torch.tensor(16.0))
    assert got["collapse/any_malignant"] == 0.0
