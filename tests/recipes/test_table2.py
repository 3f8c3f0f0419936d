"""The paper recipes carry the paper's hyper-parameters, key by key.

Table 2 of the paper (Appendix N, /work/shared/paper/taming-transformer-adamw2.txt) and the §4
warmup lengths are transcribed below as the paper prints them; each test translates a row into
the config key it governs and compares it with the recipe composed by ``load_config``.
Where Table 2 defers to another code base ("same as Liu et al. (2021)"), that code base's values
are transcribed too, with their source.
"""

from __future__ import annotations

import pytest

from tests.recipes.composition import composed as _composed
from weyl.config import TrainConfig

# Table 2(a) "Training configurations for ViT", column "ViT-B/L/g (224²)".
TABLE_2A_VIT = {
    "optimizer": "AdamW²",
    "τ (In default)": "0.004 or 0.003",
    "warmup epochs": 0,
    "weight init": "Truncated Xavier",
    "base learning rate": 1e-3,
    "weight decay": "0.05/0.1",
    "optimizer momentum": (0.9, 0.99),
    "batch size": 1024,
    "training epochs": 150,
    "learning rate schedule": "cosine decay",
    "randaugment": (9, 0.5),
    "mixup": 0.8,
    "cutmix": 1.0,
    "random erasing": 0,
    "label smoothing": 0.1,
    "stochastic depth": "0.1/0.5",
    "gradient clip": None,
    "exp. mov. avg. (EMA)": "no",
}

# Table 2(b) "Training configurations for GPT", column "GPT-S/L".
TABLE_2B_GPT = {
    "optimizer": "AdamW²",
    "τ": 0.01,
    "warmup epochs": 0,
    "weight init": "Xavier",
    "baseline learning rate": "0.0006 or 0.00025",
    "weight decay": 0.1,
    "optimizer momentum": (0.9, 0.95),
    "tokens seen each update": 500_000,
    "max iters": "600K or 100K",
    "batch size": 480,
    "sequence length": 1024,
    "dropout": 0.0,
    "bfloat16": True,
    "gradient clipping": 1.0,
}

# Table 2(c) "Training configurations for Swin-Transformer", column "Swin S/B (224²)".
TABLE_2C_SWIN = {
    "optimizer": "AdamW²",
    "τ (In default)": 0.004,
    "warmup epochs": 0,
    "training epochs": 300,
    "others": "same as Liu et al. (2021)",
}

# Table 2(d) "Training configurations for Flatten-Swin", column "Flatten-Swin S (224²)".
TABLE_2D_FLATTEN = {
    "optimizer": "AdamW²",
    "τ (In default)": 0.004,
    "warmup epochs": 0,
    "training epochs": "150 or 300",
    "others": "same as Han et al. (2023)",
}

# "Liu et al. (2021)": microsoft/Swin-Transformer config.py (FLatten-Transformer's config.py,
# "Han et al. (2023)", is a copy of it) — LRs are per 512 images, scaled linearly with batch.
SWIN_OFFICIAL = {
    "TRAIN.BASE_LR": 5e-4,
    "TRAIN.MIN_LR": 5e-6,
    "TRAIN.WARMUP_EPOCHS": 20,
    "TRAIN.WEIGHT_DECAY": 0.05,
    "TRAIN.CLIP_GRAD": 5.0,
    "TRAIN.OPTIMIZER.EPS": 1e-8,
    "TRAIN.OPTIMIZER.BETAS": (0.9, 0.999),
    "AUG.AUTO_AUGMENT": "rand-m9-mstd0.5-inc1",
    "AUG.REPROB": 0.25,
    "AUG.MIXUP": 0.8,
    "AUG.CUTMIX": 1.0,
    "AUG.COLOR_JITTER": 0.4,
    "MODEL.LABEL_SMOOTHING": 0.1,
    "DATA.BATCH_SIZE × GPUs": 128 * 8,
    # swin_small_patch4_window7_224.yaml / swin_base_patch4_window7_224.yaml / flatten_swin_s.yaml
    "MODEL.DROP_PATH_RATE": {"swin_s": 0.3, "swin_b": 0.5, "flatten_swin_s": 0.3},
    "TRAIN.WARMUP_LR": 5e-7,
    # lr_scheduler.py build_scheduler: timm CosineLRScheduler(t_initial=num_steps, warmup_t=
    # warmup_steps, t_in_epochs=False), warmup_prefix off (Swin's WARMUP_PREFIX defaults to False;
    # FLatten's copy predates the key and never passes it)
    "cosine over": "num_steps (the whole run)",
    "warmup_prefix": False,
}

