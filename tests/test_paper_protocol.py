"""The paper presets analyse and train as the paper: full grids, per-clip grey OccDrop, the
whole training set for the probe, the whole eval subset for the MSE, and a stated lr recipe."""

from __future__ import annotations

import pytest

from bwssl.analysis import AnalysisOptions
from bwssl.config import ConfigError, apply_overrides, coerce, load_config
from bwssl.experiment import load_experiment


@pytest.mark.parametrize("preset", ["paper-tiny", "paper-small"])
def test_paper_presets_analyse_with_the_papers_protocol(preset: str) -> None:
    exp = load_experiment(preset, [])
    o = coerce(AnalysisOptions, apply_overrides({}, exp.analysis))
    assert o.grating_clips is None and o.mse_clips is None
    assert (o.occlusion, o.occlusion_fill, o.probe_fraction) == ("per_clip", "grey", 1.0)
    assert exp.paper_model == preset.split("-")[1]


def test_the_lr_recipe_has_both_readings() -> None:
    peak = load_config("deit-tiny").train
    assert (peak.lr, peak.lr_scale_batch, peak.min_lr, peak.warmup_epochs) == (
        1e-4,
        None,
        1e-5,
        40,
    )
    assert peak.peak_lr == 1e-4
    videomae = load_config("deit-small", ["train.lr_scale_batch=256"]).train
    assert videomae.peak_lr == pytest.approx(1e-4 * 32 / 256)
    with pytest.raises(ConfigError, match=r"train\.lr_scale_batch"):
        load_config("deit-tiny", ["train.lr_scale_batch=0"])


def test_bad_analysis_choices_name_the_key() -> None:
    with pytest.raises(ConfigError, match="occlusion"):
        AnalysisOptions(occlusion="everywhere")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="grating_clips"):
        AnalysisOptions(grating_clips=0)
