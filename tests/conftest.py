"""Shared fixtures: tiny configs that build and train in well under a second."""

from __future__ import annotations

import pytest

from bwssl.config import Config, load_config


def tiny_config(*overrides: str) -> Config:
    """The tiny-debug preset with dotted overrides."""
    return load_config("tiny-debug", list(overrides))


@pytest.fixture
def tiny() -> Config:
    return tiny_config()


@pytest.fixture
def make_cfg():
    """``make_cfg("regime=e2e", ...)``: the tiny-debug preset with overrides."""
    return tiny_config


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny models run fastest on one thread; it also keeps results repeatable across runs."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
