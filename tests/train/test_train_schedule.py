"""LR schedules against closed-form values."""

import math
import re

import pytest
import torch

from weyl.train.schedule import LRSchedule, build_schedule, warmup_steps_from_config
from weyl.train.train_config import ScheduleConfig


def test_no_warmup_starts_at_peak_and_cosine_endpoints():
    s = LRSchedule("cosine", peak_lr=1.0, min_lr=0.1, warmup_steps=0, total_steps=100)
    assert s.lr(0) == 1.0  # warmup=0: the first update already uses the peak
    assert s.lr(50) == pytest.approx(0.1 + 0.9 * 0.5)  # cos(π/2) = 0 → midpoint
    assert s.lr(100) == pytest.approx(0.1)  # reaches min_lr after the last update
    assert s.lr(99) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.99)))
    assert s.lr(99) > 0.1  # the last update is not spent at min_lr


def test_linear_warmup_then_cosine():
    s = LRSchedule("cosine", peak_lr=2.0, min_lr=0.0, warmup_steps=4, total_steps=12)
    assert [s.lr(i) for i in range(4)] == [0.5, 1.0, 1.5, 2.0]  # no update at lr = 0
    # decay over the remaining 8 steps: lr(4 + j) = ½·2·(1 + cos(πj/8))
    for j in range(9):
        assert s.lr(4 + j) == pytest.approx(1.0 + math.cos(math.pi * j / 8), abs=1e-12)


def test_constant_schedule_with_and_without_warmup():
    assert [LRSchedule("constant", 3.0, 0.0, 0, 5).lr(i) for i in range(5)] == [3.0] * 5
    assert [LRSchedule("constant", 3.0, 0.0, 2, 5).lr(i) for i in range(4)] == [1.5, 3.0, 3.0, 3.0]


def test_apply_scales_every_group_by_its_own_peak():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 0.1}])
    s = LRSchedule("cosine", peak_lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=10)
    for step in (0, 5, 3):
        s.apply(opt, step)
        expected = 0.5 * (1 + math.cos(math.pi * step / 10))
        assert opt.param_groups[0]["lr"] == pytest.approx(expected)
        assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * expected)
    assert [g["initial_lr"] for g in opt.param_groups] == [1.0, 0.1]


def test_warmup_in_epochs_converts_with_samples_per_epoch():
    # 60 epochs of 1,281,167 images at batch 4096 → round(18767.09) steps
    assert (
        warmup_steps_from_config(0, 60.0, samples_per_epoch=1_281_167, global_batch_size=4096)
        == 18767
    )
    cfg = ScheduleConfig(name="cosine", warmup_epochs=2.0)
    s = build_schedule(
        cfg, peak_lr=1e-3, total_steps=100, samples_per_epoch=80, global_batch_size=8
    )
    assert s.warmup_steps == 20


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(name="linear"), "schedule.name"),
        (dict(warmup_steps=10, total_steps=10), "warmup"),
        (dict(min_lr=2.0), "schedule.min_lr"),
        (dict(total_steps=0), "trainer.max_steps"),
    ],
)
def test_bad_schedules_name_the_key(kwargs, key):
    base = dict(name="cosine", peak_lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=10)
    with pytest.raises(ValueError, match=re.escape(key)):
        LRSchedule(**{**base, **kwargs})
    with pytest.raises(ValueError, match=r"warmup_steps and schedule\.warmup_epochs"):
        warmup_steps_from_config(5, 1.0, samples_per_epoch=10, global_batch_size=2)


# --- the code bases' own schedules, step for step -----------------------------------------


def _timm_lrs(steps: int, peak: float, **kwargs) -> list[float]:
    """The LR timm's CosineLRScheduler sets for each update when stepped per update
    (``t_in_epochs=False``, ``step_update(s)`` before update ``s``, as timm's train.py does)."""
    from timm.scheduler import CosineLRScheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = CosineLRScheduler(opt, t_in_epochs=False, cycle_limit=1, **kwargs)
    lrs = []
    for s in range(steps):
        sched.step_update(s)
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


