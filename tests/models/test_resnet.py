"""The ResNet backbone: torchvision's layout and counts, the 4-stage cut, zero-init residuals,
feature noise, gradient isolation and frozen batch norms, and the torchvision key mapping."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from bwssl.cli import main
from bwssl.config import ConfigError, load_config
from bwssl.errors import UserError
from bwssl.interop import export_torchvision_resnet, load_torchvision_resnet
from bwssl.models import build_backbone, build_model
from bwssl.models.heads import GlobalBatchNorm2d
from bwssl.models.pooling import ConvExpansion
from bwssl.objectives import StepKey
from bwssl.train.trainer import Trainer, train

from .batch_norm_workers import bn_batch, bn_run, bn_worker, cbe_batch, cbe_run


def _cfg(*overrides: str):
    return load_config("resnet-debug", list(overrides))


def _images(b: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    """One-frame clips (B, 3, 1, H, W)."""
    return torch.randn(b, 3, 1, size, size, generator=torch.Generator().manual_seed(seed))


def _full(depth: int, *extra: str):
    """A full-width torchvision-depth ResNet, cut into the paper's 4 blocks."""
    return _cfg(
        f"model.resnet_depth={depth}",
        "model.resnet_width=64",
        "model.resnet_stage_blocks=null",
        "model.cifar_stem=false",
        *extra,
    )


@pytest.mark.parametrize("depth,with_fc", [(18, 11_689_512), (50, 25_557_032)])
def test_parameter_counts_are_torchvision_s(depth, with_fc):
    backbone = build_backbone(_full(depth))
    n = sum(p.numel() for p in backbone.parameters())
    fc = backbone.feature_dim(3) * 1000 + 1000  # torchvision's classifier, not built here
    assert n + fc == with_fc
    if depth == 50:
        assert n == 23_508_032


