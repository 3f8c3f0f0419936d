"""The torch optimizer contract for AdamW² and SGDW² (what timm's and torch's optimizer tests check).

Each test pins one behaviour a torch or timm user relies on; where the contract is "as torch",
torch's own optimizer is the reference.
"""

from __future__ import annotations

import copy
import importlib
import pickle

import pytest
import torch
from torch import nn

from weyl.optim import SGDW2, AdamW2

CONFIGS = {
    "adamw2": (AdamW2, dict(lr=0.05, betas=(0.9, 0.95), weight_decay=0.1, tau=0.01)),
    "adamw2-off": (AdamW2, dict(lr=0.05, weight_decay=0.1, tau=None)),
    "sgdw2": (SGDW2, dict(lr=0.1, momentum=0.9, weight_decay=0.1, tau=0.01)),
}


def _mlp(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def _step(model: nn.Module, opt: torch.optim.Optimizer, seed: int) -> None:
    dtype = next(model.parameters()).dtype
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(seed)).to(dtype)
    opt.zero_grad(set_to_none=True)
    model(x).square().mean().backward()
    opt.step()


def _equal_params(a: nn.Module, b: nn.Module) -> None:
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), name


# 1. deepcopy / pickle: torch's __getstate__ keeps only defaults, state and param_groups.
@pytest.mark.parametrize("copier", ["deepcopy", "pickle"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_copied_optimizer_steps_bitwise_like_the_original(config, copier):
    cls, kw = CONFIGS[config]
    model = _mlp()
    opt = cls(model.parameters(), **kw)
    if cls is AdamW2:
        opt.keep_scratch = False  # a non-default instance setting must survive the copy
    for s in range(3):
        _step(model, opt, s)
    pair = (model, opt)
    twin_model, twin = (
        copy.deepcopy(pair) if copier == "deepcopy" else pickle.loads(pickle.dumps(pair))
    )
    public = {k for k in vars(opt) if not k.startswith("_")}
    assert {k for k in vars(twin) if not k.startswith("_")} == public  # timm's check
    assert repr(twin.lr_report()) == repr(opt.lr_report())  # repr: NaN σ̂ where the clip is off
    for s in range(3, 8):
        _step(model, opt, s)
        _step(twin_model, twin, s)
    _equal_params(model, twin_model)
    if cls is AdamW2:
        assert twin.keep_scratch is False and twin.scratch_bytes() == 0


# 2. A float "step" in a loaded state dict (older torch, other tools).
def test_float_step_in_a_loaded_state_dict_is_converted_like_torch():
    model = _mlp()
    opt = AdamW2(model.parameters(), lr=0.05, tau=0.01)
    for s in range(3):
        _step(model, opt, s)
    saved = copy.deepcopy(opt.state_dict())
    floats = copy.deepcopy(saved)
    for st in floats["state"].values():
        st["step"] = float(st["step"])
    ref_torch = torch.optim.AdamW(_mlp().parameters())
    ref_torch.load_state_dict(copy.deepcopy(floats))  # torch accepts it: so must we
    twins = []
    for sd in (saved, floats):
        m = copy.deepcopy(model)
        o = AdamW2(m.parameters(), lr=0.05, tau=0.01)
        o.load_state_dict(sd)
        assert all(torch.is_tensor(st["step"]) for st in o.state.values())
        for s in range(3, 6):
            _step(m, o, s)
        twins.append(m)
    _equal_params(*twins)


# 3. float64 parameters, vectors included, with the clip on (on both paths: the accelerator path
# forced onto the CPU too).
@pytest.mark.parametrize("batched", [False, True], ids=["cpu-path", "accelerator-path"])
def test_float64_parameters_with_the_clip_match_the_exact_rule(monkeypatch, batched):
    from tests.optim.tiny_models import ReferenceAdamW2

    sn = importlib.import_module("weyl.optim.spectral_norm")
    monkeypatch.setattr(sn, "_FORCE_STACKED", batched)

    a, b = _mlp(torch.float64), _mlp(torch.float64)
    kw = dict(lr=0.05, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, tau=0.01)
    ours = AdamW2(a.parameters(), power_iters=3, **kw)
    ref = ReferenceAdamW2(b.parameters(), sigma_floor=1e-2, **kw)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for _ in range(5):  # one full batch: W and ΔW drift smoothly (see test_adamw2)
        for m, o in ((a, ours), (b, ref)):
            for p in m.parameters():
                p.grad = None
            m(x).square().mean().backward()
            o.step()
    assert all(p.dtype == torch.float64 for p in a.parameters())
    assert ours.clip_fraction() > 0.5
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6, msg=name)


# 4. Zero-size dimensions with the clip on (on both paths).
@pytest.mark.parametrize("batched", [False, True], ids=["cpu-path", "accelerator-path"])
@pytest.mark.parametrize("shape", [(5, 0), (3, 0, 2), (0, 4)])
def test_zero_size_parameters_step_beside_normal_ones(monkeypatch, shape, batched):
    monkeypatch.setattr(
        importlib.import_module("weyl.optim.spectral_norm"), "_FORCE_STACKED", batched
    )
    empty = nn.Parameter(torch.zeros(shape))
    model, twin = _mlp(), _mlp()
    opt = AdamW2([*model.parameters(), empty], lr=0.05, tau=0.01)
    ref = AdamW2(twin.parameters(), lr=0.05, tau=0.01)
    for s in range(3):
        x = torch.randn(4, 6, generator=torch.Generator().manual_seed(s))
        for m, o in ((model, opt), (twin, ref)):
            o.zero_grad(set_to_none=True)
            m(x).square().mean().backward()
        empty.grad = torch.zeros(shape)
        opt.step()
        ref.step()
    _equal_params(model, twin)
    row = opt.lr_report()[f"g0.p{len(list(model.parameters()))}"]
    assert row["sigma_weight"] == 0 and row["clipped"] == 0
    assert row["lr_eff"] == pytest.approx(0.05)


# 5. Complex parameters: with τ off exactly torch's AdamW; with the clip on, refused.
def test_complex_parameters_with_the_clip_off_equal_torch_adamw():
    torch.manual_seed(0)
    shapes = [(4, 3), (3,)]
    init = [torch.randn(s, dtype=torch.complex64) for s in shapes] + [torch.randn(3, 2)]
    ours = [nn.Parameter(t.clone()) for t in init]
    theirs = [nn.Parameter(t.clone()) for t in init]
    kw = dict(lr=0.03, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt = AdamW2(ours, tau=None, **kw)
    ref = torch.optim.AdamW(theirs, foreach=True, **kw)
    for s in range(10):
        g = torch.Generator().manual_seed(s)
        grads = [torch.randn(t.shape, dtype=t.dtype, generator=g) for t in init]
        for params, o in ((ours, opt), (theirs, ref)):
            for p, gr in zip(params, grads):
                p.grad = gr.clone()
            o.step()
    for p, q in zip(ours, theirs):
        assert torch.equal(p, q)


def test_complex_parameters_with_the_clip_on_are_refused_in_one_line():
    z = nn.Parameter(torch.randn(4, 3, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"^param group 0: complex parameters need tau=None"):
        AdamW2([z], tau=0.01)
    real = nn.Parameter(torch.randn(3, 3))
    opt = SGDW2([real], tau=0.01)
    with pytest.raises(ValueError, match=r"^param group 1: complex parameters need tau=None"):
        opt.add_param_group({"params": [z]})
    opt.add_param_group({"params": [z], "tau": None})
    opt.param_groups[1]["tau"] = 0.02  # a schedule switching the clip on later
    real.grad, z.grad = torch.ones(3, 3), torch.ones(4, 3, dtype=torch.complex64)
    with pytest.raises(ValueError, match=r"^param group 1: complex parameters need tau=None"):
        opt.step()


# 6. Tensor learning rates and betas, by torch's rules.
@pytest.mark.parametrize("cls", [AdamW2, SGDW2])
def test_tensor_lr_must_hold_one_element_as_in_torch(cls):
    lr = torch.tensor([1e-3, 1e-3])
    with pytest.raises(ValueError) as theirs:
        torch.optim.AdamW(_mlp().parameters(), lr=lr)
    with pytest.raises(ValueError) as ours:
        cls(_mlp().parameters(), lr=lr)
    assert str(ours.value) == str(theirs.value) == "Tensor lr must be 1-element"
    a, b = _mlp(), _mlp()
    opt_t = cls(a.parameters(), lr=torch.tensor(0.05), tau=0.01)
    opt_f = cls(b.parameters(), lr=0.05, tau=0.01)
    for s in range(3):
        _step(a, opt_t, s)
        _step(b, opt_f, s)
    _equal_params(a, b)


@pytest.mark.parametrize(
    "betas, message",
    [
        ((0.9, torch.tensor(0.99)), "betas must be either both floats or both Tensors"),
        ((torch.tensor(0.9), torch.tensor([0.99, 0.9])), "Tensor betas[1] must be 1-element"),
        (("0.9", 0.99), "betas[0]='0.9': must be a float"),
    ],
)
def test_betas_follow_torchs_rules(betas, message):
    with pytest.raises(ValueError) as err:
        AdamW2(_mlp().parameters(), betas=betas)
    assert str(err.value).startswith(message)
    if message.startswith("betas must"):  # torch's own wording for the same mistake
        with pytest.raises(ValueError, match=message):
            torch.optim.Adam(_mlp().parameters(), betas=betas)


def test_one_element_tensor_betas_equal_float_betas():
    a, b = _mlp(), _mlp()
    f64 = torch.float64  # exact decimal values, so the float run is the same optimizer
    betas = (torch.tensor(0.9, dtype=f64), torch.tensor(0.95, dtype=f64))
    opt_t = AdamW2(a.parameters(), lr=0.05, betas=betas)
    opt_f = AdamW2(b.parameters(), lr=0.05, betas=(0.9, 0.95))
    assert opt_t.param_groups[0]["betas"] == (0.9, 0.95)
    for s in range(3):
        _step(a, opt_t, s)
        _step(b, opt_f, s)
    _equal_params(a, b)


# 7. A rejected add_param_group leaves the optimizer as it was.
@pytest.mark.parametrize(
    "bad, key",
    [
        ({"tau": -1.0}, "tau"),
        ({"lr": -1.0}, "lr"),
        ({"sigma_floor": -1.0}, "sigma_floor"),
        ({"betas": (0.9, torch.tensor(0.99))}, "betas"),
    ],
)
def test_rejected_param_group_is_not_added(bad, key):
    model = _mlp()
    first, last = list(model.parameters())[:2], list(model.parameters())[2:]
    opt = AdamW2(first, lr=0.05, tau=0.01)
    _step(model, opt, 0)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=rf"^param group 1: .*{key}"):
        opt.add_param_group({"params": last, **bad})
    assert len(opt.param_groups) == 1
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert after["state"].keys() == before["state"].keys()
    opt.add_param_group({"params": last})  # the same parameters, now with good values
    _step(model, opt, 1)
    assert len(opt.lr_report()) == 4


# 8. Switching an existing run from torch's AdamW/SGD to AdamW²/SGDW² mid-training.
def test_torch_adamw_state_dict_continues_under_adamw2_with_its_moments():
    model = _mlp()
    adamw = torch.optim.AdamW(model.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    for s in range(5):
        _step(model, adamw, s)
    twin = copy.deepcopy(model)
    ours = AdamW2(model.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1, tau=0.004)
    ours.load_state_dict(copy.deepcopy(adamw.state_dict()))
    group = ours.param_groups[0]
    assert (group["tau"], group["power_iters"], group["weight_iters"]) == (0.004, 3, 1)
    assert group["sigma_floor"] == 1e-2
    # The reference: an AdamW² given AdamW's moments and step counts by hand.
    ref = AdamW2(twin.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1, tau=0.004)
    for p, q in zip(model.parameters(), twin.parameters()):
        theirs = adamw.state[p]
        assert torch.equal(ours.state[p]["exp_avg"], theirs["exp_avg"])
        assert torch.equal(ours.state[p]["exp_avg_sq"], theirs["exp_avg_sq"])
        ref.state[q] = {k: theirs[k].clone() for k in ("step", "exp_avg", "exp_avg_sq")}
    for s in range(5, 10):
        _step(model, ours, s)
        _step(twin, ref, s)
    _equal_params(model, twin)
    assert ours.clip_fraction() > 0  # the clip is really on after the switch


def test_torch_sgd_state_dict_continues_under_sgdw2_with_its_momentum():
    model = _mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for s in range(5):
        _step(model, sgd, s)
    twin = copy.deepcopy(model)
    ours = SGDW2(model.parameters(), lr=0.1, momentum=0.9, tau=0.004)
    ours.load_state_dict(copy.deepcopy(sgd.state_dict()))
    assert ours.param_groups[0]["tau"] == 0.004
    ref = SGDW2(twin.parameters(), lr=0.1, momentum=0.9, tau=0.004)
    for p, q in zip(model.parameters(), twin.parameters()):
        ref.state[q] = {"momentum_buffer": sgd.state[p]["momentum_buffer"].clone()}
    for s in range(5, 10):
        _step(model, ours, s)
        _step(twin, ref, s)
    _equal_params(model, twin)


@pytest.mark.parametrize(
    "make, flag",
    [
        (lambda ps: torch.optim.AdamW(ps, amsgrad=True), "amsgrad=True"),
        (lambda ps: torch.optim.AdamW(ps, maximize=True), "maximize=True"),
        (lambda ps: torch.optim.Adam(ps, weight_decay=0.1), "decoupled_weight_decay=False"),
    ],
)
def test_state_dict_asking_for_other_maths_is_refused_and_nothing_loads(make, flag):
    model = _mlp()
    theirs = make(model.parameters())
    _step(model, theirs, 0)
    ours = AdamW2(model.parameters(), lr=0.05)
    before = copy.deepcopy(ours.state_dict())
    with pytest.raises(ValueError, match=rf"^param group 0: .*{flag}"):
        ours.load_state_dict(theirs.state_dict())
    assert ours.state_dict() == before


# 9. No empty per-parameter state (torch's SGD keeps none without momentum).
def test_sgdw2_without_momentum_keeps_state_only_where_torch_or_the_clip_needs_it():
    torch_model, model, clipped_model = _mlp(), _mlp(), _mlp()
    torch_sgd = torch.optim.SGD(torch_model.parameters(), lr=0.1, momentum=0.0)
    plain = SGDW2(model.parameters(), lr=0.1, momentum=0.0, tau=None)
    clipped = SGDW2(clipped_model.parameters(), lr=0.1, momentum=0.0, tau=0.01)
    for s in range(2):
        _step(torch_model, torch_sgd, s)
        _step(model, plain, s)
        _step(clipped_model, clipped, s)
    assert len(torch_sgd.state) == 0 and len(plain.state) == 0
    _equal_params(torch_model, model)
    # With the clip on only matrices hold state: their power-iteration vectors.
    kept = {p.ndim: set(st) for p, st in clipped.state.items()}
    assert kept == {2: {"sigma_vec_weight", "sigma_vec_update"}}
    assert len(clipped.state) == 2 and all(clipped.state.values())
