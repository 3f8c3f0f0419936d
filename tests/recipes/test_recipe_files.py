"""Every recipe composes and validates; the sweeps (Hydra multirun and wandb) expand to valid runs.

The τ-ablation multirun is run for real on a shrunk twin (the recipe's own τ grid, a 2-layer GPT
for one step each): one run directory per τ, each with its τ in the saved config.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.recipes.composition import (
    METHODS,
    all_recipes,
    base_recipes,
    composed,
    default_method,
    is_column,
    named_runs,
)
from weyl.config.compose import compose_raw, config_dir, load_config

SWEEPS = config_dir().parent / "sweeps"  # wandb sweep files, not Hydra recipes
RECIPE_NAMES = named_runs()
BASES = base_recipes()
# The atlas's sweep runs `weyl atlas` (tests/atlas/test_methods_and_grid.py composes its points).
WANDB_SWEEPS = sorted(p for p in SWEEPS.glob("*.yaml") if not p.stem.startswith("atlas_"))
# The Hydra τ sweeps and their wandb twins must list the same grid.
TAU_SWEEPS = {"ablation/gpt2_s_tau": "gpt2_s_tau.yaml", "ablation/swin_s_tau": "swin_s_tau.yaml"}


def test_recipe_tree_has_every_paper_experiment() -> None:
    # 5 Table 1 columns × 4 methods plus GPT-S's nanoGPT-init pair, Appendix J (3), K (2),
    # L (2 methods × 2 lengths), Fig. 6 (2).
    groups = {name.split("/")[0] for name in RECIPE_NAMES}
    assert {"table1", "appendix", "ablation", "cpu", "smoke"} <= groups
    assert sum(n.startswith("table1/") for n in RECIPE_NAMES) == 22
    assert sum(n.startswith("appendix/") for n in RECIPE_NAMES) == 9
    assert sum(n.startswith("ablation/") for n in RECIPE_NAMES) == 2
    # One base per model (a Table 1 column, an appendix model, the CPU demo, the atlas's GPT-2 S
    # horizon), one column per family of Table 2, and the four methods of Table 1.
    assert BASES == [
        "appendix/flatten_swin_s_150ep",
        "appendix/flatten_swin_s_300ep",
        "appendix/gpt2_l",
        "appendix/vit_g",
        "atlas/gpt2_s",
        "cpu/gpt_cpu",
        "table1/gpt2_s",
        "table1/swin_b",
        "table1/swin_s",
        "table1/vit_b",
        "table1/vit_l",
    ]
    assert [r for r in all_recipes() if is_column(r)] == ["table2/gpt", "table2/swin", "table2/vit"]
    assert METHODS == ("adamw2", "adamw_nowarmup", "adamw_warmup", "sigma_reparam_nowarmup")


@pytest.mark.parametrize("recipe", RECIPE_NAMES + BASES)
def test_recipe_composes_and_validates(recipe: str) -> None:
    cfg = composed(f"recipe={recipe}")
    assert cfg.name and cfg.name != "run", "a recipe names its runs"
    assert cfg.run_dir == f"runs/{cfg.name}"


@pytest.mark.parametrize("base", BASES)
def test_base_runs_each_method_under_its_own_name(base: str) -> None:
    """`weyl train -m recipe=<base> method=a,b,...`: one run per method, none sharing a run_dir."""
    runs = {m: composed(f"recipe={base}", f"method={m}") for m in METHODS}
    assert len({r.run_dir for r in runs.values()}) == len(METHODS)
    for method, cfg in runs.items():
        assert method in cfg.name, (base, method, cfg.name)
        assert cfg.logger.wandb.name in (None, cfg.name)  # the CPU demo leaves wandb unnamed
        assert (cfg.optim.name == "adamw2") == (method == "adamw2")
        assert cfg.model.sigma_reparam is method.startswith("sigma_reparam")
    # Without method= a base runs its default method (the paper's: AdamW²).
    assert composed(f"recipe={base}") == runs[default_method(base)]
    assert default_method(base) == "adamw2"


@pytest.mark.parametrize("column", [r for r in all_recipes() if is_column(r)])
def test_table2_column_alone_asks_for_a_model(column: str) -> None:
    from weyl.config import ConfigError

    with pytest.raises(ConfigError, match="You must specify 'model'"):
        load_config([f"recipe={column}"])


def test_method_without_a_recipe_names_the_missing_value() -> None:
    """A method reads per-model values (τ, warmup) that only a recipe provides."""
    from weyl.config import ConfigError

    with pytest.raises(ConfigError, match=r"^optim\.tau: .*method\.tau"):
        load_config(["method=adamw2"])


def test_paper_recipe_names_are_unique() -> None:
    """Two named runs with one name would share a run directory and resume each other (a base
    run with a method is the named run of that base and method, so it shares its directory)."""
    names = [composed(f"recipe={r}").name for r in RECIPE_NAMES]
    assert len(names) == len(set(names))


def _sweeper_params(recipe: str) -> dict[str, list[str]]:
    cfg = compose_raw([f"recipe={recipe}"], with_hydra=True)
    return {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}


@pytest.mark.parametrize("recipe", sorted(TAU_SWEEPS))
def test_hydra_tau_sweep_expands_to_distinct_valid_runs(recipe: str) -> None:
    params = _sweeper_params(recipe)
    assert list(params) == ["optim.tau"]
    taus = [float(v) for v in params["optim.tau"]]
    default_tau = composed(f"recipe={recipe}").optim.tau
    assert default_tau in taus, "the grid includes the paper's default τ"
    runs = [composed(f"recipe={recipe}", f"optim.tau={v}") for v in params["optim.tau"]]
    assert [r.optim.tau for r in runs] == pytest.approx(taus)
    assert len({r.run_dir for r in runs}) == len(taus), "each τ gets its own run directory"
    wandb_grid = yaml.safe_load((SWEEPS / TAU_SWEEPS[recipe]).read_text())
    assert wandb_grid["parameters"]["optim.tau"]["values"] == pytest.approx(taus)


def _fixed_overrides(command: list[str]) -> list[str]:
    """The key=value Hydra overrides written into a wandb sweep's command."""
    return [c for c in command if "=" in c and not c.startswith(("-", "$", "WANDB_"))]


