"""The model sizes ``bwssl bench`` offers: a preset, overrides and a batch per device."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Size:
    """A benchmark configuration: a preset plus overrides, and its default batch per device."""

    preset: str
    overrides: tuple[str, ...] = ()
    cpu_batch: int = 2
    gpu_batch: int = 32
    note: str = ""


_DEFAULT_SCHEDULE = (
    "layerlock.start_step=null",
    "layerlock.interval=null",
    "layerlock.switch_warmup_steps=0",
)
"""The layer-wise schedule of the layerlock-vitb preset counts 30K steps; a benchmark schedule
is shorter, so these sizes take the default shape (first event at half, the last at three
quarters of the run) for whatever ``--schedule-steps`` is."""

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
}
"""Every size by name."""

DEFAULT_SIZES = {
    "cpu": ["reduced", "deit-tiny", "deit-tiny-t2p8"],
    "cuda": ["reduced", "deit-tiny", "deit-tiny-t2p8", "deit-small", "deit-small-t2p8"],
}
"""The sizes measured when none are named, per device type."""
