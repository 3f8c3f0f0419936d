"""Adding a model family, followed once (README "Adding a model family"): a config dataclass
with its entry in MODEL_CONFIGS, a builder in BUILDERS, a catalogue file — and nothing else
for Hydra's type checks, the value checks, the root config and the attention view to work."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from weyl.config import ConfigError, load_config
from weyl.models import attention_views, build_model
from weyl.models.factory import BUILDERS
from weyl.models.gpt import GPT
from weyl.models.model_config import MODEL_CONFIGS, GPTModelConfig, ModelConfig
from weyl.value_checks import require


@dataclass
class NarrowGPTConfig(ModelConfig):
    """A GPT given by its head size instead of its width (the new family of this test)."""

    FAMILY: ClassVar[str] = "narrow_gpt"
    family: str = "narrow_gpt"
    n_layer: int = 2
    n_head: int = 2
    head_dim: int = 8
    block_size: int = 64
    vocab_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self.head_dim > 0, "model.head_dim", f"must be > 0, got {self.head_dim}")


def build_narrow_gpt(cfg: NarrowGPTConfig) -> GPT:
    return GPT(
        GPTModelConfig(
            n_layer=cfg.n_layer,
            n_head=cfg.n_head,
            n_embd=cfg.n_head * cfg.head_dim,
            block_size=cfg.block_size,
            vocab_size=cfg.vocab_size,
        )
    )


CATALOGUE_ENTRY = """\
defaults:
  - narrow_gpt_schema
  - _self_

family: narrow_gpt
n_layer: 3
n_head: 2
head_dim: 4
block_size: 64
vocab_size: 128
"""


@pytest.fixture
def narrow_family(tmp_path, monkeypatch) -> list[str]:
    """The three steps of adding a family; returns the overrides selecting it."""
    monkeypatch.setitem(MODEL_CONFIGS, "narrow_gpt", NarrowGPTConfig)
    monkeypatch.setitem(BUILDERS, "narrow_gpt", build_narrow_gpt)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "narrow_tiny.yaml").write_text(CATALOGUE_ENTRY)
    # A catalogue file outside configs/ (a real family adds configs/model/narrow_tiny.yaml).
    return ["recipe=smoke/gpt_tiny", f"hydra.searchpath=[file://{tmp_path}]", "model=narrow_tiny"]


def test_a_new_family_composes_builds_and_has_an_attention_view(narrow_family) -> None:
    cfg = load_config(narrow_family)
    assert type(cfg.model) is NarrowGPTConfig
    assert (cfg.model.n_layer, cfg.model.head_dim) == (3, 4)
    model = build_model(cfg.model)
    views = attention_views(model)
    assert [v.num_heads for v in views] == [2, 2, 2] and views[0].head_dim == 4
    logits = model(torch.zeros(1, 5, dtype=torch.long))
    assert logits.shape == (1, 5, 128)


def test_a_new_family_gets_type_and_value_checks(narrow_family) -> None:
    with pytest.raises(ConfigError, match=r"^model\.head_dim: expected int, got 'wide'$"):
        load_config([*narrow_family, "model.head_dim=wide"])
    with pytest.raises(ConfigError, match=r"^model\.head_dim: must be > 0, got 0$"):
        load_config([*narrow_family, "model.head_dim=0"])
    with pytest.raises(ConfigError, match=r"^model\.n_embd: unknown key; allowed keys: .*head_dim"):
        load_config([*narrow_family, "+model.n_embd=8"])
    with pytest.raises(ConfigError, match=r"^data\.block_size: must be <= model\.block_size=32"):
        load_config([*narrow_family, "model.block_size=32"])