# Appendix N "For GPT, we follow the experimental configurations of nanoGPT"; Appendix K (GPT-L)
# "strictly follows the nanoGPT configuration, including all learning rate settings ... we
# limited our training to 100K steps instead of the full 600K steps". nanoGPT train.py and
# config/train_gpt2.py: get_lr warms up learning_rate·(it+1)/(warmup_iters+1) and decays over
# lr_decay_iters.
NANOGPT = {"lr_decay_iters": 600_000, "max_iters": 600_000, "warmup_lr": 0.0, "min_lr": 6e-5}
APPENDIX_K_STEPS = 100_000

# Appendix N "For ViT, we use Timm": timm train.py's defaults (since timm 0.8, Oct 2022) for what
# Table 2(a) leaves out: --warmup-lr 1e-5, --min-lr 0, no --warmup-prefix, --cooldown-epochs 0.
TIMM_TRAIN = {"warmup_lr": 1e-5, "min_lr": 0.0, "warmup_prefix": False}

# §4: "For ViT, Swin-Transformer and GPT, we will use a warmup of 60 epochs, 20 epochs and 2000
# steps individually."
SECTION_4_WARMUP = {"vit": ("epochs", 60), "swin": ("epochs", 20), "gpt": ("steps", 2000)}

# §3: "In practice, we set the maximum iterations in power iteration to 3."
SECTION_3_POWER_ITERS = 3
# Not in the paper: Algorithm 1 has no σ floor (taken literally it never moves a zero-initialised
# tensor); weyl's documented deviation (optim.sigma_floor) at its default in every recipe.
SIGMA_FLOOR_DEVIATION = 1e-2

# Table 1: the four runs of each column (AdamW ± warmup, AdamW², plus our σReparam baseline).
METHODS = ("adamw_warmup", "adamw_nowarmup", "adamw2", "sigma_reparam_nowarmup")
TABLE_1 = ("vit_b", "vit_l", "gpt2_s", "swin_s", "swin_b")
APPENDIX = {
    "vit_g": ("adamw_warmup", "adamw_nowarmup", "adamw2"),  # Appendix J
    "gpt2_l": ("adamw_warmup", "adamw2"),  # Appendix K
}
FLATTEN_EPOCHS = (150, 300)  # Appendix L


def composed(recipe: str) -> TrainConfig:
    return _composed(f"recipe={recipe}")


def _choose(cell: str, index: int) -> float:
    """Pick one value of a cell like "0.05/0.1" or "0.004 or 0.003" (small model first)."""
    parts = cell.replace(" or ", "/").split("/")
    return float(parts[index])


def _iters(cell: str, index: int) -> int:
    return int(float(cell.split(" or ")[index].rstrip("K")) * 1000)


def _check_method(cfg: TrainConfig, method: str, family: str) -> None:
    """Optimizer, τ, warmup and σReparam as the method name says."""
    unit, length = SECTION_4_WARMUP[family]
    if method == "adamw2":
        assert cfg.optim.name == "adamw2"
        assert cfg.optim.power_iters == SECTION_3_POWER_ITERS
        assert cfg.optim.sigma_floor == SIGMA_FLOOR_DEVIATION
    else:
        assert cfg.optim.name == "adamw"
        assert cfg.optim.tau is None
    warmup = cfg.schedule.warmup_epochs if unit == "epochs" else cfg.schedule.warmup_steps
    other = cfg.schedule.warmup_steps if unit == "epochs" else cfg.schedule.warmup_epochs
    assert other == 0
    assert warmup == (length if method == "adamw_warmup" else 0)
    assert cfg.model.sigma_reparam is (method == "sigma_reparam_nowarmup")
    assert cfg.model.sigma_reparam_pure is False
    # σReparam starts from the model's own weights (the overlay's explicit choice), so its
    # only difference from the AdamW baseline is the reparametrisation, not the init.
    assert cfg.model.sigma_reparam_init == "keep"


