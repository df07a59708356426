from __future__ import annotations

import pytest

from bwssl.analysis.results import ResultRow, write_results
from bwssl.report.html import comparisons, write_report


def _rows() -> list[ResultRow]:
    rows = []
    probe = {"e2e": 0.50, "simultaneous": 0.49, "sequential": 0.485}
    mAP = {"e2e": 0.30, "simultaneous": 0.25, "sequential": 0.26}
    for regime in probe:
        for seed in (0, 1):
            run = f"{regime}-k4-s{seed}"
            for block in (1, 2, 3, 4):
                common = dict(
                    run=run, regime=regime, model="demo", num_blocks=4, seed=seed, block=block
                )
                rows.append(
                    ResultRow(
                        **common,
                        metric="probe_acc",
                        target="action",
                        value=probe[regime] * block / 4 + 0.001 * seed,
                    )
                )
                rows.append(ResultRow(**common, metric="map", value=mAP[regime] * block / 4))
                rows.append(ResultRow(**common, metric="mse", value=0.6 - 0.01 * block))
                if block < 4:
                    cka = 0.9 if regime == "e2e" else 0.985
                    rows.append(ResultRow(**common, metric="cka_next", value=cka))
    return rows


def test_comparisons_follow_the_numbers():
    table = {c.claim: c for c in comparisons(_rows(), "tiny")}
    probe = table["probe accuracy gap e2e - simultaneous, K=4"]
    assert probe.agrees is True and probe.ours == "+0.010"
    mAP = table["mAP gap e2e - simultaneous, K=4"]
    assert mAP.agrees is False and mAP.ours == "+0.050" and "does not agree" in mAP.sentence
    seq = table["|sequential - simultaneous| probe accuracy, K=4"]
    assert seq.agrees is True
    assert table["CKA block 1->2, e2e vs simultaneous, K=4"].agrees is True
    assert table["CKA of late transitions, simultaneous, K=4"].agrees is True
    k6 = table["K=6 lowers mAP (simultaneous) by"]
    assert k6.agrees is None and k6.ours == "not run"


def test_report_is_self_contained(tmp_path):
    csv = tmp_path / "analysis" / "results.csv"
    write_results(csv, _rows())
    page = write_report(
        tmp_path / "report.html", csv, {"train": "demo", "seeds": [0, 1]}, ["regime: e2e\n"]
    ).read_text()
    assert page.count("<img") >= 2 and "data:image/png;base64," in page
    assert "src='http" not in page and 'src="http' not in page
    assert "Headline comparisons" in page and "does not agree" in page
    assert (tmp_path / "analysis" / "figures").is_dir()


@pytest.mark.parametrize("model", ["tiny", "small"])
def test_paper_bounds_depend_on_model(model):
    table = {c.claim: c for c in comparisons(_rows(), model)}
    assert table["mAP gap e2e - simultaneous, K=4"].paper == (
        "<= 0.015" if model == "tiny" else "<= 0.020"
    )


def test_untrained_reference_row():
    rows = _rows()
    table = {c.claim: c for c in comparisons(rows, "tiny")}
    assert table["action probe gained over the untrained encoder, K=4"].ours == "not run"
    for seed in (0, 1):
        for block in (1, 2, 3, 4):
            rows.append(
                ResultRow(
                    run=f"untrained-k4-s{seed}",
                    regime="untrained",
                    model="demo",
                    num_blocks=4,
                    seed=seed,
                    block=block,
                    metric="probe_acc",
                    target="action",
                    value=0.2,
                )
            )
    row = {c.claim: c for c in comparisons(rows, "tiny")}[
        "action probe gained over the untrained encoder, K=4"
    ]
    # last-block probe (mean over seeds): e2e 0.5005, simultaneous 0.4905, sequential 0.4855
    gains = dict(part.split() for part in row.ours.split(", "))
    assert list(gains) == ["e2e", "simultaneous", "sequential"]
    for regime, expected in (("e2e", 0.3005), ("simultaneous", 0.2905), ("sequential", 0.2855)):
        assert abs(float(gains[regime]) - expected) < 0.001
    assert row.agrees is None and "0.200" in row.sentence
