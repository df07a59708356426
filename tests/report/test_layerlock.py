"""The report's section on layer-wise regimes: per-block tables, LayerLock's claims judged
from the numbers, the figure, and nothing of it for grids without a layer-wise regime."""

from __future__ import annotations

import dataclasses

from bwssl.analysis.results import ResultRow, write_results
from bwssl.report.figures import draw_all
from bwssl.report.html import write_report
from bwssl.report.layerwise import NOISE, claims, groups, has_layerwise, section, table

# Last-block action probe and feature std per regime; blocks below scale linearly.
PROBE = {"e2e": 0.70, "freeze": 0.69, "layerlock": 0.75, "latent": 0.20, "simultaneous": 0.60}
STD = {"e2e": 0.40, "freeze": 0.38, "layerlock": 0.35, "latent": 0.05, "simultaneous": 0.45}
GROUP = ("vit-d64-l12", "masked_pixels", 4)


def _rows(
    probe: dict[str, float] = PROBE, std: dict[str, float] = STD, seeds: tuple[int, ...] = (0,)
) -> list[ResultRow]:
    rows = []
    for regime in probe:
        for seed in seeds:
            common = dict(
                run=f"{regime}-k4-s{seed}",
                regime=regime,
                model=GROUP[0],
                num_blocks=4,
                seed=seed,
            )
            for block in (1, 2, 3, 4):
                for repeat in (0, 1):  # repeats average within a run
                    value = probe[regime] * block / 4 + 0.01 * seed + 0.002 * (2 * repeat - 1)
                    rows.append(
                        ResultRow(
                            **common,
                            block=block,
                            metric="probe_acc",
                            target="action",
                            repeat=repeat,
                            value=value,
                        )
                    )
                rows.append(ResultRow(**common, block=block, metric="map", value=probe[regime] / 2))
                rows.append(
                    ResultRow(**common, block=block, metric="feature_std", value=std[regime])
                )
                rows.append(
                    ResultRow(**common, block=block, metric="feature_std", target="raw", value=9.0)
                )
    return rows


def test_tables_average_repeats_then_seeds():
    t = table(_rows(seeds=(0, 1)), GROUP, "probe_acc", "action")
    assert set(t) == set(PROBE)
    last = t["freeze"][4]
    assert last.n == 2 and abs(last.mean - 0.695) < 1e-9  # (0.69 + 0.70) / 2
    assert abs(t["e2e"][2].mean - (0.35 + 0.005)) < 1e-9
    assert last.text() == "0.695 \u00b1 0.007"
    # the normalized spread, not the raw one
    assert table(_rows(), GROUP, "feature_std", "")["latent"][4].mean == 0.05


def test_claims_follow_the_numbers():
    got = {c.claim: c for c in claims(_rows(), GROUP)}
    kept = got["progressive freezing keeps e2e's accuracy"]
    assert kept.verdict == "yes" and kept.ours == "0.690 vs 0.700 (-0.010)"
    assert f"within {NOISE:.2f}" in kept.sentence and "mAP: freeze 0.345" in kept.sentence
    assert got["layerlock >= freeze (latent targets vs pixels, same freezing)"].verdict == "yes"
    assert got["layerlock >= e2e (pixel-only MAE)"].verdict == "yes"
    collapse = got["latent targets without freezing collapse"]
    assert collapse.verdict == "yes" and collapse.ours == "std 0.12x, probe -0.500"
    assert "50.1" in collapse.paper and "both hold" in collapse.sentence
    assert got["layerlock's latent targets do not collapse"].verdict == "yes"
    assert got["freezing is what keeps latent targets useful: layerlock > latent"].verdict == "yes"
    assert got["latest target alone as good as the sum of all"].verdict == "n/a"


def test_claims_not_reproduced_or_tied_are_said_so():
    probe = {**PROBE, "freeze": 0.60, "layerlock": 0.61}  # freeze loses 0.10; a tie above it
    std = {**STD, "latent": 0.39}  # no collapse
    got = {c.claim: c for c in claims(_rows(probe, std), GROUP)}
    kept = got["progressive freezing keeps e2e's accuracy"]
    assert kept.verdict == "no" and "not reproduced here" in kept.sentence
    tie = got["layerlock >= freeze (latent targets vs pixels, same freezing)"]
    assert tie.verdict == "tie" and "neither reproduces nor contradicts" in tie.sentence
    assert got["layerlock >= e2e (pixel-only MAE)"].verdict == "no"
    collapse = got["latent targets without freezing collapse"]
    assert collapse.verdict == "no" and "Not reproduced here" in collapse.sentence
    assert "worse, not collapsed" in collapse.sentence  # the probe falls, the spread does not


def test_a_low_spread_with_a_good_probe_is_not_collapse():
    probe = {**PROBE, "latent": 0.69, "layerlock": 0.55}
    std = {**STD, "latent": 0.05, "layerlock": 0.05}
    got = {c.claim: c for c in claims(_rows(probe, std), GROUP)}
    latent = got["latent targets without freezing collapse"]
    assert latent.verdict == "no" and "the probe holds: not collapsed" in latent.sentence
    layerlock = got["layerlock's latent targets do not collapse"]
    assert layerlock.verdict == "no" and "both hold" in layerlock.sentence
    assert got["freezing is what keeps latent targets useful: layerlock > latent"].verdict == "no"


def test_missing_regimes_are_not_run():
    rows = [r for r in _rows() if r.regime in ("e2e", "layerlock")]
    got = {c.claim: c for c in claims(rows, GROUP)}
    assert got["progressive freezing keeps e2e's accuracy"].verdict == "n/a"
    assert "no freeze run" in got["progressive freezing keeps e2e's accuracy"].sentence
    assert got["latent targets without freezing collapse"].ours == "not run"
    assert got["layerlock's latent targets do not collapse"].verdict == "yes"


def test_section_only_with_a_layerwise_regime():
    rows = _rows()
    assert has_layerwise(rows) and groups(rows) == [GROUP]
    blockwise = [r for r in rows if r.regime in ("e2e", "simultaneous")]
    assert not has_layerwise(blockwise) and groups(blockwise) == []
    html = section(rows)
    assert "Layer-wise regimes" in html and "<th>block 4</th>" in html
    # regimes in the order e2e, freeze, layerlock, latent, simultaneous
    where = [html.index(f"<tr><td>{r}</td>") for r in PROBE]
    assert where == sorted(where)
    assert "<td class='yes'>yes</td>" in html and "<td class='na'>n/a</td>" in html


def test_report_has_the_section_and_figure_only_for_layerwise_grids(tmp_path):
    csv = tmp_path / "a" / "analysis" / "results.csv"
    write_results(csv, _rows())
    page = write_report(tmp_path / "a" / "report.html", csv, {"train": "demo"}, ["x: 1\n"])
    text = page.read_text()
    assert "Layer-wise regimes: freezing and LayerLock" in text
    assert "LayerLock's claims, our numbers" in text and "fig7_layerwise" in text

    other = tmp_path / "b" / "analysis" / "results.csv"
    write_results(
        other,
        [dataclasses.replace(r) for r in _rows() if r.regime in ("e2e", "simultaneous")],
    )
    text = write_report(tmp_path / "b" / "report.html", other, {"train": "demo"}, []).read_text()
    assert "Layer-wise" not in text and "fig7_layerwise" not in text
    names = {p.stem for p in draw_all(_rows(), tmp_path / "figs")}
    assert "fig7_layerwise" in names
