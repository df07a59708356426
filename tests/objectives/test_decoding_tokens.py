"""LayerLock's decoding design: position-only tokens join the encoder before its last n
layers and a linear read-out per token predicts them (no separate decoder)."""

from __future__ import annotations

import pytest
import torch

from bwssl.config import ConfigError
from bwssl.data.transforms import normalize
from bwssl.models import build_model
from bwssl.models.video_vit import sinusoid_table
from bwssl.objectives import StepKey


def _video(cfg, n: int = 4) -> torch.Tensor:
    d = cfg.data
    g = torch.Generator().manual_seed(3)
    return normalize(
        torch.rand(n, d.channels, d.num_frames, d.crop_size, d.crop_size, generator=g),
        channel_dim=1,
    )


@pytest.mark.parametrize("rope", ["false", "true"])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_the_per_layer_view_and_the_block_cut_agree_wherever_the_tokens_join(
    make_cfg, rope, layers
):
    """Joining inside a block (split) and at a block boundary give the same loss."""
    cfg = make_cfg(
        "regime=e2e",
        "objective.decoding=tokens",
        f"objective.decoding_layers={layers}",
        f"model.rope={rope}",
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    step = model.objective.prepare(_video(cfg), StepKey(0, 0, 0, 4), torch.arange(4))
    (inp,) = step.block_inputs
    assert inp.decode_at == 4 - layers and inp.decode_idx is not None
    a = model.local_losses(step)[1]
    view = model.layer_view()
    b = view.local_losses(step)[3]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # The last block's output ends with one decoding token per predicted position.
    xs = step.views[0]
    for k in range(2):
        xs = model.forward_block(k, xs, inp)
    n_vis = int(inp.keep[0].sum())
    assert xs.shape[1] == n_vis + inp.decode_idx.shape[1]


def test_tokens_have_no_learned_content_and_train_the_layers_below(make_cfg):
    cfg = make_cfg("regime=e2e", "objective.decoding=tokens", "objective.decoding_layers=1")
    torch.manual_seed(0)
    model = build_model(cfg)
    heads = [k for k in model.state_dict() if k.startswith("decoders.")]
    assert sorted(heads) == [
        "decoders.1.pixels.bias",
        "decoders.1.pixels.weight",
    ]  # a linear read-out, no decoder, no token parameter
    block = model.blocks[1]
    dec = torch.tensor([[0, 5, 9]])
    tokens = block._decoding_tokens(dec, torch.zeros(1, 1, 32))
    assert torch.equal(tokens[0], sinusoid_table(model.backbone.num_tokens(0), 32)[[0, 5, 9]])
    step = model.objective.prepare(_video(cfg), StepKey(0, 0, 0, 4), torch.arange(4))
    model.local_losses(step, detach=False)[1].backward()
    # The decoding tokens read the visible ones through attention: the embedding learns.
    assert model.blocks[0].embed.proj.weight.grad.abs().sum() > 0


def test_tokens_design_is_refused_where_it_cannot_work(make_cfg):
    with pytest.raises(ConfigError, match=r"objective\.decoding"):
        make_cfg("regime=simultaneous", "objective.decoding=tokens")
    with pytest.raises(ConfigError, match=r"objective\.decoding_layers"):
        make_cfg("regime=e2e", "objective.decoding=tokens", "objective.decoding_layers=5")
    with pytest.raises(ConfigError, match=r"objective\.decoding"):
        make_cfg("regime=e2e", "objective.decoding=tokens", "objective.name=vicreg")