@pytest.mark.parametrize("path", WANDB_SWEEPS, ids=lambda p: p.stem)
def test_wandb_sweep_grid_points_compose(path: Path) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert sweep["program"] == "weyl"
    assert sweep["method"] == "grid"
    command = sweep["command"]
    assert command[0] == "${env}" and command[-1] == "${args_no_hyphens}"
    assert command[command.index("weyl.cli") + 1] == "train"
    assert sweep["metric"]["name"] in {"eval/loss", "eval/top1"}
    fixed = _fixed_overrides(command)
    assert "logger.wandb.enabled=true" in fixed
    ((key, spec),) = sweep["parameters"].items()
    runs = [composed(*fixed, f"{key}={value}") for value in spec["values"]]
    assert len({r.run_dir for r in runs}) == len(runs), "grid points must not share a run_dir"
    assert len({r.logger.wandb.group for r in runs}) == 1, "one sweep compares one model"
    assert all(r.logger.wandb.enabled and r.logger.wandb.mode == "online" for r in runs)
    metric = "eval/loss" if runs[0].model.family == "gpt" else "eval/top1"
    assert sweep["metric"]["name"] == metric
    assert sweep["metric"]["goal"] == ("minimize" if metric == "eval/loss" else "maximize")


def test_wandb_sweeps_cover_tau_and_every_table1_model() -> None:
    stems = {p.stem for p in WANDB_SWEEPS}
    assert {"gpt2_s_tau", "swin_s_tau"} <= stems
    assert {f"{m}_warmup" for m in ("vit_b", "vit_l", "gpt2_s", "swin_s", "swin_b")} <= stems


