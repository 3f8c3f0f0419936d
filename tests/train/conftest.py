"""Trainer tests run torch on one thread, like their worker subprocesses, so in-process and
subprocess runs reduce in the same order and can be compared bit for bit."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def kjv_data(tmp_path_factory):
    """One prepared data dir (the embedded KJV text, characters) shared by the CLI-run tests."""
    return tmp_path_factory.mktemp("kjv_data")
