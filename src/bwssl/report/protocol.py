"""The report's statement of what its numbers stand on, from the results rows alone: the
token grid (a ResNet's OccDrop window instead), the masking count and the learning-rate
recipe of the runs (their ``setup`` rows, :mod:`bwssl.analysis.run_setup`), and how the
analyses were measured (the ``protocol`` column)."""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Iterable

from bwssl.analysis.results import ResultRow

SETUP = "setup"

PROTOCOL_METRICS: tuple[tuple[str, str], ...] = (
    ("probe_acc", "action probe"),
    ("probe_l1", "Level-1 grating probe"),
    ("probe_l2", "Level-2 grating probe"),
    ("occdrop_l1", "OccDrop, Level 1"),
    ("occdrop_l2", "OccDrop, Level 2"),
    ("mse", "reconstruction MSE"),
)
"""(metric, name) of the metrics whose ``protocol`` the report states."""

OCCLUSION_WORDS: dict[str, str] = {
    "per_clip": "one random kept patch per clip, one probe over the mixed locations (the "
    "paper's protocol)",
    "fixed": "fixed kept-patch locations shared by all clips, one probe per location",
    "grey": "occluded pixels mean grey (0 in the model's input)",
    "black": "occluded pixels black (pixel value 0)",
}


def _num(x: float) -> str:
    return f"{x:g}"


def setup_sentence(facts: dict[str, float]) -> str:
    """One run's setup (its ``setup`` facts by target) in words."""
    f = facts
    parts = []
    if {"grid_t", "grid_h", "grid_w"} <= f.keys():
        t, h, w = (int(f[k]) for k in ("grid_t", "grid_h", "grid_w"))
        clip = ""
        if {"num_frames", "crop_size"} <= f.keys():
            clip = f" on {int(f['num_frames'])}x{int(f['crop_size'])}x{int(f['crop_size'])} clips"
        parts.append(f"token grid {t}x{h}x{w} (T'xH'xW', {t * h * w} tokens){clip}")
    if "occlusion_window" in f:
        side = int(f["occlusion_window"])
        n = int(f.get("crop_size", 0)) // side  # windows per side of the crop
        grid = f" of a {n}x{n} grid" if n else ""
        parts.append(f"OccDrop keeps one {side}x{side}-pixel window{grid}")
    if {"mask_ratio", "masked_per_frame", "visible_tokens"} <= f.keys():
        ratio, hidden = f["mask_ratio"], int(f["masked_per_frame"])
        positions = int(f["grid_h"] * f["grid_w"]) if "grid_h" in f else None
        if positions is not None and int(f["visible_tokens"]) == (
            (positions - hidden) * int(f["grid_t"])
        ):
            parts.append(
                f"tube masking at {_num(ratio)} hides int({_num(ratio)} x {positions}) = "
                f"{hidden} of {positions} positions per frame group, {positions - hidden} "
                f"visible ({int(f['visible_tokens'])} tokens per clip)"
            )
        else:
            parts.append(
                f"masking at {_num(ratio)} hides {hidden} tokens, "
                f"{int(f['visible_tokens'])} visible per clip"
            )
    if {"lr", "peak_lr", "min_lr"} <= f.keys():
        scale = int(f.get("lr_scale_batch", 0))
        batch = int(f.get("batch_size", 0))
        if scale:
            lr = (
                f"lr {_num(f['lr'])} as a base rate scaled by batch/{scale} (VideoMAE's "
                f"reading): peak {_num(f['peak_lr'])} at batch {batch}"
            )
        else:
            lr = f"lr {_num(f['lr'])} as the peak (no batch scaling), batch {batch}"
        warmup, epochs = f.get("warmup_epochs", 0), int(f.get("epochs", 0))
        lr += (
            f", {_num(warmup)} warmup epoch{'' if warmup == 1 else 's'}, cosine to "
            f"{_num(f['min_lr'])}, {epochs} epoch{'' if epochs == 1 else 's'} per stage"
        )
        parts.append(lr)
    return "; ".join(parts) + "."


def setups(rows: Iterable[ResultRow]) -> dict[str, list[str]]:
    """Each distinct setup sentence and the runs it holds for."""
    facts: dict[str, dict[str, float]] = defaultdict(dict)
    for r in rows:
        if r.metric == SETUP:
            facts[r.run][r.target] = r.value
    out: dict[str, list[str]] = defaultdict(list)
    for run in sorted(facts):
        out[setup_sentence(facts[run])].append(run)
    return dict(out)


def protocols(rows: Iterable[ResultRow]) -> list[tuple[str, list[str]]]:
    """(metric name, its distinct protocols) for the metrics of :data:`PROTOCOL_METRICS`."""
    seen: dict[str, dict[str, None]] = defaultdict(dict)
    for r in rows:
        if r.protocol:
            seen[r.metric][r.protocol] = None
    return [(name, list(seen[m])) for m, name in PROTOCOL_METRICS if seen.get(m)]


def _protocol_words(text: str) -> str:
    return ", ".join(OCCLUSION_WORDS.get(part, part) for part in text.split(","))


def section(rows: list[ResultRow]) -> str:
    """The "Setup and protocol" section as HTML ("" when the rows record neither)."""
    esc = html.escape
    found, how = setups(rows), protocols(rows)
    if not found and not how:
        return ""
    out = ["<h2>Setup and protocol</h2>"]
    if found:
        out.append("<p>The numbers below come from runs with:</p><ul>")
        several = len(found) > 1
        for sentence, runs in found.items():
            who = f" ({', '.join(runs)})" if several else ""
            out.append(f"<li>{esc(sentence[0].upper() + sentence[1:])}{esc(who)}</li>")
        out.append("</ul>")
    if how:
        out.append("<p>Measured as:</p><ul>")
        for name, texts in how:
            words = "; ".join(_protocol_words(t) for t in texts)
            out.append(f"<li>{esc(name)}: {esc(words)}</li>")
        out.append("</ul>")
    return "\n".join(out)
