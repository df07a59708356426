"""The ``setup`` rows: what a run's numbers stand on, recorded beside them in results.csv.

One row per fact (metric ``setup``, block 0, the fact as target), so that the
report can state the token grid, the masking count and the learning-rate
recipe from the results rows alone:

- ``grid_t``, ``grid_h``, ``grid_w``, ``tokens``: the token grid (T', H', W'), for a
  patch-token backbone only (a ResNet has none).
- ``occlusion_window``: the side in pixels of the window OccDrop keeps, for a backbone
  without a token grid only, when OccDrop is wanted and the window tiles the crop (on a
  ViT it is one token patch).
- ``num_frames``, ``crop_size``, ``channels``: the clip format.
- ``mask_ratio``, ``visible_tokens`` (per clip), ``masked_per_frame`` (hidden
  spatial positions of a tube mask, or hidden tokens of a random one): masked
  objectives only.
- ``lr``, ``lr_scale_batch`` (0: none, ``lr`` is the peak), ``peak_lr``,
  ``min_lr``, ``warmup_epochs``, ``batch_size``, ``epochs`` (per stage): runs
  trained here only (not imported Hugging Face checkpoints).
- ``train_steps``: optimizer steps of the whole run, every stage counted (a sequential run
  of K stages takes K times an E2E run's), for runs trained here on a set of known size
  (the embedded sets, CIFAR).
- ``test_clips``: how many test clips the clip metrics (probe, kNN, mAP) were measured on
  (readable ones only); written by :mod:`bwssl.analysis.clip_metrics`, which knows the
  count, whenever it runs and ``setup`` is wanted. The report reads a probe accuracy's
  sampling error from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bwssl.analysis.context import RunContext

METRIC = "setup"
"""The metric name of these rows."""
METRICS_HANDLED: tuple[str, ...] = (METRIC,)


def facts(ctx: RunContext) -> dict[str, float]:
    """The run's setup facts by name (see the module docstring)."""
    from bwssl.analysis.occlusion import window_side
    from bwssl.analysis.requirements import occlusion_needs, token_grid_needs
    from bwssl.data.masking import num_masked, num_visible
    from bwssl.run_sizes import estimated_steps, exact_size, train_clips

    cfg = ctx.src.config
    t, h, w = cfg.token_grid
    d, tr = ctx.data, cfg.train
    out: dict[str, float] = {}
    if not token_grid_needs(ctx.model.backbone):
        out.update(grid_t=t, grid_h=h, grid_w=w, tokens=t * h * w)
    elif ctx.want & {"occdrop_l1", "occdrop_l2"} and not occlusion_needs(
        ctx.model.backbone, ctx.data.crop_size, ctx.opt.occlusion_window
    ):
        out["occlusion_window"] = window_side(ctx.data.crop_size, ctx.opt.occlusion_window)
    out |= {
        "num_frames": d.num_frames,
        "crop_size": d.crop_size,
        "channels": d.channels,
    }
    if cfg.objective.name == "masked_pixels":
        tube = cfg.mask.kind == "tube"
        over = h * w if tube else t * h * w
        out["mask_ratio"] = cfg.mask.ratio
        out["masked_per_frame"] = num_masked(over, cfg.mask.ratio)
        out["visible_tokens"] = num_visible(over, cfg.mask.ratio) * (t if tube else 1)
    if ctx.src.kind != "run":  # an imported checkpoint: its training is not ours to state
        return out
    out.update(
        lr=tr.lr,
        lr_scale_batch=tr.lr_scale_batch or 0,
        peak_lr=tr.peak_lr,
        min_lr=tr.min_lr,
        warmup_epochs=tr.warmup_epochs,
        batch_size=tr.batch_size,
        epochs=tr.epochs,
    )
    n = train_clips(cfg)
    if n is not None and exact_size(cfg, ucf101=False):
        out["train_steps"] = estimated_steps(cfg, n)
    return out


def run(ctx: RunContext) -> None:
    """Append the ``setup`` rows of ``ctx``'s run."""
    for name, value in facts(ctx).items():
        ctx.add(METRIC, 0, float(value), name)
