"""Probes of the heads' pooled vectors: a tiny Barlow Twins run with CbE heads analysed end to
end (head rows for every block, the CbE width, values in range), none for a masked-pixel run
or for heads that pool like the backbone, the features cache with head vectors (round trip,
old formats recomputed), the ``features`` option, and the report's per-block table."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bwssl.analysis import features
from bwssl.analysis.options import HEAD_METRICS, options_from_overrides
from bwssl.analysis.results import read_results
from bwssl.analysis.suite import analyze
from bwssl.config import ConfigError, load_config
from bwssl.data import build_dataset
from bwssl.models import load_model
from bwssl.models.blockwise import build_model
from bwssl.report import head_probe
from bwssl.report.html import render
from bwssl.train.trainer import train

CBE_WIDTH = 48
"""The CbE width of the test run: neither the blocks' 32 channels nor the default 2048."""
DATA = ["data.synthetic_classes=3", "data.synthetic_train=8", "data.synthetic_test=12"]
CBE = ["objective.name=barlow_twins", "objective.pooling=cbe", f"objective.pool_width={CBE_WIDTH}"]
OPTIONS = [
    "metrics=[probe_acc,knn_acc,map,cka_next]",
    "probe_repeats=2",
    "batch_size=8",
    "progress=false",
    "device=cpu",
]
HEAD_NAMES = set(HEAD_METRICS.values())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two-step runs (8 clips, batch 4): Barlow Twins with CbE heads, and masked pixels."""
    root = tmp_path_factory.mktemp("runs")
    out = {"cbe": root / "cbe", "pixels": root / "pixels"}
    train(load_config("tiny-debug", [*DATA, *CBE]), out["cbe"])
    train(load_config("tiny-debug", DATA), out["pixels"])
    return out


@pytest.fixture(scope="module")
def analysed(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("analysis")
    analyze(list(runs.values()), out, options_from_overrides(OPTIONS))
    return out


def test_head_rows_for_every_block_of_the_cbe_run_and_none_for_pixels(analysed):
    rows = read_results(analysed / "results.csv")
    cbe = [r for r in rows if r.run == "cbe"]
    for base, head in HEAD_METRICS.items():
        for metric in (base, head):
            mine = [r for r in cbe if r.metric == metric]
            assert sorted({r.block for r in mine}) == [1, 2], metric
            assert {r.target for r in mine} == ({""} if base == "map" else {"action"})
            assert sorted({r.repeat for r in mine}) == ([0] if base == "map" else [0, 1])
            assert all(math.isfinite(r.value) and 0.0 <= r.value <= 1.0 for r in mine), metric
    # the probes of the two kinds read different arrays (48 CbE channels vs 32 pooled)
    probe = {(r.metric, r.block, r.repeat): r.value for r in cbe}
    assert any(probe[("map_head", b, 0)] != probe[("map", b, 0)] for b in (1, 2))
    pixels = [r for r in rows if r.run == "pixels"]
    assert {r.metric for r in pixels} == {"probe_acc", "knn_acc", "map", "cka_next"}


def test_head_vectors_have_the_cbe_width_and_are_cached(runs, analysed):
    model = load_model(runs["cbe"])
    test = build_dataset(load_config("tiny-debug", [*DATA, *CBE]).data, "test", seed=0)
    f = features.extract_features(model, test, heads=True, batch_size=5, progress=False)
    assert f.head_blocks() == [0, 1]
    assert all(h is not None and h.shape == (12, CBE_WIDTH) for h in f.head or [])
    clips = torch.stack([test[i][0] for i in range(3)])
    with torch.no_grad():
        outs = model.block_outputs(clips)
        for k, h in enumerate(outs):
            want = model.head_features(k, h)
            torch.testing.assert_close(torch.from_numpy((f.head or [])[k][:3]), want)
    # the analysis cached train and test clips of both runs, head vectors where they exist
    cache = features.FeatureCache(analysed / "features")
    entries = [cache.load(p.stem, heads=True) for p in cache.root.glob("*.npz")]
    assert len(entries) == 4 and all(e is not None for e in entries)
    widths = sorted({h.shape[1] for e in entries for h in (e.head or []) if h is not None})
    assert widths == [CBE_WIDTH]
    assert sum(e.head_blocks() == [] for e in entries) == 2  # the pixel run's decoders


@pytest.mark.parametrize(
    ("pooling", "own"),
    [("backbone", []), ("gsp", []), ("lsp", [0, 1]), ("cbe", [0, 1])],
)
def test_only_heads_that_pool_a_vector_of_their_own_keep_one(pooling, own):
    # gsp of the ViT's time-averaged grid is its token mean: the backbone's own pooling;
    # lsp: two 32-channel bins of the 4x4 grid
    cfg = load_config(
        "tiny-debug",
        ["objective.name=barlow_twins", f"objective.pooling={pooling}", "objective.pool_width=64"],
    )
    model = build_model(cfg).eval()
    clips = torch.randn(4, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    f = features.extract_features(model, list(clips), heads=True, batch_size=4, progress=False)
    assert f.head is not None and f.head_blocks() == own
    assert features.extract_features(model, list(clips), progress=False).head is None


def _features(heads: bool) -> features.Features:
    rng = np.random.default_rng(0)
    pooled = [rng.normal(size=(5, 4)).astype(np.float32) for _ in range(2)]
    tokens = [np.zeros((0, 0, 4), np.float32)] * 2
    head = [rng.normal(size=(5, 6)).astype(np.float32), None] if heads else None
    return features.Features(pooled, np.arange(5), np.zeros(0, np.int64), tokens, head)


def test_cache_round_trip_and_old_formats_are_recomputed(tmp_path, monkeypatch):
    cache = features.FeatureCache(tmp_path)
    cache.save("with", _features(True))
    back, sent = cache.load("with", heads=True), _features(True)
    assert back is not None and back.head is not None and sent.head is not None
    assert back.head[1] is None and np.array_equal(back.head[0], sent.head[0])
    assert all(np.array_equal(a, b) for a, b in zip(back.pooled, sent.pooled, strict=True))
    cache.save("without", _features(False))
    assert cache.load("without", heads=True) is None  # heads wanted: recomputed
    plain = cache.load("without")
    assert plain is not None and plain.head is None
    # an entry of the format before head vectors (no version, no head arrays) is not read
    old = _features(False)
    np.savez(
        cache.path("old"),
        num_blocks=np.array(2),
        index=old.index,
        token_index=old.token_index,
        about=np.array("{}"),
        **{f"pooled_{k}": z for k, z in enumerate(old.pooled)},
        **{f"tokens_{k}": t for k, t in enumerate(old.tokens)},
    )
    assert cache.load("old") is None
    # block_features recomputes a stale or head-less entry and replaces it
    model = build_model(load_config("tiny-debug", CBE)).eval()
    clips = list(torch.randn(3, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1)))
    calls = []
    real = features.extract_features
    monkeypatch.setattr(
        features, "extract_features", lambda *a, **kw: calls.append(kw["heads"]) or real(*a, **kw)
    )
    kwargs = dict(encoder_digest="e", dataset_id={"kind": "t"}, cache=cache, progress=False)
    features.block_features(model, clips, **kwargs)
    f = features.block_features(model, clips, heads=True, **kwargs)
    again = features.block_features(model, clips, **kwargs)  # served by the entry with heads
    assert calls == [False, True] and f.head_blocks() == [0, 1] == again.head_blocks()
    key = features.cache_key("e", {"kind": "t"})
    stale = cache.path(key).read_bytes().replace(b"version", b"versiom")  # an unknown layout
    cache.path(key).write_bytes(stale)
    assert features.block_features(model, clips, **kwargs).num_blocks == 2
    assert calls == [False, True, False] and cache.load(key) is not None


def test_features_option_chooses_the_rows_without_new_extraction(runs, analysed, monkeypatch):
    def no_extraction(*args, **kwargs):
        raise AssertionError("features must come from the cache")

    monkeypatch.setattr(features, "extract_features", no_extraction)
    cached = [f"cache_dir={analysed / 'features'}", "metrics=[probe_acc,map,cka_next]"]
    for chosen, want in (
        ("[head]", {"probe_acc_head", "map_head", "cka_next"}),
        ("[backbone]", {"probe_acc", "map", "cka_next"}),
    ):
        opts = options_from_overrides([*OPTIONS, *cached, f"features={chosen}"])
        assert opts.produced_metrics() == want
        out = analysed.parent / f"only-{chosen.strip('[]')}"
        rows = read_results(analyze([runs["cbe"]], out, opts))
        assert {r.metric for r in rows} == want
    with pytest.raises(ConfigError, match="'features'"):
        options_from_overrides(["features=[tokens]"])
    with pytest.raises(ConfigError, match="'features'"):
        options_from_overrides(["features=[]"])


def test_results_csv_feeds_the_reports_per_block_table(analysed):
    rows = read_results(analysed / "results.csv")
    assert head_probe.has_head_rows(rows)
    assert head_probe.groups(rows) == [("vit-d32-l4", "barlow_twins", 2)]
    lines = head_probe.lines(rows, ("vit-d32-l4", "barlow_twins", 2), "probe_acc")
    assert set(lines) == {("simultaneous", "backbone"), ("simultaneous", "head")}
    for (_, kind), cells in lines.items():
        metric = "probe_acc_head" if kind == "head" else "probe_acc"
        for block in (1, 2):
            values = [r.value for r in rows if (r.run, r.metric, r.block) == ("cbe", metric, block)]
            assert cells[block].mean == pytest.approx(np.mean(values)) and cells[block].n == 1
    page = render(rows, [], {}, [], "tiny")
    assert "Probes of the heads' pooled features" in page
    assert page.count("backbone vs head features") == 3
    assert f"<td>{lines[('simultaneous', 'head')][2].text()}</td>" in page
    pixels_only = [r for r in rows if r.run == "pixels"]
    assert "heads' pooled features" not in render(pixels_only, [], {}, [], "tiny")
