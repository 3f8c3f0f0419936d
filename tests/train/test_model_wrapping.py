"""Model wrapping: FSDP2's units are each family's blocks; unwrapping sees through wrappers."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from tests.models.twins import twin
from weyl.diagnostics.optimizer_view import parameter_layers
from weyl.models import apply_sigma_reparam, attention_views, build_model
from weyl.models.attention_view import viewed_model
from weyl.train.model_wrapping import fsdp_units, unwrap_compiled, unwrap_model

TWINS = ["gpt_tiny", "vit_tiny", "swin_tiny", "flatten_swin_tiny"]


@pytest.mark.parametrize("sigma", [False, True])
@pytest.mark.parametrize("name", TWINS)
def test_fsdp_units_are_the_blocks_that_hold_each_attention_layer(name: str, sigma: bool) -> None:
    model = build_model(twin(name))
    if sigma:
        apply_sigma_reparam(model)
    # The attention view is an independent path to the same blocks (and was the old policy).
    expected = [view.block for view in attention_views(model)]
    units = fsdp_units(model)
    assert len(units) == len(expected) and all(u is e for u, e in zip(units, expected))
    assert fsdp_units(torch.compile(model))[0] is expected[0]


def test_a_model_without_a_list_of_blocks_says_how_to_add_one() -> None:
    with pytest.raises(TypeError, match=r"transformer_blocks\(\)"):
        fsdp_units(nn.Linear(2, 2))


def test_unwrap_sees_through_compile_and_ddp(tmp_path) -> None:
    model = build_model(twin("gpt_tiny"))
    compiled = torch.compile(model)  # wrapping only; nothing is compiled until called
    assert unwrap_model(compiled) is model and unwrap_compiled(compiled) is model
    # GPT's own attention_views() is reachable through compile's attribute forwarding: the
    # viewed model is still the GPT, so parameter names carry no wrapper prefix.
    assert viewed_model(compiled) is model
    layers = parameter_layers(compiled, attention_views(compiled))
    assert layers["blocks.1.attn.qkv.weight"] == "L01"
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(model)
        both = torch.compile(ddp)
        assert unwrap_model(both) is model and unwrap_compiled(both) is ddp
        assert viewed_model(both) is model
    finally:
        dist.destroy_process_group()
