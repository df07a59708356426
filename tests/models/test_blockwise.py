from __future__ import annotations

import pytest
import torch

from bwssl.data.masking import tube_mask
from bwssl.data.transforms import normalize
from bwssl.models.blockwise import build_model
from bwssl.objectives.masked_pixels import patch_targets
from bwssl.train.units import UnitForward


def _clip(cfg, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = cfg.data
    return normalize(
        torch.rand(b, d.channels, d.num_frames, d.crop_size, d.crop_size, generator=g),
        channel_dim=1,
    )


def _mask(cfg, model, b=2, seed=0):
    return tube_mask(b, model.backbone.grid, cfg.mask.ratio, torch.Generator().manual_seed(seed))


def _losses(model, video, mask, detach=True):
    step = model.objective.step_from_mask(video, mask)
    return list(model.local_losses(step, detach=detach).values())


@pytest.mark.parametrize("k", [1, 2, 4])
def test_state_dict_groups_parameters_by_block(k, make_cfg):
    cfg = make_cfg(f"model.num_blocks={k}")
    model = build_model(cfg)
    keys = model.state_dict().keys()
    assert all(key.startswith(("blocks.", "decoders.")) for key in keys)
    assert {key.split(".")[1] for key in keys if key.startswith("blocks.")} == {
        str(i) for i in range(k)
    }
    assert {key.split(".")[1] for key in keys if key.startswith("decoders.")} == {
        str(i) for i in range(k)
    }
    assert "blocks.0.embed.proj.weight" in keys
    assert f"blocks.{k - 1}.norm.weight" in keys
    assert not any(key.startswith("blocks.0.norm") for key in keys) or k == 1


def test_e2e_has_one_decoder_at_last_block(make_cfg):
    model = build_model(make_cfg("regime=e2e", "model.num_blocks=4"))
    assert list(model.decoders.keys()) == ["3"]


def test_explicit_boundaries(make_cfg):
    cfg = make_cfg("model.depth=6", "model.num_blocks=3", "model.boundaries=[1,4]")
    model = build_model(cfg)
    assert [len(b.layers.layers) for b in model.blocks] == [1, 3, 2]


def test_block_outputs_shapes_and_no_masking(tiny):
    model = build_model(tiny).eval()
    video = _clip(tiny)
    outs = model.block_outputs(video)
    assert len(outs) == tiny.model.num_blocks
    for h in outs:
        assert h.shape == (2, tiny.num_tokens, tiny.model.embed_dim)
    # The last output is after the final norm: zero mean, unit variance per token.
    assert torch.allclose(outs[-1].mean(-1), torch.zeros(2, tiny.num_tokens), atol=1e-4)


def test_gradient_isolation_per_block(make_cfg):
    cfg = make_cfg("model.num_blocks=4")
    model = build_model(cfg)
    video, mask = _clip(cfg), _mask(cfg, model)
    losses = _losses(model, video, mask)
    assert len(losses) == 4
    for k, loss in enumerate(losses):
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        for j in range(4):
            block_grads = [p.grad for p in model.blocks[j].parameters()]
            dec_grads = [p.grad for p in model.head(j).parameters()]
            if j == k:
                assert all(g is not None and g.abs().sum() > 0 for g in dec_grads)
                assert any(g is not None and g.abs().sum() > 0 for g in block_grads)
            else:
                assert all(g is None for g in block_grads + dec_grads), (k, j)


def test_e2e_gradients_reach_first_block(make_cfg):
    cfg = make_cfg("regime=e2e", "model.num_blocks=4")
    model = build_model(cfg)
    (loss,) = _losses(model, _clip(cfg), _mask(cfg, model), detach=False)
    loss.backward()
    assert model.blocks[0].embed.proj.weight.grad.abs().sum() > 0


def test_per_block_backward_equals_summed_loss(make_cfg):
    cfg = make_cfg("model.num_blocks=4")
    torch.manual_seed(0)
    model = build_model(cfg)
    video, mask = _clip(cfg), _mask(cfg, model)
    sum(_losses(model, video, mask)).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    # The trainer's way: one unit per block, backward as soon as its loss exists.
    step = model.objective.step_from_mask(video, mask)
    xs = step.views
    for k in range(4):
        xs, losses = UnitForward(model, (k,), (0, 1, 2, 3))(xs, step)
        losses[k].backward()
        xs = [x.detach() for x in xs]
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-5, atol=1e-7)


