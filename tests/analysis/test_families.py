"""The analysis suite's seam: every metric is computed by exactly one metric family."""

from __future__ import annotations

from bwssl.analysis.options import METRICS
from bwssl.analysis.suite import FAMILIES


def test_every_metric_has_exactly_one_family():
    handled = [m for family in FAMILIES for m in family.METRICS_HANDLED]
    assert sorted(handled) == sorted(METRICS)
    for family in FAMILIES:
        assert callable(family.run)
