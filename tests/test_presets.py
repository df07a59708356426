"""Every training preset loads and validates (those that need a data root get one), and the
ResNet presets carry their recipes (the paper's; solo-learn's on CIFAR)."""

from __future__ import annotations

import pytest

from bwssl.config import ConfigError, load_config, preset_names


@pytest.mark.parametrize("preset", preset_names())
def test_every_preset_loads_and_validates(preset):
    try:
        cfg = load_config(preset)
    except ConfigError as e:
        if "data.root" not in str(e):
            raise
        cfg = load_config(preset, ["data.root=/nonexistent"])
    assert cfg.train.epochs >= 1


def test_resnet50_barlow_is_the_paper_s_recipe():
    with pytest.raises(ConfigError, match=r"data\.root"):
        load_config("resnet50-barlow")
    cfg = load_config("resnet50-barlow", ["data.root=/imagenet"])
    m, o, t = cfg.model, cfg.objective, cfg.train
    assert (m.arch, m.resnet_depth, m.num_blocks, m.cifar_stem) == ("resnet", 50, 4, False)
    assert (o.pooling, o.cbe_kernel, o.pool_width, o.projector) == ("cbe", 1, 2048, [8192] * 3)
    assert o.barlow_lambda == 0.0051 and (cfg.noise.std, cfg.noise.mode) == (0.25, "all")
    assert t.optimizer == "lars" and t.peak_lr == pytest.approx(0.2 * 2048 / 256)
    assert (t.lr_biases, t.warmup_epochs, t.min_lr_ratio, t.weight_decay) == (
        0.0048,
        10,
        0.001,
        1e-6,
    )
    assert (t.batch_size, t.epochs, cfg.data.name, cfg.data.crop_size) == (2048, 300, "images", 224)


def test_resnet18_cifar_barlow_is_solo_learn_s_recipe():
    # vturrisi/solo-learn@9187ea3: scripts/pretrain/cifar/barlow.yaml, its asymmetric
    # augmentations, and the defaults of solo/methods/base.py and solo/args/pretrain.py
    cfg = load_config("resnet18-cifar-barlow", ["data.root=/cifar"])
    m, o, v, t = cfg.model, cfg.objective, cfg.objective.views, cfg.train
    assert (m.resnet_depth, m.num_blocks, m.cifar_stem) == (18, 4, True)
    assert (o.projector, o.barlow_lambda, o.barlow_scale) == ([2048] * 3, 0.0051, 0.1)
    assert t.optimizer == "lars" and t.peak_lr == pytest.approx(0.3)
    assert (t.lr_biases, t.lars_eta, t.momentum, t.weight_decay) == (None, 0.02, 0.9, 1e-4)
    assert t.lars_clip is True  # [P] clip_lr: True
    assert (t.batch_size, t.epochs, t.warmup_epochs, t.min_lr_ratio) == (256, 1000, 10, 0.0)
    assert (v.scale, v.flip_prob, v.jitter, v.jitter_prob) == (
        [0.08, 1.0],
        0.5,
        [0.4, 0.4, 0.2, 0.1],
        0.8,
    )
    assert (v.jitter_order, v.gray_prob, v.blur_prob, v.solarize_prob) == (
        "random",
        0.2,
        [0.0, 0.0],
        [0.0, 0.2],
    )
    assert (cfg.data.name, cfg.data.crop_size) == ("cifar10", 32)


def test_resnet_debug_trains_on_the_embedded_images():
    cfg = load_config("resnet-debug")
    assert cfg.data.name == "synthetic_images" and cfg.data.root is None
