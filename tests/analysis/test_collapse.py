"""The collapse measure: the spread of pooled features across clips."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bwssl.analysis.clip_metrics import METRICS_HANDLED
from bwssl.analysis.collapse import feature_std
from bwssl.analysis.options import METRICS


def test_identical_clips_have_no_spread():
    z = np.tile(np.array([[0.3, -1.0, 2.0, 0.5]]), (16, 1))
    assert feature_std(z) == pytest.approx(0.0, abs=1e-12)
    assert feature_std(z, normalize=False) == pytest.approx(0.0, abs=1e-12)


def test_clips_spread_on_the_sphere_give_about_one_whatever_the_width():
    rng = np.random.default_rng(0)
    for dims in (8, 64, 256):
        z = rng.normal(size=(4000, dims))
        assert feature_std(z) == pytest.approx(1.0, abs=0.05)


def test_normalized_spread_ignores_scale_and_raw_spread_follows_it():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 6)) + 3.0
    assert feature_std(1000.0 * z) == pytest.approx(feature_std(z), rel=1e-9)
    assert feature_std(1000.0 * z, normalize=False) == pytest.approx(
        1000.0 * feature_std(z, normalize=False), rel=1e-9
    )
    # raw: the mean over dims of each dim's population std
    assert feature_std(z, normalize=False) == pytest.approx(float(z.std(axis=0).mean()))


def test_a_shared_mean_direction_lowers_the_spread():
    rng = np.random.default_rng(2)
    noise = rng.normal(size=(500, 16))
    offset = np.zeros(16)
    offset[0] = 20.0
    assert feature_std(noise + offset) < 0.3 * feature_std(noise)


def test_torch_input_one_clip_and_bad_values():
    z = torch.randn(10, 4)
    assert feature_std(z) == pytest.approx(feature_std(z.numpy()))
    assert feature_std(np.ones((1, 3))) == 0.0
    assert math.isnan(feature_std(np.array([[1.0, np.nan], [0.0, 1.0]])))
    with pytest.raises(ValueError, match="clips, dims"):
        feature_std(np.ones(5))


def test_it_is_a_metric_of_the_clip_family():
    assert "feature_std" in METRICS and "feature_std" in METRICS_HANDLED
