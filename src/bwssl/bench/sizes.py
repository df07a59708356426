"""The model sizes ``bwssl bench`` offers: a preset, overrides and a batch per device."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    """A benchmark configuration: a preset plus overrides, its default batch per device, and
    the objective it is measured with."""

    preset: str
    overrides: tuple[str, ...] = ()
    cpu_batch: int = 2
    gpu_batch: int = 32
    note: str = ""
    objective: str = "masked_pixels"
    """The objective measured when ``--objectives`` names none, and the one whose runs the
    targets are checked on (when it is among the measured objectives)."""


_DEFAULT_SCHEDULE = (
    "layerlock.start_step=null",
    "layerlock.interval=null",
    "layerlock.switch_warmup_steps=0",
)
"""The layer-wise schedule of the layerlock-vitb preset counts 30K steps; a benchmark schedule
is shorter, so these sizes take the default shape (first event at half, the last at three
quarters of the run) for whatever ``--schedule-steps`` is."""

_RESNET_BARLOW_HEADS = (
    "objective.pooling=cbe",
    "objective.pool_width=2048",
    "objective.projector=[8192,8192,8192]",
    "noise.std=0.25",
    "train.optimizer=lars",
    "train.lr=0.2",
    "train.weight_decay=1e-6",
)
"""The blockwise Barlow Twins heads and recipe on a ResNet: a CbE head expanding every block's
map to 2048 channels, the 8192-8192-8192 projector, feature noise 0.25 and LARS."""

_RESNET50_BARLOW = (
    "model.resnet_depth=50",
    "model.resnet_width=64",
    "model.resnet_stage_blocks=null",
    "model.cifar_stem=false",
    *_RESNET_BARLOW_HEADS,
)
"""resnet-debug turned into the paper's ResNet-50 (ImageNet stem) with its heads; the
``resnet50-barlow`` preset states the same model with its data and schedule."""

SIZES: dict[str, Size] = {
    "tiny-debug": Size("tiny-debug", (), 2, 8, "the test preset: width 32, depth 4, K=2"),
    "reduced": Size(
        "deit-tiny",
        ("data.num_frames=8", "data.crop_size=64", "model.tubelet_size=2", "model.patch_size=8"),
        4,
        64,
        "DeiT-Tiny (width 192, depth 12, K=4) on 8x64x64 clips, tubelet 2x8x8",
    ),
    "deit-tiny": Size("deit-tiny", (), 2, 32, "paper text grid: 16x128x128, tubelet 8x16x16"),
    "deit-tiny-t2p8": Size(
        "deit-tiny-t2p8", (), 1, 32, "released-code grid: 16x128x128, tubelet 2x8x8"
    ),
    "deit-small": Size("deit-small", (), 2, 32, "DeiT-Small, tubelet 8x16x16"),
    "deit-small-t2p8": Size("deit-small-t2p8", (), 1, 32, "DeiT-Small, tubelet 2x8x8"),
    "vit-b": Size(
        "layerlock-vitb",
        _DEFAULT_SCHEDULE,
        1,
        16,
        "LayerLock's ViT-B ablation model: width 768, 12 layers, 16x224x224 clips, 2x16x16 "
        "tubelets, 95% random masking, 4-layer width-384 decoder",
    ),
    "vit-l": Size(
        "layerlock-vitb",
        (*_DEFAULT_SCHEDULE, "model.embed_dim=1024", "model.depth=24", "model.num_heads=16"),
        1,
        8,
        "ViT-L encoder (width 1024, 24 layers, 16 heads) on the vit-b grid, masking and decoder",
    ),
    "resnet-debug": Size(
        "resnet-debug",
        ("objective.pooling=cbe", "objective.pool_width=32"),
        4,
        8,
        "the ResNet test preset (width 8, one residual block per stage, 32 pixels) with CbE heads",
        "barlow_twins",
    ),
    "resnet50": Size(
        "resnet-debug",
        (
            *_RESNET50_BARLOW,
            "data.crop_size=224",
        ),
        4,
        64,
        "ResNet-50 (torchvision layout, 4 blocks: stem + layer1, layer2, layer3, layer4) on "
        "224-pixel images, Barlow Twins with CbE heads (2048) and 8192x3 projectors on every "
        "block, noise 0.25, LARS",
        "barlow_twins",
    ),
    "resnet18-cifar": Size(
        "resnet-debug",
        (
            "model.resnet_depth=18",
            "model.resnet_width=64",
            "model.resnet_stage_blocks=null",
            "model.cifar_stem=true",
            *_RESNET_BARLOW_HEADS,
            "data.crop_size=32",
        ),
        32,
        256,
        "ResNet-18 with the CIFAR stem on 32-pixel images, the resnet50 heads and recipe",
        "barlow_twins",
    ),
}
"""Every size by name."""

DEFAULT_SIZES = {
    "cpu": ["reduced", "deit-tiny", "deit-tiny-t2p8"],
    "cuda": ["reduced", "deit-tiny", "deit-tiny-t2p8", "deit-small", "deit-small-t2p8"],
}
"""The sizes measured when none are named, per device type."""