def torchvision_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """Every key of ``torchvision.models.resnet50().state_dict()`` with its shape, from the
    architecture's rules (bottleneck v1.5, stages of 3, 4, 6, 3 blocks, fc to 1000)."""
    out: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{name}"] = (c,)
        out[f"{prefix}.num_batches_tracked"] = ()

    out["conv1.weight"] = (64, 3, 7, 7)
    bn("bn1", 64)
    inplanes = 64
    for s, n in enumerate((3, 4, 6, 3)):
        planes = 64 * 2**s
        for i in range(n):
            p = f"layer{s + 1}.{i}"
            cin = inplanes if i == 0 else planes * 4
            out[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
            bn(f"{p}.bn1", planes)
            out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            out[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if i == 0:
                out[f"{p}.downsample.0.weight"] = (planes * 4, cin, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
        inplanes = planes * 4
    out["fc.weight"] = (1000, 2048)
    out["fc.bias"] = (1000,)
    return out


def _random_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g)
    return state


@pytest.mark.parametrize(
    "cut,where",
    [
        ([], {"conv1": 0, "bn1": 0, "layer1": 0, "layer2": 1, "layer3": 2, "layer4": 3}),
        (
            ["model.num_blocks=3", "model.boundaries=[2,3]"],
            {"conv1": 0, "bn1": 0, "layer1": 0, "layer2": 0, "layer3": 1, "layer4": 2},
        ),
    ],
)
def test_a_torchvision_resnet50_state_dict_loads_and_exports_back(cut, where):
    shapes = torchvision_resnet50_shapes()
    state = _random_state(shapes)
    backbone = build_backbone(_full(50, *cut))
    load_torchvision_resnet(backbone, state)
    mine = backbone.state_dict()
    assert len(mine) == len(state) - 2  # all but fc.weight and fc.bias
    for key, value in state.items():
        if key.startswith("fc."):
            continue
        stage = key.split(".")[0]
        assert torch.equal(mine[f"blocks.{where[stage]}.{key}"], value), key
    assert "blocks.2.layer3.2.bn2.running_var" in mine or where["layer3"] != 2
    back = export_torchvision_resnet(backbone)
    assert back.keys() == {k for k in state if not k.startswith("fc.")}
    assert all(torch.equal(back[k], state[k]) for k in back)


def test_a_state_dict_of_another_resnet_is_refused_by_name():
    backbone = build_backbone(_full(50))
    state = _random_state(torchvision_resnet50_shapes())
    del state["layer4.2.bn3.running_mean"]
    with pytest.raises(ValueError, match=r"missing \['blocks\.3\.layer4\.2\.bn3\.running_mean'\]"):
        load_torchvision_resnet(backbone, state)
    small = build_backbone(_cfg("model.resnet_depth=50", "model.resnet_stage_blocks=null"))
    with pytest.raises(ValueError, match=r"blocks\.0\.conv1\.weight: shape \(64, 3, 7, 7\)"):
        load_torchvision_resnet(small, _random_state(torchvision_resnet50_shapes()))


def _randomize_batch_norms(model: nn.Module, seed: int) -> None:
    """Affine weights and running statistics away from their unit init, so that a swapped or
    dropped statistic changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)


@pytest.mark.parametrize("depth", [18, 50])
def test_a_real_torchvision_resnet_loads_gives_the_same_features_and_exports_back(depth):
    """Needs torchvision (CI cannot install it beside the CPU torch wheel): every stage's map,
    the pooled features and the logits through torchvision's ``fc`` equal torchvision's, and
    the export loads strictly into a fresh torchvision model that gives the same logits."""
    torchvision = pytest.importorskip("torchvision")
    make = getattr(torchvision.models, f"resnet{depth}")
    theirs = make()
    _randomize_batch_norms(theirs, depth)
    theirs.eval()
    state = theirs.state_dict()
    backbone = build_backbone(_full(depth, "data.crop_size=64")).eval()
    load_torchvision_resnet(backbone, state)
    x = _images(2, 64, seed=depth)
    close = {"rtol": 1e-5, "atol": 1e-5}
    with torch.no_grad():
        outs = backbone.block_outputs(x)
        h = theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1(x[:, :, 0]))))
        for k, layer in enumerate((theirs.layer1, theirs.layer2, theirs.layer3, theirs.layer4)):
            h = layer(h)
            torch.testing.assert_close(outs[k], h, **close)
        pooled = backbone.pool(3, outs[-1])
        torch.testing.assert_close(pooled, torch.flatten(theirs.avgpool(h), 1), **close)
        logits = theirs(x[:, :, 0])
        torch.testing.assert_close(theirs.fc(pooled), logits, **close)
        assert logits.abs().max() > 0.1  # not a trivially zero output
        back = export_torchvision_resnet(backbone)
        back |= {"fc.weight": state["fc.weight"], "fc.bias": state["fc.bias"]}
        fresh = make()
        fresh.load_state_dict(back, strict=True)
        assert torch.equal(fresh.eval()(x[:, :, 0]), logits)


@pytest.mark.parametrize(
    "cifar,sides", [(False, [8, 4, 2, 1]), (True, [32, 16, 8, 4])], ids=["imagenet", "cifar"]
)
@pytest.mark.parametrize("depth", [18, 50])
def test_block_outputs_have_the_stage_shapes(cifar, sides, depth):
    cfg = _cfg(f"model.cifar_stem={str(cifar).lower()}", f"model.resnet_depth={depth}")
    backbone = build_backbone(cfg).eval()
    expansion = 1 if depth == 18 else 4
    outs = backbone.block_outputs(_images(2))
    assert len(outs) == 4
    for k, (h, s) in enumerate(zip(outs, sides, strict=True)):
        c = 8 * 2**k * expansion
        assert h.shape == (2, c, s, s)
        assert backbone.feature_dim(k) == c and backbone.num_tokens(k) == s * s
        assert backbone.pool(k, h).shape == (2, c)
        assert torch.allclose(backbone.pool(k, h), h.mean((2, 3)))
        tokens = backbone.tokens(k, h)
        assert tokens.shape == (2, s * s, c)
        assert torch.equal(tokens[:, -1], h[:, :, -1, -1])
        if s > 1:
            assert torch.equal(tokens[:, 1], h[:, :, 0, 1])  # row by row
    assert backbone.layer_view() is None


def test_boundaries_merge_stages_into_blocks():
    cfg = _cfg("model.num_blocks=3", "model.boundaries=[2,3]")
    model = build_model(cfg)
    blocks = {k.split(".")[1]: set() for k in model.state_dict() if k.startswith("blocks.")}
    for key in model.state_dict():
        if key.startswith("blocks."):
            blocks[key.split(".")[1]].add(key.split(".")[2])
    assert blocks == {"0": {"conv1", "bn1", "layer1", "layer2"}, "1": {"layer3"}, "2": {"layer4"}}
    outs = model.block_outputs(_images(2))
    assert [h.shape[1:] for h in outs] == [(16, 16, 16), (32, 8, 8), (64, 4, 4)]
    assert set(model.objective.cfg.model.block_ranges()) == {(0, 2), (2, 3), (3, 4)}


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["model.num_blocks=3"], r"'model\.num_blocks'.*4 stages of a resnet"),
        (["model.num_blocks=3", "model.boundaries=[2,4]"], r"'model\.boundaries'.*stage"),
        (["model.num_blocks=2", "model.boundaries=[0]"], r"'model\.boundaries'.*1\.\.3"),
        (["data.num_frames=2"], r"'data\.num_frames'.*one-frame"),
        (["objective.name=masked_pixels"], r"'objective\.name'.*hides tokens"),
        (["regime=layerlock", "objective.name=masked_pixels"], r"'regime'"),
        (["regime=freeze"], r"'regime'.*cannot be cut per layer"),
        (["model.resnet_depth=20"], r"'model\.resnet_depth'.*18, 34, 50"),
        (["model.resnet_stage_blocks=[1,1,1]"], r"'model\.resnet_stage_blocks'"),
        (["model.resnet_width=0"], r"'model\.resnet_width'"),
        (["model.resnet_width=65536"], r"'model'.*too large to build"),
        (["noise.std=-1"], r"'noise\.std'"),
        (["noise.mode=pixel"], r"'noise\.mode'"),
    ],
)
def test_settings_a_resnet_cannot_serve_are_refused_up_front(overrides, key):
    with pytest.raises(ConfigError, match=key):
        _cfg(*overrides)


def test_vit_refuses_noise_and_resnet_ignores_no_vit_rule():
    with pytest.raises(ConfigError, match=r"'noise\.std'"):
        load_config("tiny-debug", ["noise.std=0.25"])
    # A patch size that divides no crop is a ViT rule: a resnet does not care.
    assert _cfg("model.patch_size=7", "data.crop_size=33").model.arch == "resnet"


def test_a_model_without_a_layer_cut_says_so():
    model = build_model(_cfg())
    with pytest.raises(UserError, match="ResNet backbone cannot be cut per layer"):
        model.layer_view()


def test_a_fresh_residual_block_is_its_shortcut():
    backbone = build_backbone(_cfg("model.resnet_stage_blocks=[2,1,1,1]")).eval()
    blocks = [m for m in backbone.modules() if hasattr(m, "last_norm")]
    assert len(blocks) == 5
    assert all(torch.all(b.last_norm.weight == 0) for b in blocks)
    x = torch.rand(2, 8, 8, 8)  # after the stem: non-negative
    layer1 = backbone.blocks[0].layer1
    assert torch.equal(layer1[1](x), x)  # no downsample: the identity
    down = backbone.blocks[1].layer2[0]
    assert torch.equal(down(x), torch.relu(down.downsample(x)))


@pytest.mark.parametrize("mode", ["all", "channel", "position"])
def test_noise_only_in_training_with_the_configured_std(mode):
    std = 0.25
    backbone = build_backbone(_cfg(f"noise.std={std}", f"noise.mode={mode}"))
    x = _images(64, 32)
    dims = {"all": (0, 1, 2, 3), "channel": (0, 2, 3), "position": (0, 1)}[mode]
    backbone.train()
    torch.manual_seed(1)
    noisy = backbone.forward_block(0, x)
    clean = backbone.blocks[0](x)  # batch statistics: the same map, without noise
    torch.manual_seed(1)
    expected = std * torch.randn_like(clean) * clean.std(dims, keepdim=True)
    assert torch.allclose(noisy - clean, expected, atol=1e-5)
    measured = (noisy - clean).std(dims) / (std * clean.std(dims))
    assert torch.allclose(measured, torch.ones_like(measured), atol=0.2), measured
    assert noisy.requires_grad and (noisy - clean).abs().mean() > 0.01 * clean.abs().mean()
    backbone.eval()
    assert torch.equal(backbone.forward_block(0, x), backbone.blocks[0](x))


def test_the_noisy_output_feeds_the_next_block_and_the_head():
    cfg = _cfg("noise.std=0.25")
    torch.manual_seed(0)
    model = build_model(cfg)
    step = model.objective.prepare(_images(8), StepKey(0, 0, 0, 8), torch.arange(8))
    quiet = build_model(_cfg())
    quiet.load_state_dict(model.state_dict())
    for m in (model, quiet):
        m.train()
    torch.manual_seed(2)
    noisy = model.local_losses(step)
    torch.manual_seed(2)
    clean = quiet.local_losses(step)
    assert all(not torch.allclose(noisy[k], clean[k]) for k in noisy)
    quiet.load_state_dict(model.state_dict())  # the same running statistics
    model.eval(), quiet.eval()
    with torch.no_grad():
        a, b = model.local_losses(step), quiet.local_losses(step)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_gradient_of_a_block_s_loss_reaches_an_earlier_block():
    cfg = _cfg("noise.std=0.25")
    model = build_model(cfg).train()
    step = model.objective.prepare(_images(8), StepKey(0, 0, 0, 8), torch.arange(8))
    losses = model.local_losses(step, detach=True)
    assert sorted(losses) == [0, 1, 2, 3]
    for k, loss in losses.items():
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        for j in range(4):
            grads = [p.grad for p in model.blocks[j].parameters()]
            if j == k:
                assert any(g is not None and g.abs().sum() > 0 for g in grads)
            else:
                assert all(g is None for g in grads), (k, j)


def test_bwssl_train_sequential_keeps_the_frozen_block_s_batch_norm_statistics(
    tmp_path, monkeypatch
):
    """One ``bwssl train resnet-debug`` run through the CLI, sequential in 2 blocks: block 0's
    running statistics move in stage 1 and stay put in stage 2, where it is frozen."""
    overrides = ["regime=sequential", "model.num_blocks=2", "train.max_steps=2"]
    cfg = _cfg(*overrides)
    torch.manual_seed(cfg.seed)
    init = build_model(cfg).state_dict()
    seen = {}
    prepare = Trainer.prepare_stage

    def spy(self, model, stage):
        seen[stage.index] = {k: v.clone() for k, v in model.state_dict().items()}
        return prepare(self, model, stage)

    monkeypatch.setattr(Trainer, "prepare_stage", spy)
    out = tmp_path / "run"
    assert main(["train", "resnet-debug", "--out", str(out), *overrides]) == 0
    final = torch.load(out / "checkpoints" / "final.pt", weights_only=False)["model"]
    assert "blocks.0.layer1.0.conv1.weight" in final
    assert "blocks.1.layer4.0.downsample.0.weight" in final
    stats = [k for k in final if "running_" in k or "num_batches" in k]
    block0 = [k for k in stats if k.startswith("blocks.0.")]
    block1 = [k for k in stats if k.startswith("blocks.1.")]
    assert block0 and block1
    assert all(not torch.equal(seen[1][k], init[k]) for k in block0 if "running_mean" in k)
    assert all(torch.equal(final[k], seen[1][k]) for k in block0)  # frozen in stage 2
    assert all(not torch.equal(final[k], seen[1][k]) for k in block1 if "running_mean" in k)


def test_noise_resumes_exactly(tmp_path, monkeypatch):
    cfg = _cfg("noise.std=0.25", "train.max_steps=2", "train.checkpoint_every=1")
    train(cfg, tmp_path / "clean")

    class Interrupted(Exception):
        pass

    calls = {"n": 0}
    step = Trainer.step

    def stop_at_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", stop_at_second)
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "resumed")
    monkeypatch.setattr(Trainer, "step", step)
    train(cfg, tmp_path / "resumed")
    a, b = (
        torch.load(tmp_path / r / "checkpoints" / "final.pt", weights_only=False)["model"]
        for r in ("clean", "resumed")
    )
    assert all(torch.equal(a[k], b[k]) for k in a)
    quiet = _cfg("train.max_steps=2")
    train(quiet, tmp_path / "quiet")
    c = torch.load(tmp_path / "quiet" / "checkpoints" / "final.pt", weights_only=False)["model"]
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the noise changed training


def test_sync_bn_builds_global_batch_norms_that_equal_batch_norm_in_one_process():
    backbone = build_backbone(_cfg("model.sync_bn=true"))
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(isinstance(m, GlobalBatchNorm2d) for m in norms)
    plain = build_backbone(_cfg())
    assert backbone.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(backbone.state_dict())
    x = _images(4)
    a, b = backbone.train().block_outputs(x), plain.train().block_outputs(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_cbe_checkpoint_trains_a_resnet_exactly_as_without():
    """resnet-debug with CbE heads, simultaneous, two SGD steps with and without
    objective.cbe_checkpoint (alone in float32, and with objective.cbe_chunk=3 of 8 images
    in float64): equal losses, gradients of every parameter, and batch norm statistics
    (each CbE norm counts one batch per view and step); equal outputs in eval."""
    seen = []
    runs = [(["false"], torch.float32), (["true"], torch.float32)]
    runs += [(["false"], torch.float64), (["true", "3"], torch.float64)]
    for flags, dtype in runs:
        keys = [f"objective.cbe_checkpoint={flags[0]}"]
        keys += [f"objective.cbe_chunk={c}" for c in flags[1:]]
        cfg = _cfg("objective.pooling=cbe", "objective.pool_width=16", *keys)
        torch.manual_seed(0)
        model = build_model(cfg).train().to(dtype)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        steps = []
        for i in range(2):
            images = _images(8, seed=i).to(dtype)
            step = model.objective.prepare(images, StepKey(0, i, 0, 8), torch.arange(8))
            opt.zero_grad(set_to_none=True)
            losses = model.local_losses(step)
            sum(losses.values()).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            steps.append((torch.stack([losses[k] for k in sorted(losses)]).detach(), grads))
            opt.step()
        model.eval()
        with torch.no_grad():
            probe = [
                model.head_features(k, h)
                for k, h in enumerate(model.block_outputs(_images(4, seed=9).to(dtype)))
            ]
        seen.append((steps, model.state_dict(), probe))
    assert build_model(cfg).head(0).pool.chunk == 3  # the last run was the chunked one
    _same_training(seen[0], seen[1], rtol=1e-5, atol=1e-6)
    # Chunked, statistics and gradients are summed in another order; in float32 this tiny
    # model's second step amplifies rounding to 1e-3 of a gradient's scale (the plain
    # head's own distance from float64), so the chunked head is compared in float64.
    _same_training(seen[2], seen[3], rtol=1e-10, atol=1e-12)


def _same_training(a: tuple, b: tuple, rtol: float, atol: float) -> None:
    """Equal losses, gradients, states and probes of two runs within ``rtol``, ``atol``."""
    (steps_a, state_a, probe_a), (steps_b, state_b, probe_b) = a, b
    for (loss_a, grads_a), (loss_b, grads_b) in zip(steps_a, steps_b, strict=True):
        torch.testing.assert_close(loss_b, loss_a, rtol=rtol / 10, atol=atol)
        assert grads_a.keys() == grads_b.keys()
        assert any(".pool.conv." in n for n in grads_a)
        for n in grads_a:
            torch.testing.assert_close(grads_b[n], grads_a[n], rtol=rtol, atol=atol, msg=n)
    assert state_a.keys() == state_b.keys()
    for n in state_a:
        torch.testing.assert_close(state_b[n], state_a[n], rtol=rtol, atol=atol, msg=n)
    assert int(state_b["projectors.0.pool.norm.num_batches_tracked"]) == 4  # 2 steps x 2 views
    for u, v in zip(probe_a, probe_b, strict=True):
        torch.testing.assert_close(v, u, rtol=rtol, atol=atol)


# --- GlobalBatchNorm2d: two processes (gloo) versus one process on the whole batch -----------


def test_global_batch_norm_2d_in_two_processes_equals_batch_norm_on_the_whole_batch(
    tmp_path, monkeypatch
):
    import torch.multiprocessing as mp

    parts = __name__.split(".")
    root = Path(__file__).resolve().parents[len(parts) - 1]
    monkeypatch.syspath_prepend(str(root))
    mp.spawn(bn_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    x, w = bn_batch()
    ref = bn_run(nn.BatchNorm2d(4).double().train(), x, w)
    got = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    close = {"rtol": 0, "atol": 1e-10}
    torch.testing.assert_close(torch.cat([g["out"] for g in got]), ref["out"], **close)
    torch.testing.assert_close(torch.cat([g["x_grad"] for g in got]), ref["x_grad"], **close)
    for key in ("w_grad", "b_grad"):  # DDP would sum these local gradients
        torch.testing.assert_close(got[0][key] + got[1][key], ref[key], **close)
    for g in got:
        torch.testing.assert_close(g["mean"], ref["mean"], **close)
        torch.testing.assert_close(g["var"], ref["var"], **close)
    # A checkpointed CbE head (objective.cbe_checkpoint) on the split batch: its recomputed
    # expansion normalizes with the same global statistics, which move once per forward.
    # The same head chunked (objective.cbe_chunk=3 of 4 local images): the chunks' moments
    # and the backward's two per-channel sums are gathered over both processes.
    x, w = cbe_batch()
    ref = cbe_run(ConvExpansion(4, 6, 3, "l2", norm=nn.BatchNorm2d), x, w)
    for name in ("cbe", "chunk"):
        got = [torch.load(tmp_path / f"{name}{r}.pt") for r in range(2)]
        for key in ("out", "x_grad"):
            torch.testing.assert_close(torch.cat([g[key] for g in got]), ref[key], **close)
        for key in ("conv_grad", "w_grad"):
            torch.testing.assert_close(got[0][key] + got[1][key], ref[key], **close)
        for g in got:
            for key in ("mean", "var", "count"):
                torch.testing.assert_close(g[key], ref[key], **close)


def test_results_name_the_resnet():
    from bwssl.analysis.sources import model_name

    assert model_name(_full(50).model) == "resnet50"
    assert model_name(_cfg().model) == "resnet18-w8-b1111-cifar"
