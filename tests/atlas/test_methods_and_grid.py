"""The atlas's method table and grid, composed only (no training).

Every method must compose with the CPU demo's recipe and differ from plain AdamW without warmup
in its own switch and nothing a fair comparison shares (data, seed, LR, steps, schedule, width).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from weyl.atlas.grid import AtlasGrid, RunPoint, lr_text
from weyl.atlas.methods import METHODS
from weyl.config import load_config
from weyl.config.compose import compose_raw

STEPS = 300
# What each method must set, written from the methods' definitions (not read from the table).
SWITCHES = {
    "adamw": {"optim.name": "adamw", "schedule.warmup_steps": 0},
    "adamw_warmup": {"optim.name": "adamw", "schedule.warmup_steps": 30},
    "adamw2": {"optim.name": "adamw2", "optim.tau": 0.02},
    "qk_norm": {"optim.name": "adamw", "model.qk_norm": True},
    "sigma_reparam": {"optim.name": "adamw", "model.sigma_reparam": True},
    "z_loss": {"optim.name": "adamw", "trainer.z_loss": 1e-4},
    "stable_adamw": {"optim.name": "stable_adamw"},
    "radam": {"optim.name": "radam"},
    "gi_adam": {"optim.name": "gi_adam"},
    "muon": {"optim.name": "muon", "optim.muon_adjust_lr": "match_rms_adamw"},
}
# Keys a method may change beyond its switch: its optimizer's own keys, its model switch.
MAY_DIFFER = {
    "adamw": (),
    "adamw_warmup": ("schedule.warmup_steps",),
    "qk_norm": ("model.qk_norm",),
    "sigma_reparam": ("model.sigma_reparam",),
    "z_loss": ("trainer.z_loss",),
}
NAMES = ("name", "run_dir", "logger.wandb.name", "logger.wandb.tags")


def flat(obj, prefix: str = "") -> dict:
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.fixture(scope="module")
def configs() -> dict[str, dict]:
    grid = AtlasGrid("cpu/gpt_cpu", list(METHODS), [1e-2], [64], [0], STEPS)
    point = {m: RunPoint(m, 64, 1e-2, 0) for m in METHODS}
    return {
        m: flat(dataclasses.asdict(load_config(grid.run_overrides(point[m], Path("/tmp/r")))))
        for m in METHODS
    }


def test_the_table_is_the_issue_list() -> None:
    assert set(METHODS) == set(SWITCHES)


@pytest.mark.parametrize("method", list(SWITCHES))
def test_each_method_sets_its_switch_and_changes_nothing_shared(configs, method: str) -> None:
    cfg, base = configs[method], configs["adamw"]
    for key, value in SWITCHES[method].items():
        assert cfg[key] == value, (method, key)
    changed = {k for k in set(cfg) | set(base) if cfg.get(k) != base.get(k)} - set(NAMES)
    allowed = MAY_DIFFER.get(method)
    if allowed is None:  # an optimizer switch: only optimizer keys
        assert all(k.startswith("optim.") for k in changed), changed
    else:
        assert all(k.startswith(allowed) for k in changed), changed
    for key in ("optim.lr", "optim.betas", "optim.weight_decay", "seed", "trainer.max_steps"):
        assert cfg[key] == base[key], key
    assert cfg["model.n_embd"] == 64 and cfg["optim.lr"] == 1e-2
    assert cfg["trainer.max_steps"] == STEPS and cfg["trainer.eval_every"] == STEPS
    assert cfg["schedule.min_lr"] == 1e-5 and cfg["model.n_layer"] == 4
    assert cfg["model.block_size"] == 64


def test_run_names_and_the_hydra_path_share_one_folder() -> None:
    grid = AtlasGrid("cpu/gpt_cpu", ["adamw2"], [3e-3, 1e-4], [64, 128], [0, 1], STEPS)
    points = grid.points()
    assert len(points) == 8 and len({p.name for p in points}) == 8
    assert [p.width for p in points[:4]] == [128] * 4  # the widest first
    assert RunPoint("adamw2", 64, 1e-4, 1).name == "adamw2_w64_lr0.0001_s1"
    assert lr_text(3e-3) == "0.003" and lr_text(1e-5) == "1e-05"
    # One point of the method's multirun, its sweep lists narrowed to that point's values.
    sweep = grid.sweep_overrides("adamw2", Path("/tmp/atlas/runs"))
    single = {"optim.lr": "optim.lr=0.0001", "model.n_embd": "model.n_embd=64", "seed": "seed=1"}
    point_overrides = [single.get(o.split("=", 1)[0], o) for o in sweep]
    cfg = compose_raw(point_overrides, with_hydra=True)
    assert f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}" == "/tmp/atlas/runs/" + (
        "adamw2_w64_lr0.0001_s1"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"methods": ["nope"]}, "--methods: unknown nope"),
        ({"lrs": [0.0]}, "--lrs"),
        ({"widths": []}, "--widths: give at least one value"),
        ({"seeds": [0, 0]}, "--seeds: a value is repeated"),
        ({"steps": 3}, "--steps 3"),
    ],
)
def test_bad_grids_fail_in_one_line(kwargs: dict, message: str) -> None:
    args = dict(recipe="cpu/gpt_cpu", methods=["adamw"], lrs=[1e-2], widths=[64], seeds=[0])
    args["steps"] = 30
    args.update(kwargs)
    with pytest.raises(ValueError, match=message.replace("-", r"\-")) as err:
        AtlasGrid(**args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_composes_at_gpt2_s_size(method: str) -> None:
    """The atlas at scale (recipes/atlas/gpt2_s.yaml, a width that splits into its 12 heads)."""
    grid = AtlasGrid("atlas/gpt2_s", [method], [2e-3], [384], [0], 3000)
    cfg = load_config(grid.run_overrides(RunPoint(method, 384, 2e-3, 0), Path("/tmp/r")))
    assert cfg.model.n_embd == 384 and cfg.model.n_layer == 12 and cfg.data.name == "openwebtext"
    assert cfg.trainer.max_steps == 3000 and cfg.schedule.decay_steps is None
    assert cfg.schedule.warmup_steps == (300 if method == "adamw_warmup" else 0)
    if method == "adamw2":
        assert cfg.optim.tau == 0.02


def test_the_wandb_sweep_runs_the_atlas_grid_one_point_per_job() -> None:
    import yaml

    from weyl.commands.atlas import _parser

    sweep = yaml.safe_load((Path(__file__).parents[2] / "sweeps/atlas_gpt2_s.yaml").read_text())
    command = sweep["command"]
    assert command[command.index("weyl") + 1] == "atlas" and command[-1] == "${args}"
    params = sweep["parameters"]
    assert params["methods"]["values"] == list(METHODS)
    fixed = command[command.index("atlas") + 1 : -1]
    for method in METHODS:
        args = _parser().parse_args(
            [*fixed, f"--methods={method}", f"--lrs={params['lrs']['values'][0]}", "--widths=384"]
        )
        assert args.recipe == "atlas/gpt2_s" and args.methods == [method] and args.jobs == 1
        assert "logger.wandb.enabled=true" in args.overrides