@pytest.mark.parametrize(("warmup", "w0"), [(0, 0.0), (7, 0.0), (7, 1e-6), (1, 1e-4)])
def test_overlap_is_timm_cosine_without_warmup_prefix_at_every_step(warmup, w0):
    # Swin/FLatten build_scheduler: t_initial = the whole run, the warmup overlaps its start.
    total, peak, low = 30, 1e-3, 1e-5
    ours = LRSchedule("cosine", peak, low, warmup, total, warmup_lr_init=w0, warmup_shape="overlap")
    ref = _timm_lrs(total + 3, peak, t_initial=total, lr_min=low, warmup_t=warmup,
                    warmup_lr_init=w0)  # fmt: skip
    for s, expected in enumerate(ref):
        assert ours.lr(s) == pytest.approx(expected, rel=1e-12, abs=1e-15), s


def test_overlap_with_a_shorter_decay_matches_timm_t_initial():
    # "train for 30, decay over 20": timm holds lr_min once t >= t_initial (cycle_limit=1)
    ours = LRSchedule("cosine", 1.0, 0.1, 4, 30, decay_steps=20, warmup_shape="overlap")
    ref = _timm_lrs(30, 1.0, t_initial=20, lr_min=0.1, warmup_t=4)
    assert [ours.lr(s) for s in range(30)] == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("w0", [0.0, 1e-4])
def test_restart_is_timm_warmup_prefix_after_the_warmup_and_one_step_ahead_during_it(w0):
    # timm's prefix ramp is w0 + (P - w0)·t/W (update 0 at w0); ours is (s + 1)/W (update 0
    # already moves), i.e. ours(s) = timm(s + 1) during the warmup; the cosine is the same.
    total, warmup, peak, low = 30, 6, 1e-3, 1e-5
    ours = LRSchedule("cosine", peak, low, warmup, total, warmup_lr_init=w0)
    ref = _timm_lrs(total + 2, peak, t_initial=total - warmup, lr_min=low, warmup_t=warmup,
                    warmup_lr_init=w0, warmup_prefix=True)  # fmt: skip
    for s in range(warmup):
        assert ours.lr(s) == pytest.approx(ref[s + 1], rel=1e-12), s
    for s in range(warmup, total + 2):
        assert ours.lr(s) == pytest.approx(ref[s], rel=1e-12), s


def _nanogpt_lr(it, learning_rate, warmup_iters, lr_decay_iters, min_lr):
    # nanoGPT train.py get_lr, restated
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


@pytest.mark.parametrize("warmup", [0, 5])
def test_nanogpt_shape_is_nanogpt_get_lr_and_trains_for_n_decays_over_m(warmup):
    # Appendix K: GPT-L trains 100K of nanoGPT's 600K-step decay; scaled down: 20 of 60.
    ours = LRSchedule("cosine", 6e-4, 6e-5, warmup, 20, decay_steps=60, warmup_shape="nanogpt")
    for s in range(20):
        assert ours.lr(s) == pytest.approx(_nanogpt_lr(s, 6e-4, warmup, 60, 6e-5), rel=1e-12)
    assert ours.lr(19) > 3e-4  # stopped a third of the way down the decay
    full = LRSchedule("cosine", 6e-4, 6e-5, warmup, 80, decay_steps=60, warmup_shape="nanogpt")
    assert [full.lr(s) for s in range(61, 80)] == [6e-5] * 19  # min_lr after decay_steps


def test_the_three_shapes_agree_without_warmup():
    curves = [
        [LRSchedule("cosine", 1.0, 0.01, 0, 25, warmup_shape=shape).lr(s) for s in range(26)]
        for shape in ("restart", "overlap", "nanogpt")
    ]
    assert curves[0] == curves[1] == curves[2]


def test_default_keys_keep_the_old_curve():
    # restart, warmup_lr_init 0, decay over the run: the formula of the tests above
    cfg = ScheduleConfig(name="cosine", warmup_steps=4)
    s = build_schedule(cfg, peak_lr=2.0, total_steps=12, samples_per_epoch=0, global_batch_size=1)
    assert (s.decay_steps, s.warmup_lr_init, s.warmup_shape) == (None, 0.0, "restart")
    assert [s.lr(i) for i in range(4)] == [0.5, 1.0, 1.5, 2.0]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(warmup_shape="linear"), "schedule.warmup_shape"),
        (dict(decay_steps=0), "schedule.decay_steps"),
        (dict(warmup_lr_init=-1.0), "schedule.warmup_lr_init"),
    ],
)
def test_bad_new_schedule_keys_name_the_key(kwargs, key):
    from weyl.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(key)):
        ScheduleConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        (dict(warmup_steps=4, decay_steps=4), "schedule.decay_steps"),
        (dict(warmup_lr_init=2.0), "schedule.warmup_lr_init"),
    ],
)
def test_bad_resolved_schedules_name_the_key(kwargs, key):
    base = dict(name="cosine", peak_lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=10)
    with pytest.raises(ValueError, match=re.escape(key)):
        LRSchedule(**{**base, **kwargs})
    # the overlap decay starts at step 0, so it may end inside the warmup
    LRSchedule(**{**base, "warmup_steps": 4, "decay_steps": 4, "warmup_shape": "overlap"})