def _check_wandb(cfg: TrainConfig, recipe: str, group: str, method: str) -> None:
    """Runs group by model and are tagged by method; the run name is the recipe's."""
    wandb = cfg.logger.wandb
    assert wandb.group == group
    assert wandb.name == cfg.name == recipe.rsplit("/", 1)[-1]
    expected = {
        "adamw_warmup": {"adamw", "warmup"},
        "adamw_nowarmup": {"adamw", "no-warmup"},
        "adamw2": {"adamw2", "no-warmup"},
        "sigma_reparam_nowarmup": {"sigma-reparam", "no-warmup"},
    }[method]
    assert expected <= set(wandb.tags)
    assert ("no-warmup" in wandb.tags) != ("warmup" in wandb.tags)


def _check_vit(cfg: TrainConfig, size: int, method: str) -> None:
    t = TABLE_2A_VIT
    if method == "adamw2":
        assert cfg.optim.tau == pytest.approx(_choose(t["τ (In default)"], size))
    assert cfg.model.family == "vit"
    assert cfg.model.init == "trunc_xavier"  # "Truncated Xavier"
    assert cfg.optim.lr == pytest.approx(t["base learning rate"])
    assert cfg.optim.weight_decay == pytest.approx(_choose(t["weight decay"], size))
    assert tuple(cfg.optim.betas) == pytest.approx(t["optimizer momentum"])
    assert cfg.trainer.global_batch_size == t["batch size"]
    assert cfg.trainer.epochs == t["training epochs"]
    assert cfg.schedule.name == t["learning rate schedule"].split()[0]
    magnitude, std = t["randaugment"]
    assert cfg.data.randaugment == f"rand-m{magnitude}-mstd{std}"
    assert cfg.data.mixup == t["mixup"]
    assert cfg.data.cutmix == t["cutmix"]
    assert cfg.data.random_erasing == t["random erasing"]
    assert cfg.data.label_smoothing == t["label smoothing"]
    assert cfg.model.drop_path_rate == pytest.approx(_choose(t["stochastic depth"], size))
    assert t["gradient clip"] is None and cfg.trainer.grad_clip == 0.0  # 0 disables the clip
    assert t["exp. mov. avg. (EMA)"] == "no" and cfg.trainer.ema is False
    assert cfg.model.img_size == cfg.data.img_size == 224
    assert cfg.data.name == "imagenet"
    assert cfg.schedule.min_lr == TIMM_TRAIN["min_lr"]
    assert cfg.schedule.warmup_lr_init == TIMM_TRAIN["warmup_lr"]
    assert cfg.schedule.warmup_shape == ("restart" if TIMM_TRAIN["warmup_prefix"] else "overlap")
    assert cfg.schedule.decay_steps is None  # the cosine spans trainer.epochs


def _check_gpt(cfg: TrainConfig, size: int, method: str) -> None:
    t = TABLE_2B_GPT
    if method == "adamw2":
        assert cfg.optim.tau == pytest.approx(t["τ"])
    assert cfg.model.family == "gpt"
    assert cfg.model.init == t["weight init"].lower()
    assert cfg.optim.lr == pytest.approx(_choose(t["baseline learning rate"], size))
    assert cfg.optim.weight_decay == pytest.approx(t["weight decay"])
    assert tuple(cfg.optim.betas) == pytest.approx(t["optimizer momentum"])
    assert cfg.trainer.max_steps == _iters(t["max iters"], size)
    assert cfg.trainer.epochs == 0
    assert cfg.trainer.global_batch_size == t["batch size"]
    assert cfg.model.block_size == cfg.data.block_size == t["sequence length"]
    tokens = cfg.trainer.global_batch_size * cfg.data.block_size
    assert abs(tokens - t["tokens seen each update"]) / t["tokens seen each update"] < 0.02
    assert cfg.model.dropout == t["dropout"]
    assert t["bfloat16"] and cfg.trainer.precision == "bf16"
    assert cfg.trainer.grad_clip == t["gradient clipping"]
    assert cfg.schedule.name == "cosine"
    assert cfg.schedule.warmup_shape == "nanogpt"
    assert cfg.schedule.decay_steps == NANOGPT["lr_decay_iters"]  # S and L alike (App. K)
    assert cfg.schedule.warmup_lr_init == NANOGPT["warmup_lr"]
    assert cfg.schedule.min_lr == pytest.approx(cfg.optim.lr / 10)  # nanoGPT: min_lr = lr/10
    # Gradient accumulation must divide evenly on a common GPU count (8).
    micro = cfg.trainer.micro_batch_size
    assert micro > 0 and cfg.trainer.global_batch_size % (micro * 8) == 0
    assert cfg.data.name == "openwebtext" and cfg.data.tokenizer == "gpt2"


