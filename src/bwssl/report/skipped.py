"""The report's list of skipped metrics: what a small evaluation set could not support."""

from __future__ import annotations

import html
from collections.abc import Sequence

from bwssl.analysis.requirements import SkippedMetric


def section(skipped: Sequence[SkippedMetric]) -> str:
    """An HTML section naming each skipped (run, metric) and why; "" when none was skipped."""
    if not skipped:
        return ""
    esc = html.escape
    parts = [
        "<h2>Skipped metrics</h2><p>Too few clips for these metrics; they have no rows "
        "(and no figure panels).</p><table><tr><th>run</th><th>metric</th><th>why</th></tr>"
    ]
    for s in skipped:
        parts.append(
            f"<tr><td>{esc(s.run)}</td><td class='na'>{esc(s.metric)}</td>"
            f"<td>{esc(s.reason)}</td></tr>"
        )
    parts.append("</table>")
    return "".join(parts)
