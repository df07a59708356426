"""3-D rotary positions: the math, the encoder and decoder with ``model.rope``, training, export."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from bwssl.config import load_config
from bwssl.data.masking import tube_mask
from bwssl.data.transforms import normalize
from bwssl.errors import UserError
from bwssl.models.backbone import BlockInput
from bwssl.models.blockwise import build_model
from bwssl.models.decoder import Decoder
from bwssl.models.rope import (
    Rotary3D,
    grid_coords,
    index_coords,
    kept_indices,
    split_head_dim,
    token_coords,
)
from bwssl.train.trainer import train


def _cfg(*overrides: str):
    return load_config("tiny-debug", ["model.rope=true", *overrides])


def _clip(cfg, b=2, seed=0):
    d = cfg.data
    g = torch.Generator().manual_seed(seed)
    return normalize(
        torch.rand(b, d.channels, d.num_frames, d.crop_size, d.crop_size, generator=g),
        channel_dim=1,
    )


def _keep(cfg, b=2, seed=0):
    return ~tube_mask(b, cfg.token_grid, cfg.mask.ratio, torch.Generator().manual_seed(seed))


# --- the math ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head_dim,parts", [(64, (6, 16, 16, 26)), (16, (2, 4, 4, 6)), (96, (8, 24, 24, 40))]
)
def test_head_dim_split(head_dim, parts):
    assert split_head_dim(head_dim) == parts
    assert Rotary3D(head_dim).parts == parts


@pytest.mark.parametrize("head_dim", range(6, 129))
def test_split_shares_are_even_and_at_most_their_percentage(head_dim):
    d_t, d_h, d_w, rest = split_head_dim(head_dim)
    assert d_t + d_h + d_w + rest == head_dim and rest >= 0
    for d, share in zip((d_t, d_h, d_w), (0.10, 0.25, 0.25), strict=True):
        assert d % 2 == 0 and d >= 2
        # rounded down to even, unless that would leave the axis out (at least one pair)
        assert d == max(2, 2 * math.floor(share * head_dim / 2 + 1e-9))


def test_too_small_a_head_is_refused():
    with pytest.raises(ValueError, match="at least 6"):
        Rotary3D(4)


def test_frequencies_follow_the_max_wavelength():
    rot = Rotary3D(64)
    f_t, f_h, f_w = rot.frequencies()
    assert f_t.shape == (3,) and f_h.shape == (8,) and f_w.shape == (8,)
    torch.testing.assert_close(f_h, 10000.0 ** (-torch.arange(0, 16, 2) / 16))
    torch.testing.assert_close(f_t, 10000.0 ** (-torch.arange(0, 6, 2) / 6))


def test_coordinates_flatten_with_w_fastest():
    grid = (2, 3, 4)
    coords = grid_coords(grid)
    assert coords.shape == (24, 3)
    assert coords[:5].tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 0, 3], [0, 1, 0]]
    assert coords[12].tolist() == [1, 0, 0]
    idx = torch.arange(24)
    assert torch.equal(index_coords(idx, grid), coords)
    t, h, w = coords.unbind(-1)
    assert torch.equal(t * 12 + h * 4 + w, idx)


def test_kept_indices_are_the_kept_tokens_in_order():
    keep = torch.tensor([[True, False, True, True, False], [False, True, True, False, True]])
    assert kept_indices(keep, 3).tolist() == [[0, 2, 3], [1, 2, 4]]
    coords = token_coords(keep, (1, 1, 5), 2, 3, torch.device("cpu"))
    assert coords[..., 2].tolist() == [[0, 2, 3], [1, 2, 4]]
    assert token_coords(None, (1, 1, 5), 2, 5, torch.device("cpu")).shape == (2, 5, 3)
    with pytest.raises(ValueError, match="grid"):
        token_coords(None, (1, 1, 5), 2, 4, torch.device("cpu"))


@pytest.mark.parametrize("head_dim", [16, 64])
def test_logits_depend_only_on_the_relative_offset(head_dim):
    grid = (3, 3, 4)
    coords = grid_coords(grid)  # (N, 3)
    n = coords.shape[0]
    g = torch.Generator().manual_seed(0)
    q0, k0 = torch.randn(2, head_dim, generator=g, dtype=torch.float64)
    rot = Rotary3D(head_dim)
    q = rot.apply(q0.expand(1, 1, n, -1), coords[None])[0, 0]  # same content everywhere
    k = rot.apply(k0.expand(1, 1, n, -1), coords[None])[0, 0]
    logits = q @ k.T  # (N, N): query i, key j
    by_offset: dict[tuple[int, ...], list[float]] = {}
    for i in range(n):
        for j in range(n):
            offset = tuple((coords[j] - coords[i]).tolist())
            by_offset.setdefault(offset, []).append(float(logits[i, j]))
    assert len(by_offset) == 5 * 5 * 7
    for values in by_offset.values():
        assert max(values) - min(values) < 1e-5
    # different offsets, different logits (every axis matters, time included)
    firsts = sorted(v[0] for v in by_offset.values())
    assert min(b - a for a, b in itertools.pairwise(firsts)) > 1e-4
    zero = by_offset[(0, 0, 0)][0]
    for offset in [(1, 0, 0), (0, 1, 0), (0, 0, 1), (-1, 0, 0)]:
        assert abs(by_offset[offset][0] - zero) > 1e-3


def test_rotation_keeps_norms_and_leaves_the_rest_alone():
    rot = Rotary3D(64)
    x = torch.randn(2, 3, 5, 64)
    coords = torch.randint(0, 8, (2, 5, 3))
    y = rot.apply(x, coords)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(y[..., 38:], x[..., 38:])  # 6 + 16 + 16 rotated, 26 not
    assert not torch.allclose(y[..., :38], x[..., :38])
    assert torch.equal(rot.apply(x, torch.zeros_like(coords)), x)  # position 0: no turn
    assert rot.apply(x.bfloat16(), coords).dtype == torch.bfloat16


# --- the encoder ---------------------------------------------------------------------------


def test_rope_replaces_the_position_table_and_keeps_the_state_dict():
    off, on = build_model(load_config("tiny-debug")), build_model(_cfg())
    assert off.blocks[0].pos_embed is not None and off.blocks[0].rotary is None
    assert on.blocks[0].pos_embed is None
    assert all(b.rotary == Rotary3D(16) for b in on.blocks)
    assert on.head(0).pos_embed is None and off.head(0).pos_embed is not None
    assert on.state_dict().keys() == off.state_dict().keys()


def test_rope_changes_the_outputs_deterministically():
    off, on = build_model(load_config("tiny-debug")).eval(), build_model(_cfg()).eval()
    on.load_state_dict(off.state_dict())
    video = _clip(on.objective.cfg)
    with torch.no_grad():
        a, b = on.block_outputs(video), on.block_outputs(video)
        c = off.block_outputs(video)
    for x, y, z in zip(a, b, c, strict=True):
        assert torch.equal(x, y) and torch.isfinite(x).all()
        assert not torch.allclose(x, z, atol=1e-3)


def test_masked_blocks_use_the_kept_tokens_positions():
    """Kept tokens through the blocks with ``inp.keep`` equal the same tokens cut out of the
    whole clip's embedding and run with their grid positions given explicitly."""
    cfg = _cfg()
    model = build_model(cfg).eval()
    video, keep = _clip(cfg), _keep(cfg)
    idx = keep.nonzero()[:, 1].view(2, -1)  # kept tokens, in order
    coords = grid_coords(cfg.token_grid)[idx]  # (B, N_keep, 3)
    b0, b1 = model.blocks
    inp = BlockInput(keep=keep)
    with torch.no_grad():
        h0 = model.forward_block(0, video, inp)
        h1 = model.forward_block(1, h0, inp)
        tokens = torch.gather(b0.embed(video), 1, idx[..., None].expand(-1, -1, 32))
        ref0 = b0.layers(tokens, b0.rotary.tables(coords))
        ref1 = b1.norm(b1.layers(ref0, b1.rotary.tables(coords)))
        # permuting the tokens together with their positions permutes the outputs
        perm = torch.randperm(idx.shape[1], generator=torch.Generator().manual_seed(0))
        shuffled = b1.layers(ref0[:, perm], b1.rotary.tables(coords[:, perm]))
        # the same tokens at other positions (the first 8 of the grid) give other outputs
        wrong = grid_coords(cfg.token_grid)[None, :8].expand(2, -1, -1)
        elsewhere = b1.layers(ref0, b1.rotary.tables(wrong))
    assert h0.shape == (2, 8, 32)
    torch.testing.assert_close(h0, ref0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h1, ref1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shuffled, b1.layers(ref0, b1.rotary.tables(coords))[:, perm])
    assert not torch.allclose(elsewhere, b1.layers(ref0, b1.rotary.tables(coords)), atol=1e-4)


