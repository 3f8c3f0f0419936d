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
