"""The paper's headline claims judged from results rows, for the model size each run has.

The claims (BWSSL paper, UCF101, 4 blocks), per model size:

- E2E minus BWSSL is at most 0.02 probe accuracy and 0.015 mAP for DeiT-Tiny,
  0.04 and 0.02 for DeiT-Small; the bounds hold for both blockwise regimes
  (simultaneous and sequential).
- Sequential and simultaneous differ by less than 0.01, in probe accuracy and
  in mAP.
- CKA of the first transition (block 1 -> 2): DeiT-Tiny, BWSSL *lower* than
  E2E; DeiT-Small, E2E ~0.90 below BWSSL ~0.98.
- BWSSL's later transitions keep CKA above 0.98 (both sizes); with K=2 there
  is no later transition and the claim is marked as such.
- K=6 lowers mAP by less than 0.01 and probe accuracy by less than 0.02.

Which size a run is comes from its ``model`` column (``deit-tiny``,
``deit-small``); any other model (the demo's small ViT) is judged against the
size the caller names. Every claim is judged on the last block, on the mean
over seeds.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from bwssl.analysis.results import ResultRow
from bwssl.report.figures import PIXEL_OBJECTIVE
from bwssl.report.panels import UNTRAINED

BLOCKWISE: tuple[str, ...] = ("simultaneous", "sequential")
"""The blockwise regimes the paper compares with E2E."""

PAPER: dict[str, dict[str, float]] = {
    "tiny": {"probe_gap": 0.02, "map_gap": 0.015},
    "small": {"probe_gap": 0.04, "map_gap": 0.02},
}
"""What the paper reports on UCF101, per model size."""
SEQ_SIM_BOUND = 0.01
LATE_CKA = 0.98
MODEL_SIZES: dict[str, str] = {"deit-tiny": "tiny", "deit-small": "small"}
"""The ``model`` column's names of the paper's two sizes."""


@dataclass(frozen=True)
class Comparison:
    claim: str
    paper: str
    ours: str
    agrees: bool | None
    """None when our experiment did not produce what the row needs."""
    sentence: str


def paper_size(model: str, fallback: str | None) -> str | None:
    """``tiny`` or ``small`` for a ``model`` column value: its own size for DeiT-Tiny and
    DeiT-Small, else ``fallback``."""
    return MODEL_SIZES.get(model, fallback)


Values = dict[tuple[str, int, int, int], float]
"""(regime, K, seed, block) -> the value averaged over repeats."""


def _per_run(rows: Iterable[ResultRow], metric: str, target: str = "") -> Values:
    acc: dict[tuple[str, int, int, int], list[float]] = defaultdict(list)
    for r in rows:
        if r.metric == metric and r.target == target:
            acc[(r.regime, r.num_blocks, r.seed, r.block)].append(r.value)
    return {k: statistics.fmean(v) for k, v in acc.items()}


def _last_block(values: Values, regime: str, k: int) -> list[float]:
    return [v for (reg, kk, _s, b), v in values.items() if reg == regime and kk == k and b == k]


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _gap_row(
    values: Values, k: int, a: str, b: str, what: str, bound: float, absolute: bool = False
) -> Comparison:
    xa, xb = _last_block(values, a, k), _last_block(values, b, k)
    claim = f"|{a} - {b}| {what}, K={k}" if absolute else f"{what} gap {a} - {b}, K={k}"
    paper = f"{'<' if absolute else '<='} {bound:.3f}"
    if not xa or not xb:
        return Comparison(
            claim, paper, "not run", None, f"This experiment has no {a} or {b} run at K={k}."
        )
    (ma, sa), (mb, sb) = _mean_sd(xa), _mean_sd(xb)
    gap = ma - mb
    value = abs(gap) if absolute else gap
    ok = value < bound if absolute else value <= bound
    noise = max(sa, sb)
    sentence = (
        f"{a} {ma:.3f} (sd {sa:.3f}) vs {b} {mb:.3f} (sd {sb:.3f}) over "
        f"{min(len(xa), len(xb))} seeds: the {'difference' if absolute else 'gap'} "
        f"{value:+.3f} {'agrees with' if ok else 'does not agree with'} the paper's "
        f"{paper}."
    )
    if noise and abs(value) < noise:
        sentence += " It is within one seed standard deviation."
    return Comparison(claim, paper, f"{value:+.3f}", ok, sentence)


def _first_cka_rows(cka: Values, k: int, size: str) -> list[Comparison]:
    """Block 1 -> 2 of each blockwise regime against E2E, in the direction of ``size``."""
    first = {
        reg: [v for (r, kk, _s, b), v in cka.items() if r == reg and kk == k and b == 1]
        for reg in ("e2e", *BLOCKWISE)
    }
    tiny = size == "tiny"
    paper = "BWSSL < E2E (Tiny)" if tiny else "E2E ~0.90 < BWSSL ~0.98 (Small)"
    out = []
    for reg in BLOCKWISE:
        claim = f"CKA block 1->2, e2e vs {reg}, K={k}"
        if not first["e2e"] or not first[reg]:
            out.append(Comparison(claim, paper, "not run", None, f"Needs e2e and {reg} runs."))
            continue
        me, mb = statistics.fmean(first["e2e"]), statistics.fmean(first[reg])
        ok = mb < me if tiny else mb > me
        relation = "below" if mb < me else "above" if mb > me else "equal to"
        out.append(
            Comparison(
                claim,
                paper,
                f"{me:.3f} vs {mb:.3f}",
                ok,
                f"{reg}'s first transition ({mb:.3f}) lies {relation} E2E's ({me:.3f}); the "
                f"paper finds it {'below' if tiny else 'above'} for DeiT-{size.title()}, so "
                f"this {'agrees' if ok else 'does not agree'}.",
            )
        )
    return out


def _late_cka_rows(cka: Values, k: int) -> list[Comparison]:
    """Transitions 2 -> 3 onwards of each blockwise regime above :data:`LATE_CKA`."""
    out = []
    for reg in BLOCKWISE:
        claim = f"CKA of late transitions, {reg}, K={k}"
        paper = f"> {LATE_CKA}"
        if k < 3:
            out.append(
                Comparison(
                    claim,
                    paper,
                    "no late transitions",
                    None,
                    f"With K={k} the only transition is 1->2: there is no later one to judge.",
                )
            )
            continue
        late = [v for (r, kk, _s, b), v in cka.items() if r == reg and kk == k and b >= 2]
        if not late:
            out.append(Comparison(claim, paper, "not run", None, f"Needs {reg} runs at K={k}."))
            continue
        low = min(late)
        ok = low > LATE_CKA
        out.append(
            Comparison(
                claim,
                paper,
                f"min {low:.3f}",
                ok,
                f"The lowest CKA of transitions 2->3 onwards is {low:.3f}; late blocks "
                f"{'barely change' if ok else 'still change'} the representation.",
            )
        )
    return out


def _granularity_rows(probe: Values, mAP: Values) -> list[Comparison]:
    out = []
    for name, values, bound in (("mAP", mAP, 0.01), ("probe accuracy", probe, 0.02)):
        x4, x6 = _last_block(values, "simultaneous", 4), _last_block(values, "simultaneous", 6)
        claim = f"K=6 lowers {name} (simultaneous) by"
        if not x4 or not x6:
            out.append(
                Comparison(
                    claim,
                    f"< {bound}",
                    "not run",
                    None,
                    "This experiment did not train both K=4 and K=6.",
                )
            )
            continue
        drop = statistics.fmean(x4) - statistics.fmean(x6)
        ok = drop < bound
        out.append(
            Comparison(
                claim,
                f"< {bound}",
                f"{drop:+.3f}",
                ok,
                f"K=4 {statistics.fmean(x4):.3f} vs K=6 {statistics.fmean(x6):.3f}: "
                f"{'agrees' if ok else 'does not agree'} with the paper.",
            )
        )
    return out


def _untrained_row(probe: Values, k: int) -> Comparison:
    """How far training lifts the action probe above the same encoder at initialization."""
    claim = f"action probe gained over the untrained encoder, K={k}"
    base = _last_block(probe, UNTRAINED, k)
    trained = {reg: _last_block(probe, reg, k) for reg in ("e2e", *BLOCKWISE)}
    trained = {reg: xs for reg, xs in trained.items() if xs}
    if not base or not trained:
        return Comparison(
            claim,
            "not reported",
            "not run",
            None,
            "Needs an untrained run (regime untrained) and trained runs.",
        )
    b = statistics.fmean(base)
    gains = {reg: statistics.fmean(xs) - b for reg, xs in trained.items()}
    ours = ", ".join(f"{reg} {g:+.3f}" for reg, g in gains.items())
    sentence = (
        f"The untrained encoder's last block scores {b:.3f}; training adds "
        + ", ".join(f"{g:+.3f} ({reg})" for reg, g in gains.items())
        + ". The paper does not report this reference; without it, a probe accuracy "
        "cannot be read as what self-supervision learned."
    )
    return Comparison(claim, "not reported", ours, None, sentence)


def pixel_rows(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """The rows the paper's comparisons are about: masked-pixel runs and the untrained encoder
    (the same for every objective)."""
    return [r for r in rows if r.objective == PIXEL_OBJECTIVE or r.regime == UNTRAINED]


def models_judged(rows: Iterable[ResultRow], fallback: str | None) -> dict[str, str | None]:
    """Each model of the (masked-pixel) rows and the paper size it is judged against."""
    models = sorted({r.model for r in pixel_rows(rows) if r.metric != "setup"})
    return {m: paper_size(m, fallback) for m in models}


def comparisons(rows: list[ResultRow], paper_model: str | None) -> list[Comparison]:
    """The headline comparisons, per model of the masked-pixel rows (and the untrained
    reference), each judged for its own size (``paper_model`` for a model that is neither
    DeiT-Tiny nor DeiT-Small); claims are prefixed with the model when there are several."""
    rows = pixel_rows(rows)
    judged = models_judged(rows, paper_model)
    out: list[Comparison] = []
    for model, size in judged.items():
        if size is None:
            raise ValueError(
                f"model {model!r} is neither deit-tiny nor deit-small: name the paper model "
                "(tiny or small) to compare it with"
            )
        mine = [r for r in rows if r.model == model]
        claims = _model_comparisons(mine, size)
        if len(judged) > 1:
            claims = [
                Comparison(f"{model}: {c.claim}", c.paper, c.ours, c.agrees, c.sentence)
                for c in claims
            ]
        out += claims
    return out


def _model_comparisons(rows: list[ResultRow], size: str) -> list[Comparison]:
    probe = _per_run(rows, "probe_acc", "action") or _per_run(rows, "probe_acc")
    mAP = _per_run(rows, "map")
    ks = sorted({r.num_blocks for r in rows})
    k = 4 if 4 in ks else (ks[0] if ks else 4)
    bounds = PAPER[size]
    out = []
    for reg in BLOCKWISE:
        out.append(_gap_row(probe, k, "e2e", reg, "probe accuracy", bounds["probe_gap"]))
        out.append(_gap_row(mAP, k, "e2e", reg, "mAP", bounds["map_gap"]))
    for values, what in ((probe, "probe accuracy"), (mAP, "mAP")):
        out.append(
            _gap_row(values, k, "sequential", "simultaneous", what, SEQ_SIM_BOUND, absolute=True)
        )
    cka = _per_run(rows, "cka_next")
    out += _first_cka_rows(cka, k, size)
    out += _late_cka_rows(cka, k)
    out += _granularity_rows(probe, mAP)
    out.append(_untrained_row(probe, k))
    return out
