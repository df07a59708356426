from __future__ import annotations

import dataclasses

import pytest

from bwssl.analysis.results import ResultRow, write_results
from bwssl.cli import main
from bwssl.report import protocol
from bwssl.report.html import comparisons, report_from_results, write_report


def _rows(model: str = "demo", cka_bw: float = 0.985, k: int = 4) -> list[ResultRow]:
    """Hand-made rows: E2E first-transition CKA 0.9, blockwise ``cka_bw``, later 0.99."""
    rows = []
    probe = {"e2e": 0.50, "simultaneous": 0.49, "sequential": 0.485}
    mAP = {"e2e": 0.30, "simultaneous": 0.25, "sequential": 0.26}
    for regime in probe:
        for seed in (0, 1):
            run = f"{regime}-k{k}-s{seed}"
            for block in range(1, k + 1):
                common = dict(
                    run=run, regime=regime, model=model, num_blocks=k, seed=seed, block=block
                )
                rows.append(
                    ResultRow(
                        **common,
                        metric="probe_acc",
                        target="action",
                        value=probe[regime] * block / k + 0.001 * seed,
                    )
                )
                rows.append(ResultRow(**common, metric="map", value=mAP[regime] * block / k))
                rows.append(ResultRow(**common, metric="mse", value=0.6 - 0.01 * block))
                if block < k:
                    first = 0.9 if regime == "e2e" else cka_bw
                    cka = first if block == 1 else 0.99
                    rows.append(ResultRow(**common, metric="cka_next", value=cka))
    return rows


def test_comparisons_follow_the_numbers():
    table = {c.claim: c for c in comparisons(_rows(cka_bw=0.85), "tiny")}
    probe = table["probe accuracy gap e2e - simultaneous, K=4"]
    assert probe.agrees is True and probe.ours == "+0.010"
    mAP = table["mAP gap e2e - simultaneous, K=4"]
    assert mAP.agrees is False and mAP.ours == "+0.050" and "does not agree" in mAP.sentence
    # the gap bounds hold for the sequential regime too
    assert table["probe accuracy gap e2e - sequential, K=4"].ours == "+0.015"
    assert table["mAP gap e2e - sequential, K=4"].agrees is False
    # sequential vs simultaneous: probe accuracy and mAP
    assert table["|sequential - simultaneous| probe accuracy, K=4"].agrees is True
    assert table["|sequential - simultaneous| mAP, K=4"].ours == "+0.010"
    assert table["CKA of late transitions, simultaneous, K=4"].agrees is True
    assert table["CKA of late transitions, sequential, K=4"].agrees is True
    k6 = table["K=6 lowers mAP (simultaneous) by"]
    assert k6.agrees is None and k6.ours == "not run"


@pytest.mark.parametrize(
    "model,size,cka_bw,agrees",
    [
        ("deit-tiny", "tiny", 0.85, True),  # Tiny: BWSSL's first transition below E2E's
        ("deit-tiny", "tiny", 0.985, False),
        ("deit-small", "small", 0.985, True),  # Small: E2E ~0.90 < BWSSL ~0.98
        ("deit-small", "small", 0.85, False),
    ],
)
def test_first_cka_verdict_follows_the_model_size_of_the_rows(model, size, cka_bw, agrees):
    # the fallback says the other size: the rows' model decides
    other = "small" if size == "tiny" else "tiny"
    table = {c.claim: c for c in comparisons(_rows(model, cka_bw), other)}
    for regime in ("simultaneous", "sequential"):
        row = table[f"CKA block 1->2, e2e vs {regime}, K=4"]
        assert row.agrees is agrees, row
        assert ("Tiny" if size == "tiny" else "Small") in row.paper
    bound = "<= 0.015" if size == "tiny" else "<= 0.020"
    assert table["mAP gap e2e - sequential, K=4"].paper == bound


def test_k2_says_there_are_no_late_transitions():
    table = {c.claim: c for c in comparisons(_rows(k=2), "tiny")}
    late = table["CKA of late transitions, simultaneous, K=2"]
    assert late.agrees is None and late.ours == "no late transitions"
    assert "only transition is 1->2" in late.sentence


def test_several_models_are_judged_each_for_its_size():
    rows = _rows("deit-tiny", 0.85) + [
        dataclasses.replace(r, run="small-" + r.run) for r in _rows("deit-small", 0.985)
    ]
    table = {c.claim: c for c in comparisons(rows, None)}
    assert table["deit-tiny: CKA block 1->2, e2e vs simultaneous, K=4"].agrees is True
    assert table["deit-small: CKA block 1->2, e2e vs simultaneous, K=4"].agrees is True
    with pytest.raises(ValueError, match="neither deit-tiny nor deit-small"):
        comparisons(_rows("demo"), None)


def _setup_rows(run: str) -> list[ResultRow]:
    facts = {"grid_t": 8, "grid_h": 8, "grid_w": 8, "num_frames": 16, "crop_size": 128,
             "channels": 3, "mask_ratio": 0.9, "masked_per_frame": 57, "visible_tokens": 56,
             "lr": 1e-4, "lr_scale_batch": 256, "peak_lr": 1.25e-5, "min_lr": 1e-5,
             "warmup_epochs": 40, "batch_size": 32, "epochs": 150}  # fmt: skip
    return [
        ResultRow(run, "e2e", "deit-tiny", 4, 0, 0, "setup", name, value=float(v))
        for name, v in facts.items()
    ]


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


def test_report_states_grid_masking_and_lr_recipe():
    rows = [dataclasses.replace(r, model="deit-tiny") for r in _rows()]
    rows += _setup_rows("e2e-k4-s0")
    rows.append(dataclasses.replace(rows[0], metric="occdrop_l1", protocol="per_clip,grey"))
    text = protocol.section(rows)
    assert "Token grid 8x8x8" in text and "512 tokens" in text
    assert "int(0.9 x 64) = 57 of 64 positions per frame group, 7 visible" in text
    assert "scaled by batch/256" in text and "peak 1.25e-05" in text and "cosine to 1e-05" in text
    assert "one random kept patch per clip" in text and "mean grey" in text


def test_bwssl_report_reproduces_the_run_report(tmp_path, capsys):
    """`bwssl run` writes its report with report_from_results; `bwssl report` on the same
    results.csv gives the same page, experiment and training config included."""
    import yaml

    out = tmp_path / "exp"
    csv = out / "analysis" / "results.csv"
    write_results(csv, _rows() + _setup_rows("e2e-k4-s0"))
    (out / "experiment.yaml").write_text(yaml.safe_dump({"train": "demo", "paper_model": "tiny"}))
    (out / "runs" / "e2e-k4-s0").mkdir(parents=True)
    (out / "runs" / "e2e-k4-s0" / "config.yaml").write_text("regime: e2e\n")
    first = report_from_results(csv, out / "report.html", "tiny").read_text()
    assert main(["report", str(csv), "--out", str(tmp_path / "again.html")]) == 0
    again = (tmp_path / "again.html").read_text()
    assert again == first
    assert "regime: e2e" in again and "paper_model: tiny" in again
    # rows of a model of neither size need --paper-model when no experiment.yaml says
    lone = tmp_path / "lone" / "results.csv"
    write_results(lone, _rows())
    assert main(["report", str(lone), "--out", str(tmp_path / "x.html")]) == 2
    assert "--paper-model" in capsys.readouterr().err
    assert "demo with DeiT-Tiny (as asked)" in first  # experiment.yaml's paper model


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
