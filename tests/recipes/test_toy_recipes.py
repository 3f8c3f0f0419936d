"""Every paper recipe trains, at toy scale, on real-format data, through the ``weyl`` script.

One ``weyl prepare openwebtext`` on a few hundred KJV chapters written as an OpenWebText-style
parquet file (a ``text`` column), then one ``weyl train -m`` multirun per data kind with
``scale=toy``: every GPT recipe of table1/ and appendix/ on those GPT-2 tokens, every
ViT / Swin / FLatten-Swin recipe on a small JPEG ImageFolder through the recipe's own timm
augmentations, mixup/cutmix and label smoothing. Each run must finish its steps with finite
losses and differ from the paper recipe only in the sizes the toy scale is allowed to shrink.
``weyl report`` and ``weyl compare`` then render the runs.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.data.image_folder import write_image_folder
from tests.recipes.composition import composed, named_runs
from weyl.config import build_config
from weyl.config.compose import load_config
from weyl.data.kjv import kjv_verses

WEYL = Path(sys.executable).parent / "weyl"
STEPS = 3
# The named runs of table1/ and appendix/ (each a model's base with its method fixed; the bases
# themselves, `recipe=<base> method=<m>`, resolve to exactly these: test_resolved_configs.py).
PAPER_RUNS = [r for r in named_runs() if r.split("/")[0] in ("table1", "appendix")]
TEXT_RECIPES = [r for r in PAPER_RUNS if r.split("/")[1].startswith("gpt2_")]
IMAGE_RECIPES = [r for r in PAPER_RUNS if not r.split("/")[1].startswith("gpt2_")]
N_DOCUMENTS = 300  # KJV chapters, one document each
CLASSES = ("n01440764", "n01443537", "n01484850")  # ImageNet-style synset folder names
TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 2

# What the toy scale may change (sizes only); every other key must equal the paper recipe's.
SIZE_KEYS = {
    "model": {
        "gpt": {"n_layer", "n_head", "n_embd", "block_size"},
        "vit": {"img_size", "patch_size", "embed_dim", "depth", "num_heads", "num_classes"},
        "swin": {
            "img_size",
            "patch_size",
            "embed_dim",
            "depths",
            "num_heads",
            "window_size",
            "num_classes",
        },
    },
    "data": {"path", "num_workers", "block_size", "img_size"},
    "trainer": {
        "max_steps",
        "epochs",
        "global_batch_size",
        "micro_batch_size",
        "eval_every",
        "eval_batches",
        "ckpt_every",
        "log_every",
    },
    "schedule": {"warmup_steps", "warmup_epochs", "decay_steps"},
    "diagnostics": {"every", "probe_batch_size", "rank_samples", "per_head"},
    "logger": {"progress", "wandb"},
}
SIZE_KEYS["model"]["flatten_swin"] = SIZE_KEYS["model"]["swin"]


def _weyl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(WEYL), *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, f"weyl {args[0]} failed:\n{result.stderr[-4000:]}"
    return result


def _write_corpus(path: Path) -> None:
    """A few hundred documents in the Hub's OpenWebText format: one parquet file, ``text``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    chapters = itertools.groupby(kjv_verses(), key=lambda v: (v["book"], v["chapter"]))
    docs = [" ".join(v["text"] for v in verses) for _, verses in chapters][:N_DOCUMENTS]
    path.mkdir(parents=True)
    pq.write_table(pa.table({"text": docs}), path / "train-00000-of-00001.parquet")


