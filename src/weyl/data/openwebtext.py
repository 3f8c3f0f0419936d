"""OpenWebText (or any text corpus) → GPT-2 token memmaps, following nanoGPT's preparation.

The corpus comes from the Hugging Face Hub (a data set name, needs the network) or from a
local path: a ``save_to_disk`` directory, parquet / arrow / json(l) files, or text files (one
document per file by default, the layout of the original OpenWebText tarballs). As in
nanoGPT's ``data/openwebtext/prepare.py``: ``train_test_split(test_size=0.0005, seed=2357,
shuffle=True)``, the test split renamed ``val``, each document encoded with
``encode_ordinary`` and followed by ``<|endoftext|>`` (50256), written as uint16.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from weyl.data.prepare_progress import DEFAULT_EVERY_S, PrepareProgress
from weyl.data.token_bins import clean_partial, is_prepared, read_meta, write_meta, write_token_file
from weyl.data.tokenizer import GPT2Tokenizer, gpt2_encoding

NANOGPT_TEST_SIZE = 0.0005
NANOGPT_SPLIT_SEED = 2357
DEFAULT_SOURCE = "openwebtext"
# Documents per cached tokenization shard: the progress and resume granularity (OpenWebText's
# 8M documents make 40 shards, a line every minute or so on a few cores).
DEFAULT_DOCS_PER_SHARD = 200_000

_FILE_BUILDERS = {
    ".parquet": "parquet",
    ".arrow": "arrow",
    ".jsonl": "json",
    ".json": "json",
    ".txt": "text",
    ".text": "text",
}


def _local_data_files(path: Path) -> tuple[str, list[str]]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    by_builder: dict[str, list[str]] = {}
    for f in files:
        builder = _FILE_BUILDERS.get(f.suffix.lower())
        if builder is not None and not f.name.startswith("."):
            by_builder.setdefault(builder, []).append(str(f))
    if len(by_builder) != 1:
        found = ", ".join(sorted(by_builder)) or "none"
        raise ValueError(
            f"--source {path}: expected files of one kind (.parquet, .arrow, .json/.jsonl or .txt), "
            f"found {found}"
        )
    return next(iter(by_builder.items()))


def load_text_corpus(
    source: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    num_proc: int | None = None,
    sample_by: str = "document",
) -> Any:
    """A ``datasets.Dataset`` with a ``text`` column from a Hub name or a local path."""
    import datasets

    path = Path(source).expanduser()
    cache = str(cache_dir) if cache_dir is not None else None
    if path.exists():
        if path.is_dir() and any((path / n).exists() for n in ("dataset_dict.json", "state.json")):
            ds = datasets.load_from_disk(str(path))
        else:
            builder, files = _local_data_files(path)
            kwargs: dict[str, Any] = {"sample_by": sample_by} if builder == "text" else {}
            ds = datasets.load_dataset(
                builder, data_files=files, cache_dir=cache, num_proc=num_proc, **kwargs
            )
    else:
        try:
            ds = datasets.load_dataset(source, cache_dir=cache, num_proc=num_proc)
        except Exception as exc:  # the Hub raises several types when offline or unknown
            raise FileNotFoundError(
                f"could not load {source!r}: it is not a local path and the Hub failed "
                f"({type(exc).__name__}); pass --source a local dataset, or allow the network with "
                "HF_DATASETS_OFFLINE=0 HF_HUB_OFFLINE=0"
            ) from exc
    if isinstance(ds, datasets.DatasetDict):
        split = "train" if "train" in ds else next(iter(ds))
        ds = ds[split]
    if "text" not in ds.column_names:
        raise ValueError(f"--source {source}: needs a 'text' column, found {ds.column_names}")
    return ds


def split_like_nanogpt(
    ds: Any,
    *,
    test_size: float = NANOGPT_TEST_SIZE,
    seed: int = NANOGPT_SPLIT_SEED,
    indices_dir: Path | None = None,
) -> Any:
    """nanoGPT's split: shuffled ``train_test_split`` with the test split renamed ``val``."""
    kwargs: dict[str, Any] = {}
    if indices_dir is not None and ds.cache_files:
        # Keep the index files out of the (possibly read-only) source's cache directory.
        indices_dir.mkdir(parents=True, exist_ok=True)
        kwargs = {
            "train_indices_cache_file_name": str(
                indices_dir / f"train-idx-{ds._fingerprint}.arrow"
            ),
            "test_indices_cache_file_name": str(indices_dir / f"val-idx-{ds._fingerprint}.arrow"),
        }
    split = ds.train_test_split(test_size=test_size, seed=seed, shuffle=True, **kwargs)
    split["val"] = split.pop("test")
    return split


def tokenize_documents(batch: dict[str, list[str]]) -> dict[str, list[Any]]:
    """``datasets.map`` function: GPT-2 ids of each document + EOT, and their lengths."""
    enc = gpt2_encoding()  # built once per worker process, from local files
    ids = [[*enc.encode_ordinary(text), enc.eot_token] for text in batch["text"]]
    return {"ids": ids, "len": [len(x) for x in ids]}


