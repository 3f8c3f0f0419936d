"""``build_data``: a data config (TextDataConfig / ImageDataConfig) → a :class:`DataBundle`."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from weyl.data.bundle import DataBundle
from weyl.data.epoch_sampler import ShardedEpochSampler
from weyl.data.image_sets import load_image_splits
from weyl.data.image_stream import ImageBatchStream, iter_val_images, probe_images
from weyl.data.image_transforms import (
    SeededTransformDataset,
    TensorImageTransform,
    build_mix,
    pil_eval_transform,
    pil_train_transform,
)
from weyl.data.kjv import prepare_kjv
from weyl.data.locations import default_text_dir, missing_data_error, resolve_dir
from weyl.data.token_bins import largest_token_ids, read_meta
from weyl.data.token_blocks import TokenBlockStream, iter_val_blocks, probe_blocks


def text_data_dir(cfg: Any) -> Path:
    """Where a text set's bins live: data.path, else the default for its name and tokenizer."""
    return resolve_dir(cfg.path, default_text_dir(cfg.name, cfg.tokenizer))


def prepare_command(cfg: Any, out_dir: Path) -> str:
    """The ``weyl prepare`` command that creates a missing text set."""
    if cfg.name == "kjv":
        return f"weyl prepare kjv --tokenizer {cfg.tokenizer} --out {out_dir}"
    return f"weyl prepare openwebtext --source <hub name or local corpus> --out {out_dir}"


TOKEN_SET_FILES = ("train.bin", "val.bin", "meta.json")


def _open_token_set(cfg: Any, out_dir: Path) -> dict[str, Any]:
    """meta.json of the set at ``out_dir``; one-line errors naming the path and the fix.

    The embedded KJV is prepared on first use, but only into a directory that holds none of a
    set's files: whatever a user put there is never overwritten.
    """
    command = prepare_command(cfg, out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(
            f"data.path={out_dir} is a file; point it at a directory holding "
            f"{', '.join(TOKEN_SET_FILES)} (create one with `{prepare_command(cfg, Path('DIR'))}`)"
        )
    if cfg.name == "kjv" and not any((out_dir / f).exists() for f in TOKEN_SET_FILES):
        prepare_kjv(out_dir, cfg.tokenizer)
    if not any((out_dir / f).exists() for f in TOKEN_SET_FILES):
        raise missing_data_error(
            f"text data set {cfg.name!r} ({', '.join(TOKEN_SET_FILES)})", out_dir, command
        )
    try:
        meta = read_meta(out_dir)
        largest = largest_token_ids(out_dir, meta)
    except (UnicodeDecodeError, json.JSONDecodeError):
        detail = f"{out_dir / 'meta.json'} is not JSON"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, KeyError | TypeError):
            detail = f"{out_dir / 'meta.json'} lacks a field ({detail})"
    else:
        vocab = int(meta["vocab_size"])
        for split, top in largest.items():
            if top >= vocab:
                raise ValueError(
                    f"{out_dir / f'{split}.bin'} holds token id {top} but its meta.json vocabulary "
                    f"has {vocab} ids (largest valid id {vocab - 1}): the bins are corrupt or from "
                    f"another tokenizer; prepare them again with `{command} --force`"
                )
        return meta
    raise ValueError(
        f"data.path: {out_dir} is not a usable token set: {detail}; "
        f"prepare it again with `{command} --force`"
    )


def _check_rank(rank: int, world_size: int, batch_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def build_text_data(
    cfg: Any,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    probe_batch_size: int = 4,
) -> DataBundle:
    """Token-block LM data; the embedded KJV is prepared on first use, others must exist."""
    out_dir = text_data_dir(cfg)
    meta = _open_token_set(cfg, out_dir)
    if meta["tokenizer"] != cfg.tokenizer:
        raise ValueError(
            f"data.tokenizer='{cfg.tokenizer}' but {out_dir} was prepared with {meta['tokenizer']!r}; "
            f"set data.tokenizer={meta['tokenizer']} or prepare again"
        )
    train_bin, val_bin = out_dir / "train.bin", out_dir / "val.bin"
    stream = TokenBlockStream(
        train_bin,
        block_size=cfg.block_size,
        batch_size=batch_size,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    make_val = functools.partial(
        iter_val_blocks,
        val_bin,
        block_size=cfg.block_size,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
    )
    return DataBundle(
        task="lm",
        train=stream,
        make_val=make_val,
        probe=probe_blocks(val_bin, block_size=cfg.block_size, batch_size=probe_batch_size),
        vocab_size=int(meta["vocab_size"]),
        num_classes=None,
        mix=None,
        label_smoothing=0.0,
        samples_per_epoch=stream.num_tokens // cfg.block_size,
    )


def build_image_data(
    cfg: Any,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    probe_batch_size: int = 4,
) -> DataBundle:
    """Image classification data through the Table 2 pipeline (tensor pipeline for small sets)."""
    if cfg.img_size < 1:
        raise ValueError(f"data.img_size must be >= 1, got {cfg.img_size}")
    splits = load_image_splits(cfg.name, cfg.path)
    if splits.modality == "pil":
        train_tf, eval_tf = pil_train_transform(cfg), pil_eval_transform(cfg)
    else:
        common = {"hflip": splits.hflip, "interpolation": cfg.interpolation}
        train_tf = TensorImageTransform(
            cfg.img_size,
            splits.mean,
            splits.std,
            train=True,
            random_erasing=cfg.random_erasing,
            **common,
        )
        eval_tf = TensorImageTransform(cfg.img_size, splits.mean, splits.std, train=False, **common)
    train_set = SeededTransformDataset(splits.train, train_tf, seed=seed)
    val_set = SeededTransformDataset(splits.val, eval_tf, seed=seed)
    sampler = ShardedEpochSampler(len(train_set), rank=rank, world_size=world_size, seed=seed)
    mix = build_mix(cfg, splits.num_classes, batch_size=batch_size, seed=seed, rank=rank)
    stream = ImageBatchStream(
        train_set, sampler, batch_size=batch_size, num_workers=cfg.num_workers, mixer=mix
    )
    make_val = functools.partial(
        iter_val_images,
        val_set,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        num_workers=cfg.num_workers,
    )
    return DataBundle(
        task="classification",
        train=stream,
        make_val=make_val,
        probe=probe_images(val_set, probe_batch_size),
        vocab_size=None,
        num_classes=splits.num_classes,
        mix=mix,
        label_smoothing=float(cfg.label_smoothing),
        samples_per_epoch=len(train_set),
    )


def build_data(
    cfg: Any,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    probe_batch_size: int = 4,
) -> DataBundle:
    """Build this rank's data bundle from a TextDataConfig or ImageDataConfig (by ``cfg.kind``)."""
    _check_rank(rank, world_size, batch_size)
    if probe_batch_size < 1:
        raise ValueError(f"diagnostics.probe_batch_size must be >= 1, got {probe_batch_size}")
    builders = {"text": build_text_data, "image": build_image_data}
    return builders[cfg.kind](
        cfg,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        probe_batch_size=probe_batch_size,
    )
