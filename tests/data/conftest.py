"""Shared fixtures for the data tests: offline environment and one prepared KJV per tokenizer."""

from __future__ import annotations

import os

# datasets reads these at import time, so set them before any test module imports it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import pytest

from weyl.data.kjv import prepare_kjv


@pytest.fixture(scope="session")
def kjv_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """KJV prepared once per session with each tokenizer: {tokenizer: directory}."""
    root = tmp_path_factory.mktemp("kjv")
    return {tok: _prepared(root / tok, tok) for tok in ("char", "bytes", "gpt2")}


def _prepared(path, tokenizer):
    prepare_kjv(path, tokenizer)
    return path


@pytest.fixture(autouse=True)
def _isolated_data_root(tmp_path, monkeypatch):
    # No test may write into the repository's data_cache/ by accident.
    monkeypatch.setenv("WEYL_DATA_DIR", str(tmp_path / "data_root"))
