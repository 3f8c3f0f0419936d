"""AdamW² against torch.optim.AdamW, exact-SVD σ₁ and a plain-loop Algorithm 1."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch

from tests.optim.tiny_models import ReferenceAdamW2, TinyTransformer, exact_sigma, loss_of
from weyl.optim import AdamW2


def _model(seed: int = 0) -> TinyTransformer:
    torch.manual_seed(seed)
    return TinyTransformer()


def _train(model, opt, steps: int, start: int = 0, scheduler=None, fixed: bool = False) -> None:
    for s in range(start, start + steps):
        opt.zero_grad(set_to_none=True)
        loss_of(model, 0 if fixed else s).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("tau", [None, math.inf])
def test_tau_off_equals_torch_adamw_over_50_steps(tau):
    a, b = _model(), _model()
    kw = dict(lr=3e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    ours = AdamW2(a.parameters(), tau=tau, **kw)
    ref = torch.optim.AdamW(b.parameters(), foreach=True, **kw)
    _train(a, ours, 50)
    _train(b, ref, 50)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7, msg=name)
    rep = ours.lr_report()
    assert all(r["lr_eff"] == pytest.approx(3e-3) and r["clipped"] == 0 for r in rep.values())


def test_effective_lr_matches_exact_spectral_ratio():
    # Full-batch steps: W and ΔW drift smoothly, the regime where one warm-started power
    # iteration per step tracks σ₁. (With a new tiny batch each step ΔW's flat, sign-like
    # spectrum makes its top direction jump and σ̂₁(ΔW) lag; see weyl.optim.spectral_norm.)
    model = _model()
    opt = AdamW2(model.parameters(), lr=1e-2, betas=(0.9, 0.95), tau=0.002, weight_decay=0.1)
    _train(model, opt, 15, fixed=True)  # warm the power-iteration vectors up
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, opt, 1, start=15, fixed=True)
    rep = opt.lr_report()
    names = [n for n, _ in model.named_parameters()]
    checked = 0
    for i, (n, p) in enumerate(model.named_parameters()):
        st = opt.state[p]
        t = st["step"].item()
        delta = (st["exp_avg"] / (1 - 0.9**t)) / ((st["exp_avg_sq"] / (1 - 0.95**t)).sqrt() + 1e-8)
        expected = min(1e-2, 0.002 * max(exact_sigma(before[n]), 1e-2) / exact_sigma(delta))
        got = rep[f"g0.p{i}"]
        assert got["lr_eff"] == pytest.approx(expected, rel=0.02), names[i]
        assert got["clipped"] == float(expected < 1e-2)
        checked += got["clipped"]
    assert checked >= len(names) // 2  # the clip is really active in this test


# wd > 0 applies decay and step as one folded lerp; wd = 0 takes the plain add path.
@pytest.mark.parametrize("wd", [0.1, 0.0])
def test_batched_matches_plain_loop_reference_over_100_steps(wd):
    a, b = _model(), _model()
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=wd, tau=0.003)
    ours = AdamW2(a.parameters(), power_iters=3, sigma_floor=1e-2, **kw)
    ref = ReferenceAdamW2(b.parameters(), sigma_floor=1e-2, **kw)
    fired_ref = fired_ours = 0
    for s in range(100):
        for m, o in ((a, ours), (b, ref)):
            for p in m.parameters():
                p.grad = None
            loss_of(m, 0).backward()  # full batch: see the note in the test above
            o.step()
        rep = ours.lr_report()
        ours_lrs = [rep[f"g0.p{i}"]["lr_eff"] for i in range(len(ref.lr_eff))]
        fired_ours += sum(x < 1e-2 for x in ours_lrs)
        fired_ref += sum(x < 1e-2 for x in ref.lr_eff)
        if s >= 10:  # after the vectors have warmed up on the sign-like first updates
            assert ours_lrs == pytest.approx(ref.lr_eff, rel=0.02), s
    assert fired_ref > 100  # the clip fired often enough to matter
    assert abs(fired_ours - fired_ref) <= 0.05 * fired_ref
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=0.02, atol=1e-3, msg=name)


def test_tau_changed_between_steps_takes_effect_like_the_reference():
    """A τ schedule writes ``group["tau"]`` between steps, as LR schedulers write ``lr``."""
    a, b = _model(), _model()
    kw = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    ours = AdamW2(a.parameters(), power_iters=3, sigma_floor=1e-2, tau=0.003, **kw)
    ref = ReferenceAdamW2(b.parameters(), sigma_floor=1e-2, tau=0.003, **kw)
    phases = [(0, 0.003), (25, 0.006), (35, None)]
    fired: dict[float | None, int] = {}
    for s in range(45):
        tau = next(t for start, t in reversed(phases) if s >= start)
        ours.param_groups[0]["tau"] = tau
        ref.tau = tau
        for m, o in ((a, ours), (b, ref)):
            for p in m.parameters():
                p.grad = None
            loss_of(m, 0).backward()
            o.step()
        rep = ours.lr_report()
        lrs = [rep[f"g0.p{i}"]["lr_eff"] for i in range(len(ref.lr_eff))]
        fired[tau] = fired.get(tau, 0) + sum(x < 1e-2 for x in ref.lr_eff)
        if tau is None:
            assert lrs == [1e-2] * len(lrs) and ref.lr_eff == lrs
            assert all(math.isnan(r["sigma_weight"]) for r in rep.values())
        elif s >= 10:  # after the vectors have warmed up (see the test above)
            assert lrs == pytest.approx(ref.lr_eff, rel=0.02), s
        if s == 34:  # before unclipped steps at lr 1e-2 amplify the 2% tolerance
            for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
                torch.testing.assert_close(pa, pb, rtol=0.02, atol=1e-3, msg=name)
    assert fired[0.003] > 100 and fired[0.006] > 100 and fired[None] == 0


def test_clip_rule_is_built_once_per_group_not_per_step(monkeypatch):
    from weyl.optim import WeylClip

    built = []
    validate = WeylClip.__post_init__
    monkeypatch.setattr(WeylClip, "__post_init__", lambda self: built.append(validate(self)))
    model = _model()
    groups = [
        {"params": list(model.encoder.parameters())},
        {"params": list(model.head.parameters()), "tau": 0.02},
    ]
    opt = AdamW2(groups, lr=1e-2, tau=0.01)
    assert len(built) == 2
    _train(model, opt, 4)
    assert len(built) == 2
    opt.param_groups[1]["tau"] = 0.03
    _train(model, opt, 2, start=4)
    assert len(built) == 3
    opt.load_state_dict(opt.state_dict())
    assert len(built) == 7  # per group: checked before anything is loaded, then installed


def test_bad_tau_set_between_steps_names_the_group():
    model = _model()
    opt = AdamW2(model.parameters(), lr=1e-2, tau=0.01)
    _train(model, opt, 1)
    opt.param_groups[0]["tau"] = -0.5
    with pytest.raises(ValueError, match=r"param group 0: tau=-0.5: must be > 0"):
        _train(model, opt, 1, start=1)


def test_loaded_state_dict_brings_its_groups_tau():
    a, b = _model(), _model()
    off = AdamW2(a.parameters(), lr=3e-3, tau=None)
    _train(a, off, 2)
    ours = AdamW2(b.parameters(), lr=3e-3, tau=0.001)
    b.load_state_dict(a.state_dict())
    # Copies: a loaded state dict shares its tensors with the optimizer it came from.
    ours.load_state_dict(copy.deepcopy(off.state_dict()))
    ref = torch.optim.AdamW(a.parameters(), lr=3e-3, foreach=True)
    ref.load_state_dict(copy.deepcopy(off.state_dict()))  # tau & co. are carried, not used
    _train(a, ref, 3, start=2)
    _train(b, ours, 3, start=2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trip_continues_bitwise():
    model = _model()
    opt = AdamW2(model.parameters(), lr=2e-2, tau=0.01)
    _train(model, opt, 5)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    stem = [n for n, _ in model.named_parameters()].index("stem.weight")
    assert "sigma_vec_weight" not in opt.state_dict()["state"][0]  # cls_token: a vector
    vec = opt.state_dict()["state"][stem]["sigma_vec_weight"]
    assert vec.dtype == torch.float32 and vec.shape == (4,)  # conv (16,1,2,2) → (16, 4)
    _train(model, opt, 5, start=5)
    buf.seek(0)
    saved = torch.load(buf)
    twin = _model(seed=1)
    twin.load_state_dict(saved["model"])
    opt2 = AdamW2(twin.parameters(), lr=2e-2, tau=0.01)
    opt2.load_state_dict(saved["opt"])
    _train(twin, opt2, 5, start=5)
    for pa, pb in zip(model.parameters(), twin.parameters()):
        assert torch.equal(pa, pb)


def test_bf16_params_keep_fp32_vectors_through_load():
    model = _model().to(torch.bfloat16)
    opt = AdamW2(model.parameters(), lr=1e-2, tau=0.01)
    for s in range(2):
        opt.zero_grad()
        x = torch.randn(
            4, 1, 4, 4, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(s)
        )
        model(x).float().square().mean().backward()
        opt.step()
    sd = copy.deepcopy(opt.state_dict())
    opt2 = AdamW2(model.parameters(), lr=1e-2, tau=0.01)
    opt2.load_state_dict(sd)
    stem = [n for n, _ in model.named_parameters()].index("stem.weight")
    p = model.stem.weight
    assert opt2.state[p]["sigma_vec_weight"].dtype == torch.float32
    assert opt2.state[p]["exp_avg"].dtype == torch.bfloat16
    assert torch.equal(opt2.state[p]["sigma_vec_weight"], sd["state"][stem]["sigma_vec_weight"])
    assert all(math.isfinite(r["lr_eff"]) for r in opt.lr_report().values())


def test_zero_initialised_bias_and_beta_train():
    model = _model()
    zero = {n: p for n, p in model.named_parameters() if not p.detach().abs().sum()}
    assert {"head.bias", "norm.bias", "cls_token"} <= set(zero)
    literal = _model()
    opt_literal = AdamW2(literal.parameters(), lr=1e-2, tau=0.004, sigma_floor=0.0)
    _train(literal, opt_literal, 5)
    # Literal Algorithm 1: Rule 1 against σ₁ = 0 gives α = 0, so they never move.
    assert all(not dict(literal.named_parameters())[n].detach().any() for n in zero)
    opt = AdamW2(model.parameters(), lr=1e-2, tau=0.004)
    _train(model, opt, 10)
    early = {n: p.detach().norm().item() for n, p in zero.items()}
    _train(model, opt, 20, start=10)
    for n, p in zero.items():
        # With the floor a zero tensor may move τ·floor in norm per step; it keeps growing.
        assert p.detach().norm() > max(early[n], 0.25 * 30 * 0.004 * 1e-2), n


def test_scheduler_and_per_group_tau():
    model = _model()
    clipped = [p for n, p in model.named_parameters() if n.startswith("encoder")]
    free = [p for n, p in model.named_parameters() if not n.startswith("encoder")]
    names = [n for n, _ in model.named_parameters() if n.startswith("encoder")]
    free_names = [n for n, _ in model.named_parameters() if not n.startswith("encoder")]
    opt = AdamW2(
        [
            {"params": clipped, "param_names": names},
            {"params": free, "param_names": free_names, "tau": None},
        ],
        lr=5e-2,
        tau=0.001,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    _train(model, opt, 3, scheduler=sched)
    rep = opt.lr_report()
    assert rep["encoder.layers.0.linear1.weight"]["lr"] == pytest.approx(5e-2 / 3)
    assert rep["encoder.layers.0.linear1.weight"]["clipped"] == 1.0
    assert rep["head.weight"]["lr_eff"] == pytest.approx(5e-2 / 3)
    assert math.isnan(rep["head.weight"]["sigma_weight"])
    assert 0 < opt.clip_fraction() < 1


def test_initial_vectors_ignore_global_rng():
    outs = []
    for seed in (0, 123):
        model = _model()
        opt = AdamW2(model.parameters(), lr=1e-2)
        torch.manual_seed(seed)
        _train(model, opt, 2)
        outs.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*outs):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"tau": -1.0}, "tau"),
        ({"power_iters": 0}, "power_iters"),
        ({"betas": (1.0, 0.9)}, "betas"),
        ({"sigma_floor": -1.0}, "sigma_floor"),
    ],
)
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        AdamW2(_model().parameters(), **kwargs)


def test_cpu_scratch_is_reused_and_stays_out_of_the_state_dict():
    model = _model()
    opt = AdamW2(model.parameters(), lr=1e-2, tau=0.01)
    _train(model, opt, 1)
    scratch = dict(opt._scratch)
    _train(model, opt, 2, start=1)
    assert opt.scratch_bytes() == sum(p.numel() * 4 for p in model.parameters())
    assert all(opt._scratch[k][1] is buf for k, (_, buf) in scratch.items())  # no realloc
    keys = {k for st in opt.state_dict()["state"].values() for k in st}
    assert keys == {"step", "exp_avg", "exp_avg_sq", "sigma_vec_weight", "sigma_vec_update"}
    assert AdamW2(model.parameters(), tau=None).scratch_bytes() == 0


def test_keep_scratch_off_gives_the_same_trajectory_without_kept_buffers():
    """The CPU scratch buffer is a speed choice only: both settings take identical steps."""
    torch.manual_seed(0)
    a = torch.nn.Linear(16, 16)
    b = torch.nn.Linear(16, 16)
    b.load_state_dict(a.state_dict())
    opt_a = AdamW2(a.parameters(), lr=0.05, tau=0.01, weight_decay=0.1)
    opt_b = AdamW2(b.parameters(), lr=0.05, tau=0.01, weight_decay=0.1, keep_scratch=False)
    for _ in range(5):
        x = torch.randn(8, 16)
        for model, opt in ((a, opt_a), (b, opt_b)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert opt_a.scratch_bytes() > 0 and opt_b.scratch_bytes() == 0
