"""The report with several local objectives: the objectives x regimes table, the headline
comparisons restricted to masked pixels, and the figures' facets."""

from __future__ import annotations

import struct

from bwssl.analysis.results import ResultRow, write_results
from bwssl.report.figures import draw_all
from bwssl.report.html import comparisons, write_report
from bwssl.report.panels import share_reference
from bwssl.report.summary import objective_lines

PROBE = {
    ("masked_pixels", "e2e"): 0.50,
    ("masked_pixels", "simultaneous"): 0.49,
    ("masked_pixels", "sequential"): 0.485,
    ("barlow_twins", "e2e"): 0.70,
    ("barlow_twins", "simultaneous"): 0.30,
    ("barlow_twins", "sequential"): 0.35,
}
LOSS = {"masked_pixels": 0.5, "barlow_twins": 40.0}


def _run_rows(objective: str, regime: str, seed: int, probe: float) -> list[ResultRow]:
    prefix = "" if objective == "masked_pixels" else f"{objective}-"
    common = dict(
        run=f"{prefix}{regime}-k4-s{seed}",
        regime=regime,
        objective=objective,
        model="demo",
        num_blocks=4,
        seed=seed,
    )
    rows = []
    for block in (1, 2, 3, 4):
        for repeat in (0, 1):
            rows.append(
                ResultRow(
                    **common,
                    block=block,
                    metric="probe_acc",
                    target="action",
                    repeat=repeat,
                    value=probe * block / 4 + 0.01 * seed,
                )
            )
        rows.append(ResultRow(**common, block=block, metric="map", value=probe / 2 * block / 4))
        rows.append(ResultRow(**common, block=block, metric="cps", value=0.3 + 0.01 * block))
        if block < 4:
            rows.append(ResultRow(**common, block=block, metric="cka_next", value=0.95))
        if regime != "e2e" or block == 4:
            loss = LOSS[objective] * (1 + 0.1 * seed) / block
            rows.append(ResultRow(**common, block=block, metric="local_loss", value=loss))
            if objective == "masked_pixels":
                rows.append(ResultRow(**common, block=block, metric="mse", value=loss))
    return rows


def _rows(objectives: tuple[str, ...] = ("masked_pixels", "barlow_twins")) -> list[ResultRow]:
    rows = []
    for seed in (0, 1):
        rows += _run_rows(objectives[0], "untrained", seed, 0.2)
    for (objective, regime), probe in PROBE.items():
        if objective in objectives:
            for seed in (0, 1):
                rows += _run_rows(objective, regime, seed, probe)
    return rows


def test_table_lines_per_objective_and_regime_with_the_reference_first():
    lines = objective_lines(_rows())
    assert [(ln.objective, ln.regime) for ln in lines] == [
        ("masked_pixels", "untrained"),
        ("masked_pixels", "e2e"),
        ("masked_pixels", "simultaneous"),
        ("masked_pixels", "sequential"),
        ("barlow_twins", "e2e"),
        ("barlow_twins", "simultaneous"),
        ("barlow_twins", "sequential"),
    ]
    bt = lines[4]
    assert bt.seeds == 2 and bt.num_blocks == 4
    # last block, mean over seeds of (probe + 0.01 * seed); std of {0.70, 0.71}
    assert abs(bt.cells["probe_acc"].mean - 0.705) < 1e-9
    assert abs(bt.cells["probe_acc"].std - 0.00707) < 1e-4
    assert abs(bt.cells["map"].mean - 0.35) < 1e-9
    assert abs(bt.cells["local_loss"].mean - 10.5) < 1e-9  # 40 * (1, 1.1) / block 4
    assert bt.cells["probe_acc"].text() == "0.705 \u00b1 0.007"


def test_headline_comparisons_use_masked_pixels_only():
    only_pixels = {c.claim: c.ours for c in comparisons(_rows(("masked_pixels",)), "tiny")}
    both = {c.claim: c.ours for c in comparisons(_rows(), "tiny")}
    assert both == only_pixels
    assert both["probe accuracy gap e2e - simultaneous, K=4"] == "+0.010"
    # The untrained reference counts whichever objective it was analysed under.
    first_bt = {
        c.claim: c.ours for c in comparisons(_rows(("barlow_twins", "masked_pixels")), "tiny")
    }
    assert (
        first_bt["action probe gained over the untrained encoder, K=4"]
        == (both["action probe gained over the untrained encoder, K=4"])
    )


def test_report_has_the_objectives_table_and_says_what_the_headline_uses(tmp_path):
    csv = tmp_path / "analysis" / "results.csv"
    write_results(csv, _rows())
    page = write_report(
        tmp_path / "report.html",
        csv,
        {"train": "demo"},
        ["objective: {name: masked_pixels}\n", "objective: {name: barlow_twins}\n"],
    ).read_text()
    assert "Objectives x regimes" in page
    assert "masked_pixels runs only (6 of 12 trained runs)" in page
    assert (
        "<td>barlow_twins</td><td>e2e</td><td>4</td><td>2</td><td>0.705 \u00b1 0.007</td>" in page
    )
    assert "any (reference)" in page and "(masked_pixels)</td>" in page
    assert "first run of barlow_twins" in page
    assert "fig6_local_loss" in page


def test_single_objective_report_has_no_objectives_table(tmp_path):
    csv = tmp_path / "analysis" / "results.csv"
    write_results(csv, _rows(("masked_pixels",)))
    page = write_report(tmp_path / "report.html", csv, {"train": "demo"}, ["x: 1\n"]).read_text()
    assert "Objectives x regimes" not in page and "masked pixel reconstruction" not in page
    assert "Training config (first run)" in page and "fig6_local_loss" not in page


def test_the_untrained_reference_is_shared_for_encoder_metrics_only():
    rows = _rows()
    shared = share_reference(rows)
    copies = shared[len(rows) :]
    assert copies and all(r.regime == "untrained" and r.objective == "barlow_twins" for r in copies)
    assert {r.metric for r in copies} == {"probe_acc", "map", "cps", "cka_next"}
    assert share_reference(_rows(("masked_pixels",))) == _rows(("masked_pixels",))


def _png_size(path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])
    return width, height


def test_figures_give_every_objective_its_own_row_of_panels(tmp_path):
    one = {p.name: p for p in draw_all(_rows(("masked_pixels",)), tmp_path / "one")}
    two = {p.name: p for p in draw_all(_rows(), tmp_path / "two")}
    assert "fig6_local_loss.png" not in one
    assert {
        "fig2_downstream.png",
        "fig4_similarity.png",
        "fig5_patch.png",
        "fig6_local_loss.png",
    } <= set(two)
    # fig5 (CPS) and fig4 (MSE, CKA, scatter): one row of panels per objective
    for name in ("fig5_patch.png", "fig4_similarity.png"):
        (w1, h1), (w2, h2) = _png_size(one[name]), _png_size(two[name])
        assert abs(w2 - w1) < 0.1 * w1 and h2 > 1.7 * h1
    # fig6: one panel per objective, side by side
    w6, h6 = _png_size(two["fig6_local_loss.png"])
    assert w6 > 1.7 * h6
