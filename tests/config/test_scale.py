"""``weyl.config.scale``: the ``scale`` node of a composed config, applied and removed."""

from __future__ import annotations

import copy

import pytest

from weyl.config import ConfigError
from weyl.config.scale import apply_scale

SPEC = {
    "name": "toy",
    "steps": 10,
    "model": {"vit": {"depth": 2, "embed_dim": 32}},
    "data": {"image": {"img_size": 32}},
}


def _plain(**trainer) -> dict:
    return {
        "model": {"family": "vit", "depth": 12, "embed_dim": 768, "drop_path_rate": 0.1},
        "data": {"kind": "image", "img_size": 224, "mixup": 0.8},
        "trainer": {"max_steps": 0, "epochs": 150.0, **trainer},
        "schedule": {"warmup_steps": 0, "warmup_epochs": 60.0},
        "logger": {"wandb": {"tags": ["table1"]}},
        "scale": copy.deepcopy(SPEC),
    }


def test_sizes_replaced_rest_kept_warmup_fraction_kept() -> None:
    out = apply_scale(_plain())
    assert "scale" not in out
    assert out["model"] == {"family": "vit", "depth": 2, "embed_dim": 32, "drop_path_rate": 0.1}
    assert out["data"] == {"kind": "image", "img_size": 32, "mixup": 0.8}
    assert out["trainer"] == {"max_steps": 10, "epochs": 0.0}
    # 60 of 150 epochs = 40% of 10 steps
    assert out["schedule"] == {"warmup_steps": 4, "warmup_epochs": 0.0}
    assert out["logger"]["wandb"]["tags"] == ["table1", "scale-toy"]


def test_step_warmup_rounds_up_and_stays_shorter_than_the_run() -> None:
    plain = _plain(max_steps=600_000, epochs=0.0)
    plain["schedule"] = {"warmup_steps": 2000, "warmup_epochs": 0.0}
    assert apply_scale(plain)["schedule"]["warmup_steps"] == 1  # 0.33% of 10, rounded up
    plain = _plain(max_steps=3, epochs=0.0)
    plain["schedule"] = {"warmup_steps": 2, "warmup_epochs": 0.0}
    plain["scale"]["steps"] = 2
    assert apply_scale(plain)["schedule"]["warmup_steps"] == 1


def test_no_scale_node_is_a_no_op() -> None:
    plain = _plain()
    del plain["scale"]
    assert apply_scale(copy.deepcopy(plain)) == plain


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["model"].update(family="swin"), "scale.model: no preset for model 'swin'"),
        (lambda p: p["scale"].update(steps=0), "scale.steps: must be an integer >= 1"),
        (lambda p: p["scale"].update(width=2), "scale.width: unknown key"),
        (
            lambda p: p["schedule"].update(warmup_steps=5, warmup_epochs=0.0),
            "schedule.warmup_steps: an epoch-based recipe",
        ),
    ],
)
def test_bad_scale_fails_with_one_line_naming_the_key(edit, message: str) -> None:
    plain = _plain()
    edit(plain)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        apply_scale(plain)
