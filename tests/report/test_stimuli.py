"""The example-stimuli figure under Level 1 / Level 2, and grating error bars from stderr."""

from __future__ import annotations

import numpy as np

from bwssl.analysis.results import ResultRow, aggregate
from bwssl.report.figures import FIGURES
from bwssl.report.panels import RUN_KEYS, with_standard_errors
from bwssl.report.stimuli import clip_format, examples, fig3_stimuli


def _row(metric: str, target: str, value: float, **kw) -> ResultRow:
    base = dict(run="e2e-k2-s0", regime="e2e", model="m", num_blocks=2, seed=0, block=1)
    return ResultRow(**{**base, **kw}, metric=metric, target=target, value=value)


def test_examples_show_each_grating_kind_drifting() -> None:
    clips = examples(8, 32)
    titles = [t for t, _ in clips]
    assert sum(t.startswith("L1") for t in titles) == 4
    assert sum(t.startswith("L2") for t in titles) == 3
    for _, clip in clips:
        assert clip.shape == (8, 32, 32, 3) and clip.min() >= 0 and clip.max() <= 1
        assert not np.allclose(clip[0], clip[-1])  # it drifts
    colours = {t.split("\n")[1].split(",")[0] for t in titles if t.startswith("L1")}
    assert {"gray", "red", "blue", "orange"} == colours
    mismatch = clips[4][1]  # L2, sf 4 | 16 with the same orientation: the halves differ
    assert not np.allclose(mismatch[:, :, :15], mismatch[:, :, 17:32][:, :, ::-1])


def test_figure_uses_the_runs_clip_format_and_follows_fig3(tmp_path) -> None:
    rows = [_row("probe_l1", "sf", 0.5)]
    rows += [_row("setup", t, v, block=0) for t, v in (("num_frames", 4), ("crop_size", 32))]
    assert clip_format(rows) == (4, 32, 3)
    assert clip_format([_row("probe_l1", "sf", 0.5)]) == (16, 128, 3)  # no setup rows
    files = fig3_stimuli(rows, tmp_path)
    assert [f.name for f in files] == ["fig3_stimuli.png", "fig3_stimuli.svg"]
    assert files[0].stat().st_size > 1000
    assert fig3_stimuli([_row("map", "", 0.3)], tmp_path / "none") == []
    names = [f.__name__ for f in FIGURES]
    assert names.index("fig3_stimuli") == names.index("fig3_complexity") + 1


def test_grating_error_bars_are_at_least_the_fold_standard_error() -> None:
    rows = [
        _row("probe_l1", "sf", 0.6, stderr=0.04),
        _row("probe_l1", "tf", 0.5, stderr=0.02),
        _row("map", "", 0.3),
    ]
    agg = with_standard_errors(aggregate(rows, RUN_KEYS), rows)
    by_metric = {a.metric: a for a in agg}
    assert abs(by_metric["probe_l1"].std - 0.03) < 1e-12  # one seed: the mean fold error
    assert by_metric["map"].std == 0.0
    two_seeds = [*rows, _row("probe_l1", "sf", 0.9, run="e2e-k2-s1", seed=1, stderr=0.01)]
    wide = with_standard_errors(aggregate(two_seeds, RUN_KEYS), two_seeds)
    assert next(a.std for a in wide if a.metric == "probe_l1") > 0.2  # the seeds' spread wins