def _check_swin(cfg: TrainConfig, model: str, method: str, epochs: int) -> None:
    table = TABLE_2D_FLATTEN if model.startswith("flatten") else TABLE_2C_SWIN
    s = SWIN_OFFICIAL
    batch = s["DATA.BATCH_SIZE × GPUs"]
    if method == "adamw2":
        assert cfg.optim.tau == pytest.approx(table["τ (In default)"])
    assert cfg.model.family == ("flatten_swin" if model.startswith("flatten") else "swin")
    assert cfg.trainer.epochs == epochs
    assert cfg.trainer.global_batch_size == batch
    assert cfg.optim.lr == pytest.approx(s["TRAIN.BASE_LR"] * batch / 512)
    assert cfg.schedule.min_lr == pytest.approx(s["TRAIN.MIN_LR"] * batch / 512)
    assert cfg.optim.weight_decay == pytest.approx(s["TRAIN.WEIGHT_DECAY"])
    assert cfg.optim.eps == pytest.approx(s["TRAIN.OPTIMIZER.EPS"])
    assert tuple(cfg.optim.betas) == pytest.approx(s["TRAIN.OPTIMIZER.BETAS"])
    assert cfg.trainer.grad_clip == s["TRAIN.CLIP_GRAD"]
    assert cfg.data.randaugment == s["AUG.AUTO_AUGMENT"]
    assert cfg.data.random_erasing == s["AUG.REPROB"]
    assert cfg.data.mixup == s["AUG.MIXUP"]
    assert cfg.data.cutmix == s["AUG.CUTMIX"]
    assert cfg.data.color_jitter == s["AUG.COLOR_JITTER"]
    assert cfg.data.label_smoothing == s["MODEL.LABEL_SMOOTHING"]
    assert cfg.model.drop_path_rate == s["MODEL.DROP_PATH_RATE"][model]
    assert cfg.trainer.ema is False
    assert cfg.schedule.name == "cosine"
    assert cfg.schedule.warmup_lr_init == pytest.approx(s["TRAIN.WARMUP_LR"] * batch / 512)
    assert cfg.schedule.warmup_shape == ("restart" if s["warmup_prefix"] else "overlap")
    assert cfg.schedule.decay_steps is None  # s["cosine over"]: trainer.epochs
    assert cfg.model.img_size == cfg.data.img_size == 224


def _swin_warmup(method: str) -> int:
    # §4's Swin warmup (20 epochs) is also the Swin config's TRAIN.WARMUP_EPOCHS.
    assert SECTION_4_WARMUP["swin"][1] == SWIN_OFFICIAL["TRAIN.WARMUP_EPOCHS"]
    return SECTION_4_WARMUP["swin"][1] if method == "adamw_warmup" else 0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("model", TABLE_1)
def test_table1_recipe_matches_table2(model: str, method: str) -> None:
    recipe = f"table1/{model}_{method}"
    cfg = composed(recipe)
    if model.startswith("vit"):
        _check_vit(cfg, {"vit_b": 0, "vit_l": 1}[model], method)
        _check_method(cfg, method, "vit")
    elif model.startswith("gpt"):
        _check_gpt(cfg, 0, method)
        _check_method(cfg, method, "gpt")
        assert cfg.trainer.max_steps == NANOGPT["max_iters"] == NANOGPT["lr_decay_iters"]
        assert cfg.schedule.min_lr == NANOGPT["min_lr"]
    else:
        _check_swin(cfg, model, method, TABLE_2C_SWIN["training epochs"])
        _check_method(cfg, method, "swin")
        assert cfg.schedule.warmup_epochs == _swin_warmup(method)
    _check_wandb(cfg, recipe, model, method)