# --- resume: the schedule is a function of the step, old run dirs stay resumable -----------


def test_old_config_without_the_new_keys_is_not_drift(tmp_path):
    # A config.yaml written before decay_steps / warmup_lr_init / warmup_shape existed resumes
    # under resume=auto: the relaunch fills the keys with their defaults, which are the old curve.
    from tests.train.fixtures import tiny_config
    from weyl.config.compose import plain_config
    from weyl.train.config_drift import trajectory_changes
    from weyl.train.launch import with_defaults

    plain = plain_config(tiny_config(tmp_path / "run", schedule=ScheduleConfig(warmup_steps=3)))
    old = {**plain, "schedule": dict(plain["schedule"])}
    for key in ("decay_steps", "warmup_lr_init", "warmup_shape"):
        del old["schedule"][key]
    assert trajectory_changes(with_defaults(old), plain) == {}
    # ...while choosing another value of a new key is a change of the run
    other = {**plain, "schedule": {**plain["schedule"], "warmup_shape": "overlap"}}
    assert set(trajectory_changes(with_defaults(old), other)) == {"schedule.warmup_shape"}


def test_resume_with_the_new_keys_replays_the_lr_sequence(tmp_path):
    from tests.train.fixtures import (
        assert_same_trajectory,
        launch,
        step_records,
        synthetic_factories,
        tiny_config,
        worker_env,
    )
    from weyl.train import run_training

    schedule = ScheduleConfig(
        warmup_steps=4, warmup_lr_init=1e-4, warmup_shape="overlap", decay_steps=7, min_lr=1e-4
    )
    kw = dict(max_steps=9, ckpt_every=3, schedule=schedule)
    base = run_training(tiny_config(tmp_path / "base", **kw), factories=synthetic_factories())
    assert base["state"] == "finished"
    cfg = tiny_config(tmp_path / "killed", **kw)
    r = launch(cfg, env=worker_env(WEYL_TEST_KILL_AT_STEP="5"))  # resumes from step 3
    assert r.returncode == -9, r.stdout[-2000:]
    resumed = run_training(cfg, factories=synthetic_factories())
    assert resumed["state"] == "finished"
    records = step_records(tmp_path / "killed")
    assert_same_trajectory(records, step_records(tmp_path / "base"))
    # the record of step s holds the LR of update s - 1: timm's ramp, then the overlapping
    # cosine over 7 steps (timm: t_initial=7), min_lr after it
    reference = _timm_lrs(9, 3e-3, t_initial=7, lr_min=1e-4, warmup_t=4, warmup_lr_init=1e-4)
    logged = [records[s]["lr"] for s in range(1, 10)]
    assert logged == pytest.approx(reference, rel=1e-12)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["schedule.warmup_shape=linear"], "schedule.warmup_shape"),
        (["schedule.decay_steps=0"], "schedule.decay_steps"),
        (["schedule.warmup_steps=10", "schedule.decay_steps=10"], "schedule.decay_steps"),
        (["schedule.warmup_lr_init=1.0"], "schedule.warmup_lr_init"),
    ],
)
def test_bad_new_keys_fail_at_compose_time_in_one_line(overrides, key):
    from weyl.config import ConfigError
    from weyl.config.compose import load_config

    with pytest.raises(ConfigError, match=re.escape(key)) as err:
        load_config(["recipe=smoke/gpt_tiny", *overrides])
    assert "\n" not in str(err.value)


def test_toy_scale_keeps_the_decay_ratio():
    from weyl.config import ConfigError
    from weyl.config.scale import scaled_decay

    gpt_l = {"max_steps": 100_000, "epochs": 0.0}
    assert scaled_decay({"decay_steps": 600_000}, gpt_l, 20) == 120
    assert scaled_decay({"decay_steps": None}, gpt_l, 20) is None
    with pytest.raises(ConfigError, match=r"schedule\.decay_steps"):
        scaled_decay({"decay_steps": 5000}, {"max_steps": 0, "epochs": 300.0}, 20)