def tokenize_split(
    dset: Any,
    split: str,
    work: Path,
    *,
    num_proc: int | None,
    docs_per_shard: int,
    progress: PrepareProgress,
) -> Any:
    """GPT-2 ids of every document of ``dset``, tokenized in contiguous shards of
    ``docs_per_shard`` documents: each shard is one cached ``map`` (an interrupted run resumes
    after the last finished shard) and one progress update (documents/s, tokens/s)."""
    import datasets

    shards = max(1, -(-len(dset) // docs_per_shard))
    parts = []
    for index in range(shards):
        shard = dset if shards == 1 else dset.shard(shards, index, contiguous=True)
        # A fingerprint-named cache lets an interrupted run resume after tokenization.
        key = hashlib.sha1(f"{shard._fingerprint}-gpt2".encode()).hexdigest()[:16]
        part = shard.map(
            tokenize_documents,
            batched=True,
            batch_size=256,
            remove_columns=dset.column_names,
            num_proc=num_proc if num_proc and len(shard) >= num_proc else None,
            desc=f"tokenizing {split}",
            cache_file_name=str(work / f"{split}-{key}.arrow"),
        )
        parts.append(part)
        progress.update(documents=len(part), tokens=int(np.sum(part["len"], dtype=np.uint64)))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _token_chunks(dset: Any, batch_rows: int) -> Any:
    import pyarrow.compute as pc

    for table in dset.with_format("arrow").iter(batch_size=batch_rows):
        yield pc.list_flatten(table["ids"]).to_numpy(zero_copy_only=False)


def prepare_openwebtext(
    out_dir: str | os.PathLike[str],
    source: str = DEFAULT_SOURCE,
    *,
    num_proc: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    test_size: float = NANOGPT_TEST_SIZE,
    sample_by: str = "document",
    force: bool = False,
    progress: bool = True,
    progress_every_s: float = DEFAULT_EVERY_S,
    docs_per_shard: int = DEFAULT_DOCS_PER_SHARD,
) -> dict[str, Any]:
    """Prepare ``out_dir/{train,val}.bin`` + ``meta.json``; skips a complete set unless ``force``.

    With ``progress``, each phase reports documents/s and tokens/s on stderr (a bar on a
    terminal, a line every ``progress_every_s`` seconds otherwise).
    """
    out_dir = Path(out_dir)
    if not force and is_prepared(out_dir):
        return read_meta(out_dir)
    if num_proc is not None and num_proc < 1:
        raise ValueError(f"--num-proc must be >= 1, got {num_proc}")
    if docs_per_shard < 1:
        raise ValueError(f"--docs-per-shard must be >= 1, got {docs_per_shard}")
    with _datasets_bars_off():
        return _prepare(
            out_dir,
            source,
            num_proc=num_proc,
            cache_dir=cache_dir,
            test_size=test_size,
            sample_by=sample_by,
            progress=progress,
            progress_every_s=progress_every_s,
            docs_per_shard=docs_per_shard,
        )


@contextlib.contextmanager
def _datasets_bars_off() -> Any:
    """Hide datasets' own tqdm bars (weyl's progress replaces them; in a log file they are
    carriage-return noise)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _prepare(
    out_dir: Path,
    source: str,
    *,
    num_proc: int | None,
    cache_dir: str | os.PathLike[str] | None,
    test_size: float,
    sample_by: str,
    progress: bool,
    progress_every_s: float,
    docs_per_shard: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_partial(out_dir)
    work = out_dir / ".tokenize_cache"
    if progress:
        print(f"prepare | loading {source}", file=sys.stderr, flush=True)
    ds = load_text_corpus(source, cache_dir=cache_dir, num_proc=num_proc, sample_by=sample_by)
    splits = split_like_nanogpt(ds, test_size=test_size, indices_dir=work)
    if progress:
        sizes = ", ".join(f"{name} {len(d):,}" for name, d in splits.items())
        print(f"prepare | {len(ds):,} documents: {sizes}", file=sys.stderr, flush=True)
    meta_splits: dict[str, dict[str, int]] = {}
    proc = num_proc if num_proc and num_proc > 1 else None
    for split, dset in splits.items():
        with PrepareProgress(
            f"tokenizing {split}",
            total_documents=len(dset),
            every_s=progress_every_s,
            enabled=progress,
        ) as tokenizing:
            tokenized = tokenize_split(
                dset,
                split,
                work,
                num_proc=proc,
                docs_per_shard=docs_per_shard,
                progress=tokenizing,
            )
        total = tokenizing.tokens
        write_token_file(
            out_dir / f"{split}.bin",
            _token_chunks(tokenized, batch_rows=4096),
            total,
            progress=f"writing {split}.bin" if progress else None,
            progress_every_s=progress_every_s,
        )
        meta_splits[split] = {"tokens": total, "documents": len(tokenized)}
    tok = GPT2Tokenizer()
    meta = {
        **tok.meta(),
        "name": "openwebtext" if source == DEFAULT_SOURCE else Path(source).name or source,
        "source": source,
        "splits": meta_splits,
        "split": {"test_size": test_size, "seed": NANOGPT_SPLIT_SEED, "shuffle": True},
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_meta(out_dir, meta)
    shutil.rmtree(work, ignore_errors=True)
    return meta
