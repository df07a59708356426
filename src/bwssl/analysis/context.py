"""The per-run context the metric families work on: one loaded encoder, its clips, its rows.

A metric family (:mod:`~bwssl.analysis.clip_metrics`,
:mod:`~bwssl.analysis.local_losses`, :mod:`~bwssl.analysis.gratings`) is a
module with ``METRICS_HANDLED`` (the metric names it computes) and
``run(ctx: RunContext) -> None``, which computes the metrics of ``ctx.want``
that it handles and appends them with :meth:`RunContext.add`. The suite
(:mod:`~bwssl.analysis.suite`) builds one context per run and calls the
families whose metrics are wanted.
"""

from __future__ import annotations

import logging
from functools import cached_property
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bwssl.analysis import features as feat
from bwssl.analysis.requirements import SkippedMetric
from bwssl.analysis.results import ResultRow
from bwssl.analysis.sources import Source, trained_model_name
from bwssl.data import build_dataset

if TYPE_CHECKING:
    import torch

    from bwssl.analysis.options import AnalysisOptions
    from bwssl.models import BlockwiseModel

logger = logging.getLogger(__name__)


def seeded_subset(n: int, size: int, *seed: int) -> np.ndarray:
    """``min(size, n)`` sorted indices of range(n), drawn without replacement."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(list(seed))
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


class MetricFamily(Protocol):
    """A metric family: a module with these two names."""

    METRICS_HANDLED: tuple[str, ...]
    """The metrics (of :data:`~bwssl.analysis.options.METRICS`) it computes."""

    def run(self, ctx: RunContext) -> None:
        """Compute the metrics of ``ctx.want`` it handles; ``ctx.add`` each row."""
        ...


class RunContext:
    """The metrics of one source: its model (loaded on ``device``), the options, the data
    config analysed, and the rows, which accumulate in ``rows``."""

    def __init__(
        self, src: Source, options: AnalysisOptions, device: torch.device, cache: feat.FeatureCache
    ) -> None:
        self.src, self.opt, self.device, self.cache = src, options, device, cache
        self.data = options.data.apply(src.config.data)
        self.model: BlockwiseModel = src.load(device)
        self.k: int = self.model.num_blocks
        self.rows: list[ResultRow] = []
        self.skipped: list[SkippedMetric] = []
        """Wanted metrics that could not be computed (:meth:`skip`)."""
        self.want = set(options.metrics)

    @cached_property
    def test_clips(self) -> Any:
        """The test split of the analysed data (built once, shared by the families)."""
        return build_dataset(self.data, "test", seed=self.opt.seed)

    def add(
        self,
        metric: str,
        block: int,
        value: float,
        target: str = "",
        repeat: int = 0,
        *,
        stderr: float | None = None,
        protocol: str = "",
    ) -> None:
        """Append one result row of this run (``block`` 1-based; 0 for ``setup`` facts)."""
        s = self.src
        self.rows.append(
            ResultRow(
                s.name,
                s.regime,
                trained_model_name(s.config),
                self.k,
                s.seed,
                block,
                metric,
                target,
                repeat,
                float(value),
                s.config.objective.name,
                None if stderr is None else float(stderr),
                protocol,
            )
        )

    def requires(self, metric: str, missing: str) -> bool:
        """Whether ``metric`` can be computed: True when ``missing`` (a reason from
        :mod:`~bwssl.analysis.requirements`) is empty, else the metric is skipped."""
        if missing:
            self.skip(metric, missing)
        return not missing

    def skip(self, metric: str, reason: str) -> None:
        """Record that ``metric`` is not computed for this run, logging one line (once)."""
        entry = SkippedMetric(self.src.name, metric, reason)
        if entry not in self.skipped:
            logger.warning("%s: %s skipped: %s", self.src.name, metric, reason)
            self.skipped.append(entry)

    def features(
        self, dataset: Any, dataset_id: dict[str, Any], desc: str, **kwargs: Any
    ) -> feat.Features:
        """Block features of ``dataset`` through the feature cache (see
        :func:`~bwssl.analysis.features.block_features` for ``kwargs``)."""
        o = self.opt
        return feat.block_features(
            self.model,
            dataset,
            encoder_digest=self.src.digest,
            dataset_id=dataset_id,
            cache=self.cache,
            batch_size=o.batch_size,
            device=self.device,
            num_workers=o.num_workers,
            progress=o.progress,
            desc=f"{self.src.name}: {desc}",
            **kwargs,
        )
