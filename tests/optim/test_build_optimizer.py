"""build_optimizer: names, weight-decay rules (timm conventions), wrappers, bad names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.optim.tiny_models import TinyTransformer
from weyl.optim import SGDW2, AdamW2, build_optimizer
from weyl.optim.optim_config import OptimConfig


class Wrapper(nn.Module):
    """A timm-style model held by a wrapper, with a relative-position-bias table."""

    def __init__(self) -> None:
        super().__init__()
        self.model = TinyTransformer()
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))

    def no_weight_decay(self) -> set[str]:
        return {"*relative_position_bias_table"}


def _groups(opt) -> dict[str, float]:
    return {n: g["weight_decay"] for g in opt.param_groups for n in g["param_names"]}


def test_adamw2_groups_and_decay_rules():
    cfg = OptimConfig(name="adamw2", lr=1e-3, betas=[0.9, 0.95], weight_decay=0.1, tau=0.004)
    opt = build_optimizer(Wrapper(), cfg)
    assert isinstance(opt, AdamW2)
    wd = _groups(opt)
    assert wd["model.encoder.layers.0.linear1.weight"] == 0.1
    assert wd["model.stem.weight"] == 0.1
    for name in (
        "model.pos_embed",  # submodule's no_weight_decay(), prefixed
        "model.cls_token",
        "relative_position_bias_table",  # fnmatch pattern
        "model.norm.weight",  # 1-D
        "model.stem.bias",
    ):
        assert wd[name] == 0.0, name
    assert all(g["tau"] == 0.004 and g["betas"] == (0.9, 0.95) for g in opt.param_groups)
    n_params = sum(1 for _ in Wrapper().parameters())
    assert len(wd) == n_params


def test_names_ignore_ddp_and_compile_wrappers():
    class FakeDDP(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

    opt = build_optimizer(FakeDDP(TinyTransformer()), OptimConfig(name="adamw2"))
    assert "pos_embed" in _groups(opt) and _groups(opt)["pos_embed"] == 0.0


@pytest.mark.parametrize(
    "name, cls", [("adamw", torch.optim.AdamW), ("sgd", SGDW2), ("sgdw2", SGDW2)]
)
def test_other_optimizers(name, cls):
    opt = build_optimizer(TinyTransformer(), OptimConfig(name=name, lr=0.1))
    assert type(opt) is cls
    assert opt.param_groups[0]["lr"] == 0.1
    if name == "adamw":
        assert opt.param_groups[0]["foreach"] is True
    if name == "sgd":  # the baseline: SGDW² with the clip off, whatever optim.tau says
        assert all(g["tau"] is None for g in opt.param_groups)


def test_unknown_name_raises_naming_the_key():
    with pytest.raises(ValueError, match=r"optim\.name: unknown 'lion'; choose one of: .*adamw2"):
        build_optimizer(TinyTransformer(), OptimConfig(name="lion"))
