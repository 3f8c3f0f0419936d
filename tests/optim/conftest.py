"""Optimizer tests run single-threaded: on the shared 2-core machine two intra-op threads
made a tiny model's step ~40× slower (measured) through oversubscription."""

import importlib

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _small_row_blocks(monkeypatch):
    """Row blocks of 4 Ki elements, so that the tests' small matrices are read (and AdamW²'s ΔW
    formed) in several blocks on the CPU path, as large ones are."""
    sn = importlib.import_module("weyl.optim.spectral_norm")
    monkeypatch.setattr(sn, "_CPU_BLOCK_NUMEL", 1 << 12)
