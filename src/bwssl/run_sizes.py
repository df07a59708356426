"""How long a planned run is: training clips per epoch of a dataset before it is indexed,
and the optimizer steps of a run's schedule, as the trainer counts them (the plan of
``bwssl run`` and its ETA)."""

from __future__ import annotations

from bwssl.config import Config


def run_length(cfg: Config, train_clips: int) -> int:
    """Optimizer steps of one schedule of ``train.epochs`` epochs over ``train_clips`` clips
    (at most ``train.max_steps``), as the trainer counts them: one blockwise stage, or the
    whole run of a layer-wise regime."""
    steps = (train_clips // cfg.train.batch_size) * cfg.train.epochs
    if cfg.train.max_steps is not None:
        steps = min(steps, cfg.train.max_steps)
    return steps


def estimated_steps(cfg: Config, train_clips: int) -> int:
    """Optimizer steps of one run: a blockwise regime runs :func:`run_length` per stage
    (sequential: K stages; untrained: none); a layer-wise regime (freeze, layerlock, latent)
    runs one schedule of that length in all, its freezing events inside it."""
    from bwssl.regimes import is_layerwise, stages

    steps = run_length(cfg, train_clips)
    if is_layerwise(cfg.regime):
        return steps
    return steps * len(stages(cfg.regime, cfg.model.num_blocks))


def freezing_steps(cfg: Config, train_clips: int) -> list[int]:
    """The steps at which a layer-wise run's stages switch (freezing events, target switches);
    empty for a blockwise regime. Raises :class:`~bwssl.config.ConfigError` (naming the key)
    when the schedule does not fit in the run."""
    from bwssl.regimes import is_layerwise, run_stages

    if not is_layerwise(cfg.regime):
        return []
    return [s.lr_offset or 0 for s in run_stages(cfg, run_length(cfg, train_clips))[1:]]


# Videos in the official UCF101 training lists (before excluding short videos).
UCF101_TRAIN_VIDEOS = {1: 9537, 2: 9586, 3: 9624}
CIFAR_TRAIN_IMAGES = 50_000
"""Training images of CIFAR-10 and CIFAR-100."""
IMAGENET_TRAIN_IMAGES = 1_281_167
"""Training images of ImageNet-1k, the size ``data.name=images`` is planned with (a user's
folder is counted when it is indexed; the trainer uses the real count)."""


def train_clips(cfg: Config, ucf101: bool = False) -> int | None:
    """Training clips per epoch: exact for the embedded sets (``synthetic``,
    ``synthetic_images``) and CIFAR, the official list for UCF101, ImageNet-1k's size for an
    image folder; None for the other datasets (known once their files are indexed)."""
    d = cfg.data
    if ucf101 or d.name == "ucf101":
        return UCF101_TRAIN_VIDEOS[d.split]
    if d.name in ("synthetic", "synthetic_images"):
        return d.synthetic_train
    if d.name in ("cifar10", "cifar100"):
        return CIFAR_TRAIN_IMAGES
    if d.name == "images":
        return IMAGENET_TRAIN_IMAGES
    return None


def exact_size(cfg: Config, ucf101: bool) -> bool:
    """Whether :func:`train_clips` is the exact training-set size (no ``~`` in the plan)."""
    return not ucf101 and cfg.data.name in ("synthetic", "synthetic_images", "cifar10", "cifar100")
