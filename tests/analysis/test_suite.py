"""The analysis suite end to end on two tiny trained runs (e2e and simultaneous)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bwssl.analysis import features, suite
from bwssl.analysis.commands import analyze_and_draw as analyze  # the suite, then the figures
from bwssl.analysis.commands import split_arguments
from bwssl.analysis.options import AnalysisOptions, DataOverrides, options_from_overrides
from bwssl.analysis.results import COLUMNS, read_results
from bwssl.analysis.sources import Source, model_name
from bwssl.cli import main
from bwssl.config import ConfigError, DataConfig, ModelConfig, load_config
from bwssl.errors import UserError
from bwssl.models.blockwise import build_model
from bwssl.train.trainer import train

RUN_OVERRIDES = [
    "data.synthetic_classes=3",
    "data.synthetic_train=24",
    "data.synthetic_test=18",
]
TINY_OPTIONS = [
    "grating_clips=48",
    "grating_folds=2",
    "occlusion_locations=1",
    "cps_clips=4",
    "mse_clips=8",
    "batch_size=8",
    "progress=false",
    "device=cpu",
]
PER_BLOCK = (
    "probe_acc",
    "knn_acc",
    "map",
    "probe_l1",
    "probe_l2",
    "occdrop_l1",
    "occdrop_l2",
    "cps",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for regime in ("e2e", "simultaneous"):
        cfg = load_config("tiny-debug", [*RUN_OVERRIDES, f"regime={regime}", "seed=3"])
        train(cfg, root / regime)
        out[regime] = root / regime
    return out


@pytest.fixture(scope="module")
def analysed(runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("analysis")
    results = analyze(list(runs.values()), out, options_from_overrides(TINY_OPTIONS))
    assert results == out / "results.csv"
    return out


def _index(rows):
    return {(r.run, r.metric, r.block, r.target, r.repeat): r.value for r in rows}


def test_results_have_every_metric_for_every_block(analysed):
    with (analysed / "results.csv").open() as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    rows = read_results(analysed / "results.csv")
    for run, regime in (("e2e", "e2e"), ("simultaneous", "simultaneous")):
        mine = [r for r in rows if r.run == run]
        assert {(r.regime, r.model, r.num_blocks, r.seed) for r in mine} == {
            (regime, "vit-d32-l4", 2, 3)
        }
        blocks = {m: sorted({r.block for r in mine if r.metric == m}) for m in PER_BLOCK}
        assert blocks == {m: [1, 2] for m in PER_BLOCK}
        assert sorted({r.block for r in mine if r.metric == "cka_next"}) == [1]
        mse_blocks = sorted(r.block for r in mine if r.metric == "mse")
        assert mse_blocks == ([2] if regime == "e2e" else [1, 2])
        for metric in ("probe_acc", "knn_acc"):
            probe = [r for r in mine if r.metric == metric]
            assert {r.target for r in probe} == {"action"}
            assert sorted({r.repeat for r in probe}) == [0, 1, 2]
        l1 = {r.target for r in mine if r.metric == "probe_l1"}
        assert {"sf", "tf", "orientation", "contrast", "colour"} <= l1
        assert {"sf_match", "orientation_delta"} <= {
            r.target for r in mine if r.metric == "probe_l2"
        }
        assert {r.target for r in mine if r.metric == "occdrop_l1"} == l1
        assert {r.target for r in mine if r.metric in ("map", "cka_next", "cps", "mse")} == {""}


def test_grating_rows_carry_standard_errors_and_protocols(analysed):
    rows = [r for r in read_results(analysed / "results.csv") if r.run == "simultaneous"]
    probes = [r for r in rows if r.metric in ("probe_l1", "probe_l2")]
    assert probes and all(r.stderr is not None and 0 <= r.stderr < 0.5 for r in probes)
    assert {r.protocol for r in rows if r.metric == "probe_l1"} == {"48 clips,2 folds"}
    drops = [r for r in rows if r.metric.startswith("occdrop")]
    assert {r.protocol for r in drops} == {"per_clip,grey"}  # the paper's protocol by default
    assert {r.repeat for r in drops} == {0}  # one probe over the mixed locations
    assert {r.protocol for r in rows if r.metric == "mse"} == {"8 clips"}
    assert all(r.stderr is None for r in rows if r.metric in ("map", "cka_next"))
    setup = {r.target: r.value for r in rows if r.metric == "setup"}
    assert {r.block for r in rows if r.metric == "setup"} == {0}
    # tiny-debug: 4 frames, tubelet 2, 32 px / 8 px patches: a 2x4x4 grid, 0.75 hides 12 of 16
    assert (setup["grid_t"], setup["grid_h"], setup["grid_w"]) == (2, 4, 4)
    assert (setup["masked_per_frame"], setup["visible_tokens"]) == (12, 8)
    assert setup["peak_lr"] == setup["lr"] == 1e-3 and setup["lr_scale_batch"] == 0


def test_values_are_in_range(analysed):
    for r in read_results(analysed / "results.csv"):
        assert math.isfinite(r.value), r
        if r.metric in ("probe_acc", "knn_acc", "probe_l1", "probe_l2", "map"):
            assert 0.0 <= r.value <= 1.0, r
        elif r.metric == "cka_next":
            assert -1e-9 <= r.value <= 1.0 + 1e-9, r
        elif r.metric == "cps":
            assert -1.0 <= r.value <= 1.0 + 1e-6, r
        elif r.metric == "mse":
            assert r.value > 0, r
        elif r.metric.startswith("occdrop"):
            assert r.value <= 1.0, r


def test_outputs_aggregate_figures_and_caches(analysed):
    with (analysed / "aggregate.csv").open() as f:
        agg = list(csv.DictReader(f))
    assert {a["regime"] for a in agg} == {"e2e", "simultaneous"}
    assert all(a["n"] == "1" for a in agg)
    for name in ("fig2_downstream", "fig3_complexity", "fig4_similarity", "fig5_patch"):
        assert (analysed / "figures" / f"{name}.png").stat().st_size > 0
        assert (analysed / "figures" / f"{name}.svg").exists()
    assert {p.name for p in (analysed / "runs").iterdir()} == {
        "e2e.csv",
        "e2e.json",
        "simultaneous.csv",
        "simultaneous.json",
    }
    assert len(list((analysed / "features").glob("*.npz"))) > 0
    assert not list(analysed.rglob("*.tmp"))


def test_rerun_reuses_results_then_features(analysed, runs, monkeypatch):
    before = _index(read_results(analysed / "results.csv"))
    cached = {p: p.stat().st_mtime_ns for p in (analysed / "features").glob("*.npz")}

    def no_model(self, device):
        raise AssertionError("a finished run must not be loaded again")

    monkeypatch.setattr(Source, "load", no_model)
    analyze(list(runs.values()), analysed, options_from_overrides(TINY_OPTIONS))
    assert _index(read_results(analysed / "results.csv")) == before
    monkeypatch.undo()

    def no_extraction(*args, **kwargs):
        raise AssertionError("features must come from the cache")

    monkeypatch.setattr(features, "extract_features", no_extraction)
    opts = options_from_overrides([*TINY_OPTIONS, "probe_repeats=1", "cka=both"])
    analyze(list(runs.values()), analysed, opts)
    rows = read_results(analysed / "results.csv")
    after = _index(rows)
    assert {r.repeat for r in rows if r.metric == "probe_acc"} == {0}
    assert {r.target for r in rows if r.metric == "cka_next"} == {"", "rbf"}
    same = [k for k in before if k[1] in ("map", "probe_l1", "cka_next", "cps")]
    assert same and all(after[k] == before[k] for k in same)
    assert {p: p.stat().st_mtime_ns for p in (analysed / "features").glob("*.npz")} == cached


def test_cli_analyze(analysed, runs, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "analyze",
        str(runs["e2e"]),
        "--out",
        str(out),
        *TINY_OPTIONS,
        f"cache_dir={analysed / 'features'}",
        "metrics=[map,cps]",
        "figures=false",
    ]
    assert main(argv) == 0
    assert str(out / "results.csv") in capsys.readouterr().out
    rows = read_results(out / "results.csv")
    assert {r.metric for r in rows} == {"map", "cps"}
    ref = _index(read_results(analysed / "results.csv"))
    assert all(ref[k] == v for k, v in _index(rows).items())
    # another metric adds its rows and keeps the others
    assert main([*argv[:-2], "metrics=[cka_next]", "cka=rbf", "figures=false"]) == 0
    rows = read_results(out / "results.csv")
    assert {(r.metric, r.target) for r in rows} == {("map", ""), ("cps", ""), ("cka_next", "rbf")}


def test_the_suite_itself_draws_no_figures(analysed, runs, tmp_path):
    out = tmp_path / "suite"
    opts = options_from_overrides(
        [*TINY_OPTIONS, f"cache_dir={analysed / 'features'}", "metrics=[map]"]
    )
    assert opts.figures  # the command's option: bwssl analyze draws, suite.analyze does not
    assert suite.analyze([runs["e2e"]], out, opts) == out / "results.csv"
    assert {r.metric for r in read_results(out / "results.csv")} == {"map"}
    assert not (out / "figures").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["analyze", "{tmp}/missing", "--out", "{tmp}/o"], "does not exist"),
        (["analyze", "{tmp}", "--out", "{tmp}/o"], "neither a bwssl run directory"),
        (["analyze", "{run}", "--out", "{tmp}/o", "grating_clips=0"], "grating_clips"),
        (["analyze", "{run}", "--out", "{tmp}/o", "metrics=[accuracy]"], "accuracy"),
        (["analyze", "{run}", "{run}", "--out", "{tmp}/o"], "two runs are named"),
        (["analyze", "{run}", "{tmp}"], "--out"),
    ],
)
def test_cli_errors_are_one_line(argv, message, runs, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path, run=runs["e2e"]) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


def test_hf_folder_is_analysed_like_the_run(analysed, runs, tmp_path):
    pytest.importorskip("transformers")
    from bwssl.interop import export_hf

    folder = export_hf(runs["simultaneous"], tmp_path / "hf-simultaneous")
    # an HF folder has no data config beyond the clip format: the options give the run's
    opts = options_from_overrides(
        [*TINY_OPTIONS, *RUN_OVERRIDES, "hf_num_blocks=2", "metrics=[map,mse,cps,setup]"]
    )
    rows = read_results(analyze([folder], tmp_path / "out", opts))
    assert {(r.regime, r.seed, r.num_blocks) for r in rows} == {("hf", 0, 2)}
    facts = {r.target for r in rows if r.metric == "setup"}
    assert "grid_t" in facts and "lr" not in facts  # an imported training is not ours to state
    assert (tmp_path / "out" / "figures" / "fig5_patch.png").exists()  # a regime without colour
    assert sorted(r.block for r in rows if r.metric == "mse") == [2]  # the exported decoder
    ref = _index(read_results(analysed / "results.csv"))
    for r in rows:
        if r.metric in ("map", "cps"):
            assert r.value == pytest.approx(
                ref[("simultaneous", r.metric, r.block, "", 0)], abs=1e-4
            )


class _SomeUnreadable(torch.utils.data.Dataset):
    """Clips (C, T, H, W) with labels; items 2 and 5 cannot be read."""

    def __init__(self, n: int = 7) -> None:
        self.clips = torch.randn(n, 3, 4, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        return None if i in (2, 5) else (self.clips[i], i % 2)


def test_extract_features_skips_unreadable_and_caches(tmp_path):
    model = build_model(load_config("tiny-debug")).eval()
    data = _SomeUnreadable()
    cache = features.FeatureCache(tmp_path)
    kwargs = dict(
        encoder_digest="abc",
        dataset_id={"kind": "test"},
        cache=cache,
        token_items=[1, 2, 6],
        batch_size=3,
        progress=False,
    )
    f = features.block_features(model, data, **kwargs)
    assert f.index.tolist() == [0, 1, 3, 4, 6]
    assert f.token_index.tolist() == [1, 6]  # item 2 is unreadable
    k, n, d = model.num_blocks, model.backbone.num_tokens(0), model.backbone.cfg.embed_dim
    assert f.num_blocks == k
    assert all(z.shape == (5, d) for z in f.pooled) and all(t.shape == (2, n, d) for t in f.tokens)
    with torch.no_grad():
        outs = model.block_outputs(data.clips[[1, 6]])
    for b in range(k):
        torch.testing.assert_close(torch.from_numpy(f.pooled[b][[1, 4]]), outs[b].mean(1))
        torch.testing.assert_close(
            torch.from_numpy(f.tokens[b]).float(), outs[b], atol=1e-2, rtol=1e-3
        )  # stored as float16
    again = features.block_features(model, data, **kwargs)
    assert (
        all(np.array_equal(a, b) for a, b in zip(again.pooled, f.pooled, strict=True))
        and len(list(tmp_path.glob("*.npz"))) == 1
    )
    other = features.block_features(model, data, **{**kwargs, "token_items": [0]})
    assert other.token_index.tolist() == [0] and len(list(tmp_path.glob("*.npz"))) == 2


def test_options_and_helpers():
    assert options_from_overrides(["data.root=/x"]).data.root == "/x"
    with pytest.raises(ConfigError, match="probe_fraction"):
        AnalysisOptions(probe_fraction=0.0)
    data = DataOverrides(frames_root="/frames").apply(DataConfig(num_frames=8, crop_size=32))
    assert (data.name, data.num_frames, data.crop_size) == ("ucf101", 8, 32)
    assert DataOverrides().apply(DataConfig()) == DataConfig()
    assert model_name(ModelConfig()) == "deit-tiny"
    assert model_name(ModelConfig(embed_dim=384, num_heads=6)) == "deit-small"
    assert model_name(ModelConfig(embed_dim=64, num_heads=4)) == "vit-d64"
    runs, opts = split_arguments(["a", "grating_clips=3", "data.root=/x", "b/c"])
    assert (runs, opts) == ([Path("a"), Path("b/c")], ["grating_clips=3", "data.root=/x"])
    with pytest.raises(UserError, match="at least one"):
        analyze([], Path("unused"), AnalysisOptions())
