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
