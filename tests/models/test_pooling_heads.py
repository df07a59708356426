"""Pooling heads: shapes on the ResNet block maps, values against direct formulas, config
checks, and the heads on the video ViT's token grid."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn

from bwssl.config import ConfigError, ObjectiveConfig
from bwssl.data.transforms import normalize
from bwssl.models import build_model
from bwssl.models.heads import GlobalBatchNorm2d, Projector
from bwssl.models.pooling import (
    POOL_EPS,
    ConvExpansion,
    LocalSpatialPool,
    build_pooling,
    l2_pool,
    lsp_grid,
    sqrt_pool,
)

RESNET50 = [(256, 56), (512, 28), (1024, 14), (2048, 7)]
"""(channels, side) of the four block outputs of a ResNet-50 at 224 pixels."""
CIFAR18 = [(64, 32), (128, 16), (256, 8), (512, 4)]
"""The same for a ResNet-18 with the CIFAR stem at 32 pixels."""
POOLINGS = [("gsp", "avg"), ("lsp", "avg"), ("cbe", "avg"), ("cbe", "l2"), ("cbe", "sqrt")]


def _maps(shapes, b=2, shrink=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, c, max(2, s // shrink), max(2, s // shrink), generator=g) for c, s in shapes
    ]


def _cfg(pooling, cbe_pool="avg", **kw) -> ObjectiveConfig:
    return ObjectiveConfig(name="barlow_twins", pooling=pooling, cbe_pool=cbe_pool, **kw)


@pytest.mark.parametrize("pooling,cbe_pool", POOLINGS)
@pytest.mark.parametrize("shapes,shrink", [(RESNET50, 4), (CIFAR18, 1)], ids=["resnet50", "cifar"])
def test_every_pooling_gives_its_width_on_every_block(pooling, cbe_pool, shapes, shrink):
    """A head (pooling + projector) maps each block's (B, C, H, W) to (B, projector[-1]) and
    exposes its pooled vector: C wide for gsp, objective.pool_width for lsp and cbe."""
    cfg = _cfg(pooling, cbe_pool)
    for (c, _), x in zip(shapes, _maps(shapes, shrink=shrink), strict=True):
        pool, width = build_pooling(cfg, c)
        head = Projector(width, [32, 16], pool)
        assert head.pooled(x).shape == (2, c if pooling == "gsp" else 2048)
        assert head(x).shape == (2, 16)


def test_the_first_resnet50_block_at_full_size():
    (x,) = _maps(RESNET50[:1], b=1)
    with torch.no_grad():
        for pooling, cbe_pool in POOLINGS:
            pool, width = build_pooling(_cfg(pooling, cbe_pool), 256)
            assert pool is not None
            assert pool.eval()(x).shape == (1, width)
    assert lsp_grid(256, 2048) == (2, 4)  # 8 bins, as near square as a rectangle gets


def test_lsp_averages_each_bin_and_concatenates_channel_major():
    x = torch.arange(2 * 3 * 4 * 8, dtype=torch.float32).reshape(2, 3, 4, 8)
    grid = lsp_grid(3, 24)
    assert grid == (2, 4)
    out = LocalSpatialPool(grid)(x)
    want = x.reshape(2, 3, 2, 2, 4, 2).mean(dim=(3, 5)).reshape(2, 24)  # 2x2 pixels per bin
    torch.testing.assert_close(out, want)
    assert [lsp_grid(c, 2048) for c, _ in RESNET50] == [(2, 4), (2, 2), (1, 2), (1, 1)]
    with pytest.raises(ValueError, match="at least 2x4"):
        LocalSpatialPool(grid)(torch.zeros(1, 3, 1, 8))


@pytest.mark.parametrize("channels,width", [(192, 2048), (256, 128), (3, 10)])
def test_lsp_refuses_a_width_that_is_not_a_multiple_of_the_channels(channels, width):
    with pytest.raises(ConfigError, match=r"objective\.pool_width.*multiple of"):
        lsp_grid(channels, width)


def test_l2_and_square_root_pooling_match_their_formulas():
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x[0, 0] = 0.0  # a dead channel: finite values (and gradients) thanks to the eps
    a = x.numpy()
    l2 = np.sqrt((a**2).sum(axis=(2, 3)) / 20 + POOL_EPS)
    sq = np.sqrt(np.maximum(a, 0) + POOL_EPS).sum(axis=(2, 3)) / 20
    np.testing.assert_allclose(l2_pool(x).numpy(), l2, rtol=1e-12)
    np.testing.assert_allclose(sqrt_pool(x).numpy(), sq, rtol=1e-12)
    y = x.clone().requires_grad_(True)
    (l2_pool(y).sum() + sqrt_pool(y).sum()).backward()
    assert torch.isfinite(y.grad).all()


@pytest.mark.parametrize("cbe_pool", ["avg", "l2", "sqrt"])
def test_cbe_is_conv_batchnorm_relu_then_its_pooling(cbe_pool):
    torch.manual_seed(0)
    cbe = ConvExpansion(8, 16, 3, cbe_pool)
    assert cbe.conv.bias is None and cbe.conv.weight.shape == (16, 8, 3, 3)
    x = torch.randn(4, 8, 5, 6)
    y = torch.conv2d(x, cbe.conv.weight, padding=1)
    assert y.shape == (4, 16, 5, 6)  # padding k // 2 keeps the map
    mean, var = (
        y.mean(dim=(0, 2, 3), keepdim=True),
        y.var(dim=(0, 2, 3), keepdim=True, unbiased=False),
    )
    r = torch.relu((y - mean) / torch.sqrt(var + cbe.norm.eps))  # BN's affine starts at 1, 0
    want = {
        "avg": r.mean(dim=(2, 3)),
        "l2": torch.sqrt(r.pow(2).mean(dim=(2, 3)) + POOL_EPS),
        "sqrt": torch.sqrt(r + POOL_EPS).mean(dim=(2, 3)),
    }[cbe_pool]
    torch.testing.assert_close(cbe(x), want, rtol=1e-4, atol=1e-5)


def test_cbe_normalizes_over_the_global_batch_and_equals_batch_norm_in_one_process():
    """The CbE head's default norm is GlobalBatchNorm2d (DDP heads see the global batch);
    in one process it is nn.BatchNorm2d: same keys, same outputs and running statistics."""
    cfg = ObjectiveConfig(name="barlow_twins", pooling="cbe", pool_width=8)
    torch.manual_seed(0)
    cbe, _ = build_pooling(cfg, 4)
    assert isinstance(cbe.norm, GlobalBatchNorm2d)
    plain = ConvExpansion(4, 8, 1, "avg", norm=nn.BatchNorm2d)
    plain.load_state_dict(cbe.state_dict())
    x = torch.randn(6, 4, 5, 5)
    assert torch.equal(cbe(x), plain(x))
    assert torch.equal(cbe.norm.running_var, plain.norm.running_var)


def test_cbe_takes_the_norm_it_is_given():
    cbe = ConvExpansion(4, 8, 1, "avg", norm=lambda c: nn.GroupNorm(2, c))
    assert isinstance(cbe.norm, nn.GroupNorm) and cbe(torch.randn(1, 4, 3, 3)).shape == (1, 8)


def _two_training_steps(
    cbe: ConvExpansion,
    seed: int = 4,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[dict[str, torch.Tensor]]:
    """Outputs, input gradient, parameter gradients and buffers after each of two training
    steps (an SGD step between them) of ``cbe`` (run through ``forward``, default itself)
    on fixed batches of 6 images (``dtype``, that of ``cbe``'s parameters)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(cbe.parameters(), lr=0.5)
    seen = []
    for _ in range(2):
        x = torch.randn(6, 4, 5, 5, generator=g).to(dtype).requires_grad_(True)
        w = torch.randn(6, cbe.conv.out_channels, generator=g).to(dtype)  # not the sum
        opt.zero_grad()
        out = (forward if forward is not None else cbe.train())(x)
        (out * w).sum().backward()
        seen.append(
            {
                "out": out.detach(),
                "x_grad": x.grad,
                **{f"grad:{n}": p.grad.clone() for n, p in cbe.named_parameters()},
                **{f"buffer:{n}": b.clone() for n, b in cbe.named_buffers()},
            }
        )
        opt.step()
    return seen


@pytest.mark.parametrize("cbe_pool", ["avg", "l2", "sqrt"])
@pytest.mark.parametrize(
    "norm",
    [GlobalBatchNorm2d, nn.BatchNorm2d, partial(nn.BatchNorm2d, momentum=None)],
    ids=["global", "batchnorm", "cumulative"],
)
def test_a_checkpointed_cbe_trains_exactly_as_the_plain_one(cbe_pool, norm):
    """objective.cbe_checkpoint recomputes the expansion in backward: the same outputs,
    gradients and running statistics as without, and ``num_batches_tracked`` counts each
    forward once (the recomputation does not move the statistics again); in evaluation it
    is the plain module."""
    torch.manual_seed(0)
    plain = ConvExpansion(4, 16, 3, cbe_pool, norm)
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint = True
    a, b = _two_training_steps(plain), _two_training_steps(ckpt)
    for step_a, step_b in zip(a, b, strict=True):
        assert step_a.keys() == step_b.keys()
        for key in step_a:
            torch.testing.assert_close(step_b[key], step_a[key], rtol=1e-6, atol=1e-7, msg=key)
    assert int(ckpt.norm.num_batches_tracked) == 2
    assert not torch.equal(a[1]["buffer:norm.running_var"], a[0]["buffer:norm.running_var"])
    x = torch.randn(3, 4, 5, 5)
    assert torch.equal(plain.eval()(x), ckpt.eval()(x))


def test_a_checkpointed_cbe_trains_under_torch_compile():
    """Compiled (train.compile), the checkpointed function becomes a traced region whose
    inputs the recomputation checks for in-place changes: the running statistics it reads
    must not be the buffers updated after it (they were, and backward failed)."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    plain = ConvExpansion(4, 8, 1, "avg", nn.BatchNorm2d)
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint = True
    got = _two_training_steps(ckpt, forward=torch.compile(ckpt.train(), backend="eager"))
    for step_a, step_b in zip(_two_training_steps(plain), got, strict=True):
        for key in step_a:
            torch.testing.assert_close(step_b[key], step_a[key], rtol=1e-6, atol=1e-7, msg=key)


def test_a_checkpointed_cbe_keeps_no_expanded_map_for_backward():
    """What autograd keeps from the forward: the plain CbE keeps its (B, width, H, W) conv
    and ReLU outputs; the checkpointed one no map but its input."""

    def saved(cbe: nn.Module) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            shapes.append(tuple(t.shape))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            cbe.train()(torch.randn(2, 4, 5, 6, requires_grad=True))
        return shapes

    torch.manual_seed(0)
    plain = ConvExpansion(4, 16, 1, "l2")
    ckpt = ConvExpansion(4, 16, 1, "l2", checkpoint=True)
    assert (2, 16, 5, 6) in saved(plain)
    kept = saved(ckpt)  # the input and copies of the (16,) running statistics
    assert [s for s in kept if len(s) > 1] == [(2, 4, 5, 6)] and (16,) in kept
    with torch.no_grad():  # no autograd: the plain forward, which moves the statistics
        ckpt(torch.randn(2, 4, 5, 6))
    assert int(ckpt.norm.num_batches_tracked) == 2


def test_a_checkpointed_cbe_takes_a_stateless_norm_and_refuses_one_with_buffers():
    torch.manual_seed(0)
    plain = ConvExpansion(4, 8, 1, "avg", norm=lambda c: nn.GroupNorm(2, c))
    ckpt = copy.deepcopy(plain)
    ckpt.checkpoint = True
    for step_a, step_b in zip(_two_training_steps(plain), _two_training_steps(ckpt), strict=True):
        for key in step_a:
            torch.testing.assert_close(step_b[key], step_a[key], rtol=1e-6, atol=1e-7, msg=key)
    with pytest.raises(ValueError, match=r"objective\.cbe_checkpoint.*InstanceNorm2d"):
        ConvExpansion(
            4,
            8,
            1,
            "avg",
            norm=partial(nn.InstanceNorm2d, track_running_stats=True),
            checkpoint=True,
        )


@pytest.mark.parametrize("chunk", [4, 1])  # 4 does not divide the batch of 6
@pytest.mark.parametrize("cbe_pool", ["avg", "l2", "sqrt"])
@pytest.mark.parametrize(
    "norm",
    [GlobalBatchNorm2d, nn.BatchNorm2d, partial(nn.BatchNorm2d, momentum=None)],
    ids=["global", "batchnorm", "cumulative"],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_a_chunked_cbe_trains_exactly_as_the_plain_one(dtype, norm, cbe_pool, chunk):
    """objective.cbe_chunk computes the checkpointed expansion a chunk of images at a time,
    with the batch statistics of the whole batch: the same outputs, gradients of the input
    and of every parameter, and running statistics as the plain head over two steps, the
    batch counted once per forward; in evaluation it is the plain module."""
    torch.manual_seed(0)
    plain = ConvExpansion(4, 16, 3, cbe_pool, norm).to(dtype)
    chunked = copy.deepcopy(plain)
    chunked.checkpoint, chunked.chunk = True, chunk
    a = _two_training_steps(plain, dtype=dtype)
    b = _two_training_steps(chunked, dtype=dtype)
    exact = copy.deepcopy(plain).double() if dtype == torch.float32 else None
    truth = _two_training_steps(exact, dtype=torch.float64) if exact is not None else a
    for step_a, step_b, step_t in zip(a, b, truth, strict=True):
        assert step_a.keys() == step_b.keys()
        for key in step_a:
            if dtype == torch.float64:
                torch.testing.assert_close(step_b[key], step_a[key], rtol=1e-10, atol=1e-12)
                continue
            # float32: the sums run in another order, so compare errors relative to each
            # tensor's largest value. sqrt pooling's gradient, 1 / (2 sqrt(a + 1e-6)),
            # magnifies rounding of the map near zero up to 500-fold (the plain head's
            # float32 gradients are 1e-3 off float64 in the second step): there the chunked
            # head must be about as close to float64 as the plain one.
            scale = step_t[key].abs().max().double().clamp_min(1e-30)
            err = (step_b[key].double() - step_a[key].double()).abs().max() / scale
            if cbe_pool != "sqrt":
                assert err <= 1e-5, (key, float(err))
                continue
            own = (step_b[key].double() - step_t[key]).abs().max() / scale
            plain_own = (step_a[key].double() - step_t[key]).abs().max() / scale
            assert own <= 2 * plain_own + 1e-6, (key, float(own), float(plain_own))
    assert int(chunked.norm.num_batches_tracked) == 2
    chunked.load_state_dict(plain.state_dict())  # equal weights: evaluation is the plain path
    x = torch.randn(3, 4, 5, 5, dtype=dtype)
    assert torch.equal(plain.eval()(x), chunked.eval()(x))


def test_a_chunked_cbe_trains_under_torch_compile():
    torch._dynamo.reset()
    torch.manual_seed(0)
    plain = ConvExpansion(4, 8, 1, "l2", nn.BatchNorm2d)
    chunked = copy.deepcopy(plain)
    chunked.checkpoint, chunked.chunk = True, 4
    got = _two_training_steps(chunked, forward=torch.compile(chunked.train(), backend="eager"))
    for step_a, step_b in zip(_two_training_steps(plain), got, strict=True):
        for key in step_a:
            torch.testing.assert_close(step_b[key], step_a[key], rtol=1e-5, atol=1e-5, msg=key)


def test_a_chunked_cbe_keeps_no_expanded_map_for_backward():
    """What autograd keeps from the chunked forward: the input, the parameters, (width,)
    statistics and the pooled (B, width) vector, no (B, width, H, W) map."""
    shapes: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(t.shape))
        return t

    cbe = ConvExpansion(4, 16, 1, "l2", checkpoint=True, chunk=2).train()
    x = torch.randn(5, 4, 5, 6, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = cbe(x)
    assert sorted(s for s in shapes if len(s) == 4) == [(5, 4, 5, 6), (16, 4, 1, 1)]
    assert (5, 16) in shapes and (16,) in shapes
    out.sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape


def test_a_chunked_cbe_under_bf16_autocast_follows_the_plain_one():
    """Under autocast (train.precision on GPUs) the chunks' convs run in bfloat16 as the
    plain head's does, in backward too; the pooled vector is bfloat16 like the plain one."""
    torch.manual_seed(0)
    plain = ConvExpansion(4, 16, 1, "avg", nn.BatchNorm2d).train()
    chunked = copy.deepcopy(plain)
    chunked.checkpoint, chunked.chunk = True, 2
    x, w = torch.randn(5, 4, 3, 3), torch.randn(5, 16)
    got = []
    for m in (plain, chunked):
        xx = x.clone().requires_grad_(True)
        with torch.autocast("cpu", torch.bfloat16):
            out = m(xx)
        (out.float() * w).sum().backward()
        got.append((out, xx.grad, m.conv.weight.grad))
    assert got[1][0].dtype == got[0][0].dtype == torch.bfloat16
    for a, b in zip(got[0], got[1], strict=True):
        torch.testing.assert_close(b.float(), a.float(), rtol=0.05, atol=0.05)


def test_a_cbe_chunk_needs_checkpointing_a_batch_norm_and_a_positive_size():
    with pytest.raises(ValueError, match=r"objective\.cbe_chunk must be >= 1"):
        ConvExpansion(4, 8, 1, "avg", checkpoint=True, chunk=0)
    with pytest.raises(ValueError, match=r"objective\.cbe_chunk.*checkpoint=False"):
        ConvExpansion(4, 8, 1, "avg", chunk=2)
    with pytest.raises(ValueError, match=r"objective\.cbe_chunk.*GroupNorm"):
        ConvExpansion(4, 8, 1, "avg", norm=lambda c: nn.GroupNorm(2, c), checkpoint=True, chunk=2)


def test_cbe_chunk_reaches_every_head(make_cfg):
    cfg = make_cfg(
        "objective.name=barlow_twins",
        "objective.pooling=cbe",
        "objective.cbe_checkpoint=true",
        "objective.cbe_chunk=3",
    )
    assert cfg.objective.cbe_chunk == 3 and make_cfg().objective.cbe_chunk is None
    model = build_model(cfg)
    assert all(model.head(k).pool.chunk == 3 for k in range(cfg.model.num_blocks))


def test_cbe_checkpoint_reaches_every_head(make_cfg):
    cfg = make_cfg(
        "objective.name=barlow_twins", "objective.pooling=cbe", "objective.cbe_checkpoint=true"
    )
    assert cfg.objective.cbe_checkpoint and not make_cfg().objective.cbe_checkpoint
    model = build_model(cfg)
    assert all(model.head(k).pool.checkpoint for k in range(cfg.model.num_blocks))


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["objective.pooling=cbe"], "objective.pooling"),  # masked pixels: decoders, no pooling
        (["objective.name=barlow_twins", "objective.pooling=max"], "objective.pooling"),
        (["objective.name=barlow_twins", "objective.cbe_kernel=2"], "objective.cbe_kernel"),
        (["objective.name=barlow_twins", "objective.cbe_pool=max"], "objective.cbe_pool"),
        (["objective.name=barlow_twins", "objective.pool_width=0"], "objective.pool_width"),
        (["objective.name=barlow_twins", "objective.cbe_checkpoint=1"], "objective.cbe_checkpoint"),
        (["objective.cbe_checkpoint=maybe"], "objective.cbe_checkpoint"),
        (["objective.cbe_checkpoint=true", "objective.cbe_chunk=0"], "objective.cbe_chunk"),
        (["objective.cbe_chunk=2"], "objective.cbe_chunk"),  # without cbe_checkpoint
        (["objective.cbe_chunk=two"], "objective.cbe_chunk"),
    ],
)
def test_bad_pooling_keys_are_refused_by_name(overrides, key, make_cfg):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_cfg(*overrides)