def test_hydra_multirun_of_tau_recipe_runs_each_tau(tmp_path: Path) -> None:
    """`weyl train -m recipe=ablation/gpt2_s_tau` on a shrunk twin: one finished run per τ."""
    expected = [float(v) for v in _sweeper_params("ablation/gpt2_s_tau")["optim.tau"]]
    shrink = [
        "model=gpt_tiny",
        "data=kjv_char",
        "model.block_size=16",
        "data.block_size=16",
        "trainer.global_batch_size=2",
        "trainer.micro_batch_size=0",
        "trainer.max_steps=1",
        "trainer.precision=fp32",
        "trainer.device=cpu",
        "trainer.eval_batches=0",
        "diagnostics.enabled=false",
        "logger.progress=false",
        f"run_dir={tmp_path}/runs/${{name}}",
    ]
    env = {**os.environ, "WEYL_DATA_DIR": str(tmp_path / "data"), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "weyl.cli", "train", "-m", "recipe=ablation/gpt2_s_tau", *shrink],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dirs = sorted((tmp_path / "runs").iterdir())
    assert len(run_dirs) == len(expected)
    seen = []
    for run in run_dirs:
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert run.name == f"gpt2_s_adamw2_tau{saved['optim']['tau']}"
        assert json.loads((run / "status.json").read_text())["state"] == "finished"
        seen.append(saved["optim"]["tau"])
    assert sorted(seen) == pytest.approx(sorted(expected))


def test_epoch_based_paper_recipe_trains_as_a_shrunk_twin(tmp_path: Path, monkeypatch) -> None:
    """A ViT Table 1 recipe (epochs, warmup in epochs, max_steps 0) runs on a tiny ViT + digits."""
    from weyl.train.runner import run_training

    monkeypatch.setenv("WEYL_DATA_DIR", str(tmp_path / "data"))
    cfg = load_config(
        [
            "recipe=table1/vit_b_adamw_warmup",
            "model=vit_tiny",
            "data=digits",
            "model.img_size=32",
            "data.img_size=32",
            "data.randaugment=",
            "data.num_workers=0",
            "trainer.epochs=0.05",
            "schedule.warmup_epochs=0.02",
            "trainer.global_batch_size=16",
            "trainer.precision=fp32",
            "trainer.device=cpu",
            "trainer.eval_batches=1",
            "diagnostics.enabled=false",
            "logger.progress=false",
            f"run_dir={tmp_path}/run",
        ]
    )
    assert cfg.trainer.max_steps == 0  # the recipe leaves the length to trainer.epochs
    summary = run_training(cfg)
    assert summary["exit_code"] == 0, summary
    status = json.loads((tmp_path / "run/status.json").read_text())
    assert status["state"] == "finished", status
    records = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    steps = [r["step"] for r in records if "loss" in r]
    # sklearn digits: 1437 training images; 0.05 epochs of 16-image batches = ceil(4.49) updates.
    assert max(steps) == 5, records


def test_hydra_multirun_over_methods_runs_each_method(tmp_path: Path) -> None:
    """`weyl train -m recipe=<base> method=a,b`: one finished run per method, each its own name."""
    shrink = [
        "model.n_layer=1",
        "trainer.global_batch_size=2",
        "trainer.max_steps=2",
        "method.warmup_steps=1",  # a per-model value of the recipe, overridden like any key
        "trainer.precision=fp32",
        "trainer.device=cpu",
        "trainer.eval_batches=0",
        "diagnostics.enabled=false",
        "logger.progress=false",
        f"run_dir={tmp_path}/runs/${{name}}",
    ]
    env = {**os.environ, "WEYL_DATA_DIR": str(tmp_path / "data"), "WANDB_MODE": "disabled"}
    argv = ["train", "-m", "recipe=cpu/gpt_cpu", "method=adamw_warmup,adamw2", *shrink]
    proc = subprocess.run(
        [sys.executable, "-m", "weyl.cli", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = {}
    for status in sorted((tmp_path / "runs").rglob("status.json")):
        assert json.loads(status.read_text())["state"] == "finished", status
        saved[status.parent] = yaml.safe_load((status.parent / "config.yaml").read_text())
    names = sorted(config["name"] for config in saved.values())
    assert names == ["cpu_adamw2", "cpu_adamw_warmup"]
    by_name = {config["name"]: config for config in saved.values()}
    assert by_name["cpu_adamw_warmup"]["schedule"]["warmup_steps"] == 1
    assert by_name["cpu_adamw2"]["optim"]["tau"] == 0.02  # the CPU recipe's τ (NOTES.md)
    assert "method" not in by_name["cpu_adamw2"]  # resolved into the run's own keys