def test_tube_mask_counts():
    grid = (4, 6, 6)
    mask = tube_mask(5, grid, 0.9, torch.Generator().manual_seed(1))
    assert mask.shape == (5, 144)
    visible = (~mask).sum(1)
    assert (visible == visible[0]).all() and visible[0] == 4 * round(36 * 0.1)
    per_frame = mask.view(5, 4, 36)
    assert (per_frame == per_frame[:, :1]).all()  # the same spatial mask in every frame


def test_normalized_targets_match_direct_formula():
    torch.manual_seed(0)
    video = normalize(torch.rand(1, 3, 4, 8, 8), channel_dim=1)
    got = patch_targets(video, tubelet=2, patch=4, normalize=True)  # (1, 2*2*2, 2*4*4*3)
    pixels = video * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1) + torch.tensor(
        [0.485, 0.456, 0.406]
    ).view(1, 3, 1, 1, 1)
    # token (t=1, h=0, w=1): frames 2-3, rows 0-3, cols 4-7
    cube = pixels[0, :, 2:4, 0:4, 4:8]  # (C, t, p, p)
    flat = cube.reshape(3, -1)  # per channel over the tubelet's pixels
    norm = (flat - flat.mean(1, keepdim=True)) / (flat.std(1, unbiased=True, keepdim=True) + 1e-6)
    expected = norm.T.reshape(-1)  # channel fastest
    token = 1 * 4 + 0 * 2 + 1
    torch.testing.assert_close(got[0, token], expected, rtol=1e-5, atol=1e-5)
    raw = patch_targets(video, tubelet=2, patch=4, normalize=False)
    torch.testing.assert_close(raw[0, token], flat.T.reshape(-1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grid", ["model.tubelet_size=2", "model.tubelet_size=1"])
def test_visible_only_embedding_equals_embedding_then_dropping(make_cfg, grid):
    """Embedding only the visible tubelets gives the tokens (and gradients) of running the
    convolution over the whole clip and dropping the masked ones."""
    cfg = make_cfg(grid)
    model = build_model(cfg)
    block = model.blocks[0]
    video, mask = _clip(cfg), _mask(cfg, model)
    fast = block.embed(video, ~mask)
    full = block.embed(video)
    slow = full[~mask].view(full.shape[0], -1, full.shape[-1])
    assert fast.shape == slow.shape
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), block.embed.proj.weight)
    (g_slow,) = torch.autograd.grad(slow.square().sum(), block.embed.proj.weight)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-4, atol=1e-4)  # summation order


@pytest.mark.parametrize("extra", [[], ["model.shared_decoder=true"]])
def test_e2e_training_does_not_depend_on_k_and_recut_renames_only(make_cfg, tmp_path, extra):
    """E2E at K=2 and K=4 train to bitwise equal weights; the re-cut state dict of the K=2
    run is the K=4 run's, key for key."""
    from bwssl.models.blockwise import recut_e2e_state
    from bwssl.train.trainer import train

    states, cfgs = {}, {}
    for k in (2, 4):
        cfgs[k] = make_cfg("regime=e2e", f"model.num_blocks={k}", "train.max_steps=3", *extra)
        train(cfgs[k], tmp_path / f"k{k}")
        states[k] = torch.load(tmp_path / f"k{k}" / "checkpoints" / "final.pt", weights_only=False)[
            "model"
        ]
    recut = recut_e2e_state(states[2], cfgs[2].model, cfgs[4].model)
    assert recut.keys() == states[4].keys()
    assert all(torch.equal(recut[n], states[4][n]) for n in recut)
    build_model(cfgs[4]).load_state_dict(recut)  # strict
    back = recut_e2e_state(recut, cfgs[4].model, cfgs[2].model)
    assert all(torch.equal(back[n], states[2][n]) for n in states[2])


def test_recut_refuses_blockwise_models(make_cfg):
    from bwssl.models.blockwise import recut_e2e_state

    cfg2, cfg4 = make_cfg("model.num_blocks=2"), make_cfg("model.num_blocks=4")
    with pytest.raises(ValueError, match="only E2E runs"):
        recut_e2e_state(build_model(cfg2).state_dict(), cfg2.model, cfg4.model)
