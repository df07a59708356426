"""The report's ResNet section: the paper's ImageNet table beside our last-block probe, and
the orderings judged from the rows, on hand-made rows and on a real resnet-debug run."""

from __future__ import annotations

import csv
import math

from bwssl.analysis.results import ResultRow
from bwssl.cli import main
from bwssl.report.html import render
from bwssl.report.resnet_paper import has_resnet_rows, last_block_probe, orderings

MODEL = "resnet18-w8-b1111-cifar"


def _rows(probe: dict[tuple[str, bool], float], k: int = 4) -> list[ResultRow]:
    out = []
    for (regime, noise), value in probe.items():
        model = f"{MODEL}+noise0.25" if noise else MODEL
        run = f"barlow_twins-{regime}-{'noise-' if noise else ''}k{k}-s0"
        for block in range(1, k + 1):
            # earlier blocks carry a different number: only the last block must count
            v = value if block == k else 0.99
            for repeat in (0, 1):
                out.append(
                    ResultRow(
                        run, regime, model, k, 0, block, "probe_acc", "action", repeat,
                        v + (0.01 if repeat else -0.01), "barlow_twins",
                    )
                )  # fmt: skip
    return out


def test_orderings_that_hold_and_one_that_does_not():
    rows = _rows(
        {
            ("e2e", False): 0.60,
            ("simultaneous", True): 0.55,
            ("simultaneous", False): 0.57,  # noise hurts here: the paper's ordering fails
            ("sequential", False): 0.50,
        }
    )
    assert has_resnet_rows(rows)
    assert last_block_probe(rows)[("simultaneous", True)] == 0.55
    judged = {o.claim: o for o in orderings(rows)}
    assert judged["E2E > simultaneous"].holds is True
    assert "simultaneous with noise 0.550" in judged["E2E > simultaneous"].sentence
    assert judged["simultaneous > sequential"].holds is True
    assert judged["noise > no noise"].holds is False
    assert "does not reproduce noise > no noise" in judged["noise > no noise"].sentence


def test_an_ordering_with_a_side_not_run_is_not_judged():
    rows = _rows({("e2e", False): 0.4, ("simultaneous", False): 0.5})
    judged = {o.claim: o for o in orderings(rows)}
    assert judged["E2E > simultaneous"].holds is False
    assert judged["noise > no noise"].holds is None
    assert "no run of simultaneous with noise" in judged["noise > no noise"].sentence
    page = render(rows, [], None, [], "tiny")
    assert "ImageNet table beside ours" in page
    assert "71.57" in page and "not run" in page


def test_a_vit_report_has_no_resnet_section():
    rows = [ResultRow("e2e-k4-s0", "e2e", "deit-tiny", 4, 0, 4, "probe_acc", "action", 0, 0.5)]
    assert not has_resnet_rows(rows)
    assert "ImageNet table" not in render(rows, [], None, [], "tiny")


def test_resnet_debug_run_analysis_skips_what_a_resnet_cannot_serve_and_reports(tmp_path):
    """The quick path: train resnet-debug (2 steps), analyze it, report from results.csv.
    OccDrop runs over pixel windows; only the still gratings' tf target is skipped."""
    run = tmp_path / "simultaneous-k4-s0"
    assert main(["train", "resnet-debug", "--out", str(run), "train.max_steps=2"]) == 0
    out = tmp_path / "analysis"
    args = ["analyze", str(run), "--out", str(out), "grating_clips=48", "probe_repeats=1"]
    metrics = "metrics=[probe_acc,probe_l1,occdrop_l1,setup]"
    assert main([*args, metrics, "progress=false", "figures=false", "features=[backbone]"]) == 0
    with (out / "skipped.csv").open() as f:
        skipped = {(r["metric"], r["reason"]) for r in csv.DictReader(f)}
    assert not any(m.startswith("occdrop") for m, _ in skipped)
    assert any(m == "probe_l1" and "tf needs 2+ frames" in why for m, why in skipped)
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    drops = [r for r in rows if r["metric"] == "occdrop_l1"]
    assert {int(r["block"]) for r in drops} == {1, 2, 3, 4}
    assert all(math.isfinite(float(r["value"])) for r in drops)
    assert {r["protocol"] for r in drops} == {"per_clip,grey"}
    assert {r["target"] for r in rows if r["metric"] == "probe_l1"} >= {"sf", "orientation"}
    assert not any(r["target"] == "tf" for r in rows if r["metric"] in ("probe_l1", "occdrop_l1"))
    setup = {r["target"]: float(r["value"]) for r in rows if r["metric"] == "setup"}
    assert not any(t.startswith("grid_") for t in setup)
    assert setup["occlusion_window"] == 8  # a quarter of the 32-pixel crop
    assert setup["test_clips"] == 8  # resnet-debug's synthetic_test
    assert setup["train_steps"] == 2  # 16 images / batch 8, one epoch, one stage
    page = tmp_path / "report.html"
    assert main(["report", str(out / "results.csv"), "--out", str(page)]) == 0
    text = page.read_text()
    assert "ImageNet table beside ours" in text
    assert "simultaneous without noise" in text
    assert "OccDrop keeps one 8x8-pixel window of a 4x4 grid" in text


def _setup(run_rows: list[ResultRow], fact: str, value: float) -> list[ResultRow]:
    runs = {(r.run, r.regime, r.model, r.num_blocks) for r in run_rows}
    return [
        ResultRow(run, regime, model, k, 0, 0, "setup", fact, 0, value, "barlow_twins")
        for run, regime, model, k in sorted(runs)
    ]


def test_orderings_within_the_probes_sampling_error_are_not_called_clear():
    rows = _rows(
        {
            ("untrained", False): 0.13,
            ("e2e", False): 0.311,
            ("simultaneous", True): 0.309,  # 0.002 below e2e: within the error at n=512
            ("simultaneous", False): 0.20,
            ("sequential", False): 0.555,  # far above: clear
        }
    )
    rows += _setup(rows, "test_clips", 512) + _setup(rows, "train_steps", 640)
    judged = {o.claim: o for o in orderings(rows)}
    e2e = judged["E2E > simultaneous"]
    assert e2e.holds is True and e2e.clear is False
    band = 2 * math.hypot(math.sqrt(0.311 * 0.689 / 512), math.sqrt(0.309 * 0.691 / 512))
    assert f"+-{band:.3f}" in e2e.sentence and "cannot tell the two apart" in e2e.sentence
    assert e2e.sentence.startswith("Our run leans towards but does not settle E2E > simultaneous")
    assert judged["simultaneous > sequential"].sentence.startswith(
        "Our run does not reproduce simultaneous > sequential"
    )
    assert judged["simultaneous > sequential"].clear is True
    assert judged["simultaneous > sequential"].holds is False
    page = render(rows, [], None, [], "tiny")
    assert "untrained encoder (our floor)" in page
    assert f"0.130 +- {math.sqrt(0.13 * 0.87 / 512):.3f}" in page
    assert "<td>640</td>" in page


def test_without_test_counts_orderings_are_judged_but_not_called_clear():
    rows = _rows({("e2e", False): 0.6, ("simultaneous", False): 0.5})
    judged = {o.claim: o for o in orderings(rows)}
    assert judged["E2E > simultaneous"].holds is True
    assert judged["E2E > simultaneous"].clear is None
    assert "standard errors" not in judged["E2E > simultaneous"].sentence