def test_an_lsp_width_the_vit_cannot_tile_is_refused_when_the_model_is_built(make_cfg):
    cfg = make_cfg(
        "objective.name=barlow_twins", "objective.pooling=lsp", "objective.pool_width=48"
    )
    with pytest.raises(ConfigError, match=r"objective\.pool_width.*multiple of 32"):
        build_model(cfg)


def _video(cfg, b=4):
    d = cfg.data
    g = torch.Generator().manual_seed(2)
    x = torch.rand(b, d.channels, d.num_frames, d.crop_size, d.crop_size, generator=g)
    return normalize(x, channel_dim=1)


def test_on_the_vit_the_map_is_the_time_averaged_token_grid(make_cfg):
    """The ViT's feature map averages the token grid over time, so gsp reads exactly the
    backbone's token mean; a cbe head's pooled vector is what the model exposes per block,
    and the head is part of what the block's unit trains (``projectors.{k}.pool``)."""
    cfg = make_cfg("objective.name=barlow_twins", "objective.pooling=gsp")
    model = build_model(cfg).eval()
    outs = model.block_outputs(_video(cfg))
    fmap = model.backbone.feature_map(0, outs[0])
    t, s = cfg.token_grid[0], cfg.token_grid[1]
    assert fmap.shape == (4, 32, s, s)
    torch.testing.assert_close(
        fmap[:, :, 1, 2], outs[0].reshape(4, t, s, s, 32)[:, :, 1, 2].mean(1)
    )
    torch.testing.assert_close(model.head_features(1, outs[1]), model.pool(1, outs[1]))
    with pytest.raises(ValueError, match="all 32 tokens"):
        model.backbone.feature_map(0, outs[0][:, :8])

    cbe = build_model(
        make_cfg("objective.name=vicreg", "objective.pooling=cbe", "objective.pool_width=48")
    )
    assert cbe.head_features(0, outs[0]).shape == (4, 48)
    trained = {id(p) for p in cbe.block_params(0)}
    assert all(id(p) in trained for p in cbe.head(0).pool.parameters())
    assert "projectors.0.pool.conv.weight" in cbe.state_dict()
    masked = build_model(make_cfg())
    assert masked.head_features(0, outs[0]) is None  # decoders do not pool


def test_backbone_pooling_keeps_the_projector_alone(make_cfg):
    """The default heads have the projector's parameters only, under the same keys."""
    model = build_model(make_cfg("objective.name=barlow_twins"))
    keys = [k for k in model.state_dict() if k.startswith("projectors.0.")]
    assert keys and all(k.startswith("projectors.0.net.") for k in keys)
