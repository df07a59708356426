"""Figures drawn from a small synthetic results table."""

from __future__ import annotations

import numpy as np

from bwssl.analysis.results import ResultRow, write_results
from bwssl.report.figures import draw_all


def _table() -> list[ResultRow]:
    rng = np.random.default_rng(0)
    rows = []
    for model in ("tiny", "small"):
        for regime, k in (("e2e", 4), ("simultaneous", 4), ("sequential", 4), ("sequential", 6)):
            for seed in range(2):
                run = dict(
                    run=f"{model}-{regime}-k{k}-s{seed}",
                    regime=regime,
                    model=model,
                    num_blocks=k,
                    seed=seed,
                )
                values: list[tuple[str, int, float, str, int]] = []  # metric, block, value, ...
                for b in range(1, k + 1):
                    values += [
                        ("probe_acc", b, 0.2 + 0.03 * b + 0.01 * rng.random(), "action", r)
                        for r in range(3)
                    ]
                    values.append(("map", b, 0.1 + 0.02 * b + 0.01 * rng.random(), "", 0))
                    if regime != "e2e" or b == k:
                        values.append(("mse", b, 0.7 - 0.03 * b, "", 0))
                    for target in ("sf", "tf"):
                        values.append(("probe_l1", b, 0.5 + 0.1 * rng.random(), target, 0))
                        values.append(("occdrop_l1", b, 0.3 * rng.random(), target, 0))
                    values.append(("probe_l2", b, 0.4 + 0.1 * rng.random(), "sf_match", 0))
                    values.append(("cps", b, 0.4 + 0.05 * b, "", 0))
                    if b < k:
                        values.append(("cka_next", b, 0.9 + 0.02 * b, "linear", 0))
                        values.append(("cka_next", b, 0.8, "rbf", 0))
                rows += [
                    ResultRow(**run, block=b, metric=m, target=t, repeat=r, value=v)
                    for m, b, v, t, r in values
                ]
    return rows


def test_draw_all_writes_png_and_svg(tmp_path) -> None:
    path = tmp_path / "results.csv"
    write_results(path, _table())
    files = draw_all(path, tmp_path / "figures")
    names = {f.name for f in files}
    for fig in ("fig2_downstream", "fig3_complexity", "fig4_similarity", "fig5_patch"):
        assert {f"{fig}.png", f"{fig}.svg"} <= names
    for f in files:
        head = f.read_bytes()[:8]
        assert f.stat().st_size > 1000
        assert head.startswith(b"\x89PNG") if f.suffix == ".png" else b"<svg" in f.read_bytes()


def test_figures_without_their_metrics_are_skipped(tmp_path) -> None:
    rows = [r for r in _table() if r.metric in ("cps", "map") and r.model == "tiny"]
    files = draw_all(rows, tmp_path)
    assert {f.stem for f in files} == {"fig2_downstream", "fig5_patch"}
    assert draw_all([], tmp_path / "empty") == []