def test_attention_sees_only_relative_positions():
    """Queries and keys are both rotated: moving every token by the same offset changes no
    layer output (the model has no absolute position table)."""
    model = build_model(_cfg()).eval()
    layers, rotary = model.blocks[1].layers, model.blocks[1].rotary
    x = torch.randn(2, 24, 32, generator=torch.Generator().manual_seed(0))
    coords = grid_coords((2, 3, 4))[None].expand(2, -1, -1)
    with torch.no_grad():
        out = layers(x, rotary.tables(coords))
        moved = layers(x, rotary.tables(coords + torch.tensor([3, -2, 5])))
        time_only = layers(x, rotary.tables(coords * torch.tensor([2, 1, 1])))
    torch.testing.assert_close(moved, out, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(time_only, out, atol=1e-4)  # stretched in time: other offsets


def test_keeping_every_token_equals_no_mask():
    cfg = _cfg()
    model = build_model(cfg).eval()
    video = _clip(cfg)
    every = BlockInput(keep=torch.ones(2, cfg.num_tokens, dtype=torch.bool))
    with torch.no_grad():
        h = model.forward_block(0, video, every)
        torch.testing.assert_close(h, model.forward_block(0, video), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            model.forward_block(1, h, every), model.forward_block(1, h), rtol=0, atol=0
        )


def test_layer_view_of_a_rope_model_gives_the_same_outputs():
    cfg = _cfg()
    model = build_model(cfg).eval()
    view = model.backbone.layer_view()
    assert view is not model.backbone and view.blocks[0].pos_embed is None
    video = _clip(cfg)
    with torch.no_grad():
        outs, per_layer = model.block_outputs(video), view.block_outputs(video)
    torch.testing.assert_close(per_layer[1], outs[0], rtol=0, atol=0)
    torch.testing.assert_close(per_layer[3], outs[1], rtol=0, atol=0)


def test_activation_checkpointing_with_rope_gives_the_same_gradients():
    grads = []
    for flag in ("false", "true"):
        cfg = _cfg("regime=e2e", f"model.grad_checkpointing={flag}")
        torch.manual_seed(0)
        model = build_model(cfg)
        step = model.objective.step_from_mask(_clip(cfg), ~_keep(cfg))
        (loss,) = model.local_losses(step, detach=False).values()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "regime,steps",
    [
        ("simultaneous", ["train.max_steps=2"]),
        ("e2e", ["train.max_steps=2"]),
        # freezes a layer at steps 1, 2 and 3, and predicts its latent outputs
        ("layerlock", ["train.max_steps=4", "layerlock.start_step=1", "layerlock.interval=1"]),
    ],
)
def test_a_rope_model_trains(regime, steps, tmp_path):
    cfg = _cfg(f"regime={regime}", *steps)
    train(cfg, tmp_path / "run")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, cfg.train.max_steps + 1))
    losses = [v for r in rows for v in r["loss"].values()]
    assert losses and all(math.isfinite(v) for v in losses)
    state = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=False)
    assert "rope: true" in (tmp_path / "run" / "config.yaml").read_text()
    assert state["model"].keys() == build_model(cfg).state_dict().keys()


