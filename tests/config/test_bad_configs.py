"""Bad inputs fail before anything is built, each with one line naming the key."""

import subprocess
import sys
from pathlib import Path

import pytest

from weyl.config import ConfigError, load_config
from weyl.config.compose import first_job_overrides

BASE = ["recipe=smoke/gpt_tiny"]

# (overrides, fragments the one-line message must contain)
BAD_INPUTS = [
    (["optim.lr=-0.001"], ["optim.lr", "> 0", "-0.001"]),
    (["optim.lr=0"], ["optim.lr", "> 0"]),
    (["optim.tau=0"], ["optim.tau", "> 0", "null"]),
    (["optim.tau=-0.5"], ["optim.tau", "> 0"]),
    (["optim.foo=1"], ["optim.foo", "unknown key", "weight_decay"]),
    (["+optim.foo=1"], ["optim.foo", "unknown key", "allowed keys"]),
    (["+model.n_layers=3"], ["model.n_layers", "unknown key", "n_layer"]),
    (["trainer.max_steps=abc"], ["trainer.max_steps", "expected int", "abc"]),
    (["trainer.compile=maybe"], ["trainer.compile", "expected bool"]),
    (["optim.betas=[0.9]"], ["optim.betas", "two values"]),
    (["optim.betas=[0.9,1.5]"], ["optim.betas", "[0, 1)"]),
    (["optim.name=adam3"], ["optim.name", "adam3", "adamw2"]),
    (["model=gtp"], ["model=gtp", "no such model", "gpt2_s"]),
    (["model.family=transformer"], ["model.family", "transformer", "gpt, vit"]),
    (["recipe=table9/nope"], ["recipe=table9/nope", "no such recipe", "smoke/gpt_tiny"]),
    (["data.kind=audio"], ["data.kind", "audio", "text, image"]),
    (["data.tokenizer=sentencepiece"], ["data.tokenizer", "sentencepiece", "gpt2"]),
    (["data.block_size=128"], ["data.block_size", "model.block_size=64"]),
    (["model.n_embd=33"], ["model.n_embd", "multiple of model.n_head"]),
    (["schedule.name=linear"], ["schedule.name", "linear", "cosine"]),
    (["schedule.warmup_steps=40"], ["schedule.warmup_steps", "trainer.max_steps=40"]),
    (["schedule.min_lr=1.0"], ["schedule.min_lr", "optim.lr"]),
    (["trainer.global_batch_size=0"], ["trainer.global_batch_size", "> 0"]),
    (["trainer.precision=fp8"], ["trainer.precision", "fp8", "bf16"]),
    (["trainer.on_crash=ignore"], ["trainer.on_crash", "rollback"]),
    (["diagnostics.every=0"], ["diagnostics.every", "> 0"]),
    (["logger.wandb.mode=cloud"], ["logger.wandb.mode", "cloud", "offline"]),
    (["+foo=1"], ["foo", "unknown top-level key"]),
    (["data=digits_missing"], ["data=digits_missing", "no such data"]),
]


@pytest.mark.parametrize(
    ("overrides", "fragments"), BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS]
)
def test_bad_input_gets_one_line_naming_the_key(overrides, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(BASE + overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_good_recipe_validates_to_typed_config():
    cfg = load_config([*BASE, "optim.lr=0.004", "optim.tau=null"])
    assert cfg.optim.lr == 0.004 and cfg.optim.tau is None
    assert cfg.model.family == "gpt" and cfg.model.n_layer == 2
    assert cfg.run_dir == "runs/smoke_gpt_tiny"


def test_cli_prints_one_line_and_exit_code_2():
    out = subprocess.run(
        [sys.executable, "-m", "weyl.cli", "train", *BASE, "optim.tau=0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "optim.tau" in lines[0], out.stderr


def test_a_sweeps_first_job_is_each_sweep_at_its_first_value():
    overrides = ["recipe=smoke/gpt_tiny", "optim.tau=0.01,0.02", "+x=choice(a,b)"]
    overrides += ["trainer.seed=range(3,6)", "hydra/launcher=basic", "hydra.sweep.dir=d"]
    assert first_job_overrides(overrides) == [
        "recipe=smoke/gpt_tiny",
        "optim.tau=0.01",
        "+x=a",
        "trainer.seed=3",
    ]


@pytest.mark.parametrize(
    ("sweep", "fragments"),
    [
        (["optim.nope=1,2"], ["optim.nope", "unknown key", "weight_decay"]),
        (["optim.lr=-1,1e-3"], ["optim.lr", "must be > 0"]),
        (["model=nope,gpt"], ["model=nope"]),
    ],
)
def test_a_sweep_with_a_bad_first_job_is_one_line_exit_2(tmp_path, sweep, fragments):
    weyl = str(Path(sys.executable).parent / "weyl")
    out = subprocess.run(
        [weyl, "train", "-m", *BASE, *sweep, f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), out.stderr
    assert not (tmp_path / "sweep").exists()  # nothing was started
