"""Fig. 15's per-tensor learning-rate view: which blocks, which keys, and what the values mean."""

import pytest
import torch

from weyl.diagnostics.diagnostics_config import DiagnosticsConfig, select_lr_layers
from weyl.diagnostics.optimizer_view import TensorLRView, clip_active
from weyl.diagnostics.tensor_kinds import tensor_kind
from weyl.models import build_model
from weyl.models.attention_view import attention_views
from weyl.models.model_config import GPTModelConfig
from weyl.optim import build_optimizer
from weyl.optim.optim_config import OptimConfig
from weyl.value_checks import ConfigError

LAYERS = [f"L{i:02d}" for i in range(12)]


def test_layer_selection_follows_the_config_words():
    assert select_lr_layers(LAYERS, ["first", "middle", "last"]) == ["L00", "L06", "L11"]
    assert select_lr_layers(LAYERS, ["all"]) == LAYERS
    assert select_lr_layers(LAYERS, ["L05", "3", "last"]) == ["L03", "L05", "L11"]
    assert select_lr_layers(LAYERS[:2], ["first", "middle", "last"]) == ["L00", "L01"]
    with pytest.raises(ConfigError, match=r"^diagnostics\.lr_layers: block 12 does not exist"):
        select_lr_layers(LAYERS, ["12"])


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"lr_every": -1}, "diagnostics.lr_every"),
        ({"lr_layers": []}, "diagnostics.lr_layers"),
        ({"lr_layers": ["first", "penultimate"]}, "diagnostics.lr_layers"),
    ],
)
def test_bad_lr_log_settings_fail_with_one_line_naming_the_key(changes, key):
    with pytest.raises(ValueError, match=rf"^{key}: ") as err:
        DiagnosticsConfig(**changes)
    assert "\n" not in str(err.value)


def _view_kinds(view):
    """The kind of each block parameter as the attention view's own modules say it."""
    kinds = {}
    roles = [(view.norm1, "gamma1", "beta1"), (view.norm2, "gamma2", "beta2")]
    for ref, kind in (("qkv", "attn_qkv"), ("proj", "attn_proj"), ("fc1", "mlp_w1")):
        roles.append((view.extra.get(ref), kind, f"{kind}_bias"))
    roles.append((view.extra.get("fc2"), "mlp_w2", "mlp_w2_bias"))
    for module, weight_kind, bias_kind in roles:
        if module is None:
            continue
        for leaf, kind in (("weight", weight_kind), ("bias", bias_kind)):
            p = getattr(module, leaf, None)
            if isinstance(p, torch.nn.Parameter):
                kinds[id(p)] = kind
    return {name: kinds.get(id(p), "other") for name, p in view.block.named_parameters()}


@pytest.mark.parametrize(
    ("twin_name", "changes"),
    [
        ("gpt_tiny", {"bias": True}),
        ("gpt_tiny", {"sigma_reparam": True}),
        ("vit_tiny", {}),
        ("swin_tiny", {}),
        ("flatten_swin_tiny", {}),
    ],
)
def test_tensor_kinds_from_names_agree_with_the_attention_view(twin_name, changes):
    from tests.models.twins import twin

    model = build_model(twin(twin_name, **changes))
    seen = set()
    for view in attention_views(model):
        for name, kind in _view_kinds(view).items():
            assert tensor_kind(name) == kind, (view.name, name)
            seen.add(kind)
    assert {"gamma1", "gamma2", "attn_qkv", "attn_proj", "mlp_w1", "mlp_w2"} <= seen


def _gpt(n_layer=4):
    torch.manual_seed(0)
    return build_model(
        GPTModelConfig(n_layer=n_layer, n_head=2, n_embd=16, block_size=8, vocab_size=32)
    )


def test_view_reports_every_tensor_of_the_chosen_blocks_as_algorithm_1_clipped_it():
    model = _gpt()
    tau, lr = 0.02, 1e-2
    opt = build_optimizer(model, OptimConfig(name="adamw2", lr=lr, tau=tau))
    view = TensorLRView(model, attention_views(model), ["first", "middle", "last"])
    assert view.layers == ["L00", "L02", "L03"]
    expected = {
        f"{prefix}/L{i:02d}/{name}": f"blocks.{i}.{name}"
        for i in (0, 2, 3)
        for name, _ in model.blocks[i].named_parameters()
        for prefix in ("lr", "clip")
    }
    flags = []
    for _ in range(3):
        idx = torch.randint(0, 32, (4, 8))
        model(idx).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
        report = opt.lr_report()
        got = view(report)
        assert set(got) == set(expected)
        for key, full in expected.items():
            row = report[full]
            if key.startswith("clip/"):
                assert got[key] == row["clipped"]
                continue
            # Algorithm 1 lines 7-8 with the documented σ floor, from the optimizer's own σ̂.
            anchor = max(row["sigma_weight"], opt.defaults.get("sigma_floor", 1e-2))
            limit = tau * anchor / row["sigma_update"]
            assert got[key] == row["lr_eff"]
            assert got[key] == pytest.approx(min(lr, limit), rel=1e-5)
            fired = got[key.replace("lr/", "clip/", 1)]
            flags.append(fired)
            if abs(lr / limit - 1) > 1e-5:  # the optimizer decides in fp32: no ties here
                assert fired == float(lr > limit)
            if fired:
                assert got[key] < lr
            else:
                assert got[key] == pytest.approx(row["lr"], rel=1e-6)
    assert 0 < sum(flags) < len(flags)  # both cases occurred


def test_view_strips_wrapper_prefixes_and_skips_other_tensors():
    model = _gpt(n_layer=2)
    view = TensorLRView(model, attention_views(model), ["L01"])
    row = {"lr": 1.0, "lr_eff": 0.5, "clipped": 1.0}
    report = {"module.blocks.1.attn.qkv.weight": row, "blocks.0.attn.qkv.weight": row}
    report["module.wte.weight"] = row
    assert view(report) == {"lr/L01/attn.qkv.weight": 0.5, "clip/L01/attn.qkv.weight": 1.0}
    with pytest.raises(ValueError, match="lr_eff"):
        view({"blocks.1.ln_1.weight": {"lr": 1.0, "clipped": 0.0}})


def test_clip_active_only_for_an_optimizer_whose_clip_is_on():
    model = _gpt(n_layer=1)
    assert not clip_active(torch.optim.AdamW(model.parameters()))
    assert not clip_active(build_optimizer(model, OptimConfig(name="adamw2", tau=None)))
    assert clip_active(build_optimizer(model, OptimConfig(name="adamw2", tau=0.01)))