def _write_image_folder(root: Path) -> None:
    """train/<class>/*.JPEG and val/<class>/*.JPEG, 40×48 RGB, one saturated channel per class."""
    per_split = {"train": TRAIN_PER_CLASS, "val": VAL_PER_CLASS}
    write_image_folder(root, CLASSES, per_split, "{cls}_{i}.JPEG", quality=85)


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Prepare both data sets and train every recipe at toy scale; {recipe: run dir, ...}."""
    tmp = tmp_path_factory.mktemp("toy_recipes")
    env = {
        **os.environ,
        "WEYL_DATA_DIR": str(tmp / "data_root"),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    _write_corpus(tmp / "corpus")
    owt = tmp / "openwebtext"
    prepared = _weyl(
        "prepare",
        "openwebtext",
        "--source",
        str(tmp / "corpus"),
        "--out",
        str(owt),
        "--num-proc",
        "1",
        "--cache-dir",
        str(tmp / "hf_cache"),
        env=env,
    )
    images = tmp / "imagenet"
    _write_image_folder(images)
    common = ["scale=toy", f"scale.steps={STEPS}", "logger.progress=false"]
    text = _weyl(
        "train",
        "-m",
        f"recipe={','.join(TEXT_RECIPES)}",
        f"data.path={owt}",
        f"hydra.sweep.dir={tmp / 'text_runs'}",
        *common,
        env=env,
    )
    # ++: the sweep's first composition (before any recipe) has a GPT model without the key.
    image = _weyl(
        "train",
        "-m",
        f"recipe={','.join(IMAGE_RECIPES)}",
        f"data.path={images}",
        f"++model.num_classes={len(CLASSES)}",
        f"hydra.sweep.dir={tmp / 'image_runs'}",
        *common,
        env=env,
    )
    runs = {}
    for sweep in (tmp / "text_runs", tmp / "image_runs"):
        for run in sorted(p for p in sweep.iterdir() if p.is_dir()):
            recipe = json.loads((run / "meta.json").read_text())["choices"]["recipe"]
            runs[recipe] = run
    return {
        "tmp": tmp,
        "env": env,
        "runs": runs,
        "prepare": json.loads(prepared.stdout),
        "stderr": text.stderr + image.stderr,
    }


def _records(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_corpus_prepared_as_gpt2_tokens(toy_runs: dict[str, Any]) -> None:
    splits = toy_runs["prepare"]["splits"]
    assert toy_runs["prepare"]["tokenizer"] == "gpt2"
    assert splits["train"]["documents"] + splits["val"]["documents"] == N_DOCUMENTS
    # ~1,000 GPT-2 tokens per KJV chapter
    assert splits["train"]["tokens"] > 100 * N_DOCUMENTS


def test_every_recipe_ran_its_steps_with_finite_losses(toy_runs: dict[str, Any]) -> None:
    assert sorted(toy_runs["runs"]) == sorted(TEXT_RECIPES + IMAGE_RECIPES)
    # GPT-S × 4 methods + its nanoGPT-init pair, GPT-L × 2; ViT, Swin and FLatten-Swin runs
    assert len(TEXT_RECIPES) == 8 and len(IMAGE_RECIPES) == 23
    for recipe, run in toy_runs["runs"].items():
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "finished" and status["step"] == STEPS, (recipe, status)
        records = _records(run)
        losses = [r["loss"] for r in records if "loss" in r and r["step"] > 0]
        assert len(losses) == STEPS and all(math.isfinite(v) for v in losses), (recipe, losses)
        assert not any("diag_error" in r for r in records), recipe
        # Diagnostics (cheap at toy scale) ran at step 0 and at the end; eval at the end.
        assert any(k.startswith("attn/") for k in records[0]), recipe
        assert any(k.startswith("attn/") for k in records[-1]), recipe
        assert any(k.startswith("eval/") for k in records[-1]), recipe


def _leaves(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_leaves(value, f"{prefix}.{key}" if prefix else key))
    return out


def test_toy_run_keeps_everything_but_sizes(toy_runs: dict[str, Any]) -> None:
    import dataclasses

    for recipe, run in toy_runs["runs"].items():
        paper = dataclasses.asdict(composed(f"recipe={recipe}"))
        # The config the run saved, with the schema's defaults filled in like the paper's.
        toy = dataclasses.asdict(build_config(yaml.safe_load((run / "config.yaml").read_text())))
        family = paper["model"]["family"]
        for key, value in _leaves(paper).items():
            section, _, leaf = key.partition(".")
            allowed = SIZE_KEYS.get(section, set())
            allowed = allowed[family] if isinstance(allowed, dict) else allowed
            if key == "run_dir" or leaf.split(".")[0] in allowed:
                continue
            assert _leaves(toy)[key] == value, f"{recipe}: {key} changed"
        for key in SIZE_KEYS["model"][family]:  # sizes only shrink
            old, new = paper["model"][key], toy["model"][key]
            assert all(n <= o for n, o in zip(np.atleast_1d(new), np.atleast_1d(old))), key
        # The schedule keeps its shape: the warmup's fraction of the run, rounded up.
        s, t = paper["schedule"], paper["trainer"]
        fraction = (
            s["warmup_epochs"] / t["epochs"] if t["epochs"] else s["warmup_steps"] / t["max_steps"]
        )
        warmup = min(STEPS - 1, math.ceil(fraction * STEPS))
        assert toy["schedule"]["warmup_steps"] == warmup, recipe
        first_lr = next(r["lr"] for r in _records(run) if r["step"] == 1)
        peak, w0 = paper["optim"]["lr"], s["warmup_lr_init"]
        first_ramp = {  # the first update's LR of each warmup shape (weyl.train.schedule)
            "restart": w0 + (peak - w0) / max(warmup, 1),
            "overlap": w0,
            "nanogpt": w0 + (peak - w0) / (warmup + 1),
        }[s["warmup_shape"]]
        assert first_lr == pytest.approx(first_ramp if warmup else peak), recipe
        assert toy["logger"]["wandb"]["tags"] == [*paper["logger"]["wandb"]["tags"], "scale-toy"]


def test_fsdp_recipes_run_unsharded_in_one_process(toy_runs: dict[str, Any]) -> None:
    fsdp = [r for r in toy_runs["runs"] if composed(f"recipe={r}").trainer.strategy == "fsdp"]
    assert fsdp  # ViT-g and GPT-2 L
    assert "trainer.strategy=fsdp in a single process" in toy_runs["stderr"]


def test_report_and_compare_render_toy_runs(toy_runs: dict[str, Any]) -> None:
    runs, env = toy_runs["runs"], toy_runs["env"]
    run = runs["table1/gpt2_s_adamw2"]
    _weyl("report", str(run), env=env)
    report = run / "report"
    assert (report / "report.md").read_text().startswith("# Report: gpt2_s_adamw2")
    for png in ("curves.png", "layer_spectra.png", "sec.png"):
        assert (report / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    out = toy_runs["tmp"] / "compare"
    pair = (runs["table1/vit_b_adamw2"], runs["table1/vit_b_adamw_nowarmup"])
    _weyl("compare", *map(str, pair), "--out", str(out), env=env)
    table = (out / "compare.md").read_text()
    assert "vit_b_adamw2" in table and "vit_b_adamw_nowarmup" in table
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The τ sweeps are table1 recipes with τ swept: composing them at toy scale is their check.
ABLATION_RECIPES = ["ablation/gpt2_s_tau", "ablation/swin_s_tau"]


@pytest.mark.parametrize("recipe", ABLATION_RECIPES)
def test_ablation_recipes_compose_at_toy_scale(recipe: str) -> None:
    paper, toy = composed(f"recipe={recipe}"), load_config([f"recipe={recipe}", "scale=toy"])
    assert toy.optim == paper.optim and toy.trainer.strategy == paper.trainer.strategy
    assert toy.run_dir == f"runs/toy/{paper.name}"
    assert toy.trainer.max_steps < 100 and toy.trainer.epochs == 0