@pytest.mark.parametrize(
    ("model", "method"), [(m, x) for m, methods in APPENDIX.items() for x in methods]
)
def test_appendix_j_k_recipe_matches_table2(model: str, method: str) -> None:
    recipe = f"appendix/{model}_{method}"
    cfg = composed(recipe)
    if model == "vit_g":
        _check_vit(cfg, 1, method)  # the large-model values of "ViT-B/L/g"
        _check_method(cfg, method, "vit")
        # Appendix J: 40 layers, hidden 1408, 16 heads, MLP 6144.
        assert (cfg.model.depth, cfg.model.embed_dim, cfg.model.num_heads) == (40, 1408, 16)
        assert round(cfg.model.embed_dim * cfg.model.mlp_ratio) == 6144
    else:
        _check_gpt(cfg, 1, method)
        _check_method(cfg, method, "gpt")
        # Appendix K: 36 layers, hidden 1280, 20 heads.
        assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.n_head) == (36, 1280, 20)
        # trains 100K steps of nanoGPT's 600K-step schedule: the decay stops a sixth of the way
        assert cfg.trainer.max_steps == APPENDIX_K_STEPS < cfg.schedule.decay_steps
    _check_wandb(cfg, recipe, model, method)


@pytest.mark.parametrize("epochs", FLATTEN_EPOCHS)
@pytest.mark.parametrize("method", ["adamw_warmup", "adamw2"])
def test_appendix_l_flatten_recipe_matches_table2(method: str, epochs: int) -> None:
    assert str(epochs) in TABLE_2D_FLATTEN["training epochs"].split(" or ")
    recipe = f"appendix/flatten_swin_s_{method}_{epochs}ep"
    cfg = composed(recipe)
    _check_swin(cfg, "flatten_swin_s", method, epochs)
    _check_method(cfg, method, "swin")
    assert cfg.schedule.warmup_epochs == _swin_warmup(method)
    assert cfg.model.attention_pattern == "LLSS"
    _check_wandb(cfg, recipe, "flatten_swin_s", method)
    assert f"{epochs}ep" in cfg.logger.wandb.tags


@pytest.mark.parametrize(
    ("recipe", "base"),
    [
        ("ablation/gpt2_s_tau", "table1/gpt2_s_adamw2"),
        ("ablation/swin_s_tau", "table1/swin_s_adamw2"),
    ],
)
def test_tau_ablation_differs_from_adamw2_only_in_name(recipe: str, base: str) -> None:
    """Fig. 6 varies τ alone: at the default τ the ablation is the Table 1 AdamW² run."""
    ablation, reference = composed(recipe), composed(base)
    assert ablation.name == f"{reference.name}_tau{reference.optim.tau}"
    for section in ("model", "data", "optim", "schedule", "trainer", "diagnostics"):
        assert getattr(ablation, section) == getattr(reference, section), section
    assert ablation.logger.wandb.group == reference.logger.wandb.group


@pytest.mark.parametrize("method", ["adamw_warmup", "adamw2"])
def test_nanogpt_init_pair_differs_from_table1_only_in_init(method: str) -> None:
    """Table 2(b) says "Xavier", Appendix N "follows nanoGPT": the pair runs the second reading."""
    import dataclasses

    variant = composed(f"table1/gpt2_s_nanogpt_init_{method}")
    paper = composed(f"table1/gpt2_s_{method}")
    assert (
        paper.model.init == TABLE_2B_GPT["weight init"].lower() and variant.model.init == "nanogpt"
    )
    assert dataclasses.replace(variant.model, init=paper.model.init) == paper.model
    for section in ("data", "optim", "schedule", "trainer", "diagnostics"):
        assert getattr(variant, section) == getattr(paper, section), section
    assert variant.name == variant.logger.wandb.name == f"gpt2_s_nanogpt_init_{method}"
    assert variant.logger.wandb.tags == ["table1", "nanogpt-init", *paper.logger.wandb.tags[1:]]
