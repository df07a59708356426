"""Small evaluation sets never crash the analysis: a metric the clips are too few for is
skipped with its reason, the others are computed, and the report marks the skipped ones."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from bwssl.analysis.options import options_from_overrides
from bwssl.analysis.requirements import SKIPPED_FILE, cv_needs, read_skipped, retrieval_needs
from bwssl.analysis.results import read_results
from bwssl.analysis.suite import analyze
from bwssl.config import load_config
from bwssl.report.html import write_report
from bwssl.train.trainer import train

CLIP_METRICS = "[probe_acc,knn_acc,map,cka_next,cps,feature_std,local_loss,mse]"


def _write(path: Path, level: int) -> None:
    """A 10-frame 32x40 mpeg4 AVI whose brightness says its class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 40, 32, "yuv420p"
        for i in range(10):
            img = np.full((32, 40, 3), level + 3 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def own_videos(tmp_path_factory) -> Path:
    """Class folders: cat (3 videos) and dog (3), with two sets of split lists."""
    root = tmp_path_factory.mktemp("own") / "videos"
    for cls, level in (("cat", 40), ("dog", 160)):
        for i in range(3):
            _write(root / cls / f"{cls}{i}.avi", level + 10 * i)
    one = root.parent / "one-clip"  # 2 test videos: a 1-clip evaluation subsample
    one.mkdir()
    (one / "train.txt").write_text("cat/cat0.avi\ncat/cat1.avi\ndog/dog0.avi\ndog/dog1.avi\n")
    (one / "test.txt").write_text("cat/cat2.avi\ndog/dog2.avi\n")
    two = root.parent / "two-class"  # one training class; one test clip per class
    two.mkdir()
    (two / "train.txt").write_text("cat/cat0.avi\ncat/cat1.avi\n")
    (two / "test.txt").write_text("cat/cat2.avi\ndog/dog2.avi\n")
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run") / "untrained"
    train(load_config("tiny-debug", ["regime=untrained"]), run)
    return run


def _analyze(run_dir: Path, out: Path, videos: Path, lists: str, *extra: str) -> Path:
    options = options_from_overrides(
        [
            f"metrics={CLIP_METRICS}",
            "data.name=folder",
            f"data.root={videos}",
            f"data.split_dir={videos.parent / lists}",
            f"data.cache_dir={out.parent / 'cache'}",
            "probe_repeats=1",
            "progress=false",
            "figures=false",
            "device=cpu",
            *extra,
        ]
    )
    return analyze([run_dir], out, options)


def test_a_one_clip_evaluation_set(run_dir: Path, own_videos: Path, tmp_path):
    results = _analyze(run_dir, tmp_path / "out", own_videos, "one-clip")
    metrics = {r.metric for r in read_results(results)}
    assert {"probe_acc", "knn_acc", "cps", "local_loss", "mse"} <= metrics
    assert not metrics & {"map", "cka_next", "feature_std"}
    skipped = {s.metric: s.reason for s in read_skipped(tmp_path / "out" / SKIPPED_FILE)}
    assert set(skipped) == {"map", "cka_next", "feature_std"}
    assert "2+ test clips, there are 1" in skipped["map"]
    page = write_report(tmp_path / "report.html", results, {"train": "x"}, []).read_text()
    assert "Skipped metrics" in page and "CKA needs 2+ test clips" in page


def test_a_two_class_evaluation_set_with_one_training_class(run_dir, own_videos, tmp_path):
    out = tmp_path / "out"
    results = _analyze(run_dir, out, own_videos, "two-class", "data.eval_fraction=1.0")
    metrics = {r.metric for r in read_results(results)}
    assert {"cka_next", "feature_std", "cps"} <= metrics
    skipped = {s.metric: s.reason for s in read_skipped(out / SKIPPED_FILE)}
    assert set(skipped) == {"probe_acc", "knn_acc", "map"}
    assert "2+ classes among the training clips, they hold 1" in skipped["probe_acc"]
    assert "a class with 2+ test clips" in skipped["map"]
    # a rerun reuses the run's results, skipped metrics included
    _analyze(run_dir, out, own_videos, "two-class", "data.eval_fraction=1.0")
    assert {s.metric for s in read_skipped(out / SKIPPED_FILE)} == {"probe_acc", "knn_acc", "map"}


def test_requirements_say_what_is_missing():
    assert retrieval_needs(np.array([0, 1, 1])) == ""
    assert "2+ test clips" in retrieval_needs(np.array([3]))
    assert cv_needs(np.array([0, 0, 1, 1]), 5) == ""
    assert "1 of 2 classes" in cv_needs(np.array([0, 0, 1]), 2)


def test_too_few_gratings_skip_the_grating_metrics(run_dir: Path, tmp_path):
    options = options_from_overrides(
        ["metrics=[probe_l1,occdrop_l1]", "grating_clips=2", "progress=false", "device=cpu"]
    )
    results = analyze([run_dir], tmp_path / "out", options)
    assert read_results(results) == []
    skipped = {s.metric: s.reason for s in read_skipped(tmp_path / "out" / SKIPPED_FILE)}
    assert set(skipped) == {"probe_l1", "occdrop_l1"}
    assert "2+ classes of 2+ clips among 2" in skipped["probe_l1"]
