"""OpenWebText (or any text corpus) → GPT-2 token memmaps, following nanoGPT's preparation.

The corpus comes from the Hugging Face Hub (a data set name, needs the network) or from a
local path: a ``save_to_disk`` directory, parquet / arrow / json(l) files, or text files (one
document per file by default, the layout of the original OpenWebText tarballs). As in
nanoGPT's ``data/openwebtext/prepare.py``: ``train_test_split(test_size=0.0005, seed=2357,
shuffle=True)``, the test split renamed ``val``, each document encoded with
``encode_ordinary`` and followed by ``<|endoftext|>`` (50256), written as uint16.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from weyl.data.token_bins import clean_partial, is_prepared, read_meta, write_meta, write_token_file
from weyl.data.tokenizer import GPT2Tokenizer, gpt2_encoding

NANOGPT_TEST_SIZE = 0.0005
NANOGPT_SPLIT_SEED = 2357
DEFAULT_SOURCE = "openwebtext"

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
) -> dict[str, Any]:
    """Prepare ``out_dir/{train,val}.bin`` + ``meta.json``; skips a complete set unless ``force``."""
    out_dir = Path(out_dir)
    if not force and is_prepared(out_dir):
        return read_meta(out_dir)
    if num_proc is not None and num_proc < 1:
        raise ValueError(f"--num-proc must be >= 1, got {num_proc}")
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_partial(out_dir)
    work = out_dir / ".tokenize_cache"
    ds = load_text_corpus(source, cache_dir=cache_dir, num_proc=num_proc, sample_by=sample_by)
    splits = split_like_nanogpt(ds, test_size=test_size, indices_dir=work)
    meta_splits: dict[str, dict[str, int]] = {}
    proc = num_proc if num_proc and num_proc > 1 else None
    for split, dset in splits.items():
        # A fingerprint-named cache lets an interrupted run resume after tokenization.
        key = hashlib.sha1(f"{dset._fingerprint}-gpt2".encode()).hexdigest()[:16]
        tokenized = dset.map(
            tokenize_documents,
            batched=True,
            batch_size=256,
            remove_columns=dset.column_names,
            num_proc=proc,
            desc=f"tokenizing {split}",
            cache_file_name=str(work / f"{split}-{key}.arrow"),
        )
        total = int(np.sum(tokenized["len"], dtype=np.uint64))
        write_token_file(
            out_dir / f"{split}.bin",
            _token_chunks(tokenized, batch_rows=4096),
            total,
            progress=f"writing {split}.bin" if progress else None,
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