# --- the decoder ---------------------------------------------------------------------------


def _decoder(rope: bool) -> Decoder:
    torch.manual_seed(0)
    return Decoder(32, 32, 2, 2, 4.0, 32, 96, rope_grid=(2, 4, 4) if rope else None).eval()


def test_decoder_with_rope_predicts_from_target_positions():
    dec = _decoder(True)
    assert dec.pos_embed is None and dec.rotary == Rotary3D(16)
    visible = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1))
    visible_idx = torch.tensor([[0, 3, 5, 9, 12, 17, 20, 30]] * 2)
    targets = torch.tensor([[1, 2, 4, 6], [7, 8, 10, 11]])
    with torch.no_grad():
        out = dec(visible, visible_idx, targets)
        moved = dec(visible, visible_idx, torch.tensor([[1, 2, 4, 6], [13, 14, 15, 16]]))
        again = dec(visible, visible_idx, targets)
        table = _decoder(False)(visible, visible_idx, targets)
    assert out.shape == (2, 4, 96) and torch.isfinite(out).all()
    assert torch.equal(out, again)
    torch.testing.assert_close(out[0], moved[0])  # same targets in clip 0
    assert not torch.allclose(out[1], moved[1], atol=1e-4)  # other targets in clip 1
    # the same query content at different positions gives different predictions
    assert not torch.allclose(out[0, 0], out[0, 1], atol=1e-4)
    assert not torch.allclose(out, table, atol=1e-4)


def test_decoder_grid_must_match_the_token_count():
    with pytest.raises(ValueError, match="tokens"):
        Decoder(32, 32, 1, 2, 4.0, 30, 96, rope_grid=(2, 4, 4))


def test_masked_pixels_builds_rope_decoders():
    model = build_model(_cfg("model.shared_decoder=true"))
    dec = model.head(0)
    assert dec.rope_grid == (2, 4, 4) and dec.pos_embed is None


# --- export --------------------------------------------------------------------------------


def test_export_of_a_rope_model_is_refused(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from bwssl.interop import export_hf

    with pytest.raises(UserError, match=r"model\.rope=true"):
        export_hf(build_model(_cfg()), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
