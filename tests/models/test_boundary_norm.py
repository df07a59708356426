"""``model.boundary_norm``: a LayerNorm at the end of every block, not only the last."""

from __future__ import annotations

import pytest
import torch

from bwssl.config import load_config
from bwssl.data.transforms import normalize
from bwssl.errors import UserError
from bwssl.models.blockwise import build_model
from bwssl.train.trainer import train


def _clip(cfg, b: int = 2) -> torch.Tensor:
    d = cfg.data
    x = torch.rand(b, d.channels, d.num_frames, d.crop_size, d.crop_size)
    return normalize(x, channel_dim=1)


def _token_stats(h: torch.Tensor) -> tuple[float, float]:
    """Largest |mean| and |std - 1| over the tokens of (B, N, D)."""
    mean = h.mean(dim=-1).abs().max().item()
    std = (h.var(dim=-1, unbiased=False).sqrt() - 1).abs().max().item()
    return mean, std


@pytest.mark.parametrize("on", [False, True])
def test_every_block_output_is_normalized_only_with_the_option(on: bool) -> None:
    torch.manual_seed(0)
    cfg = load_config(
        "tiny-debug", ["model.depth=6", "model.num_blocks=3", f"model.boundary_norm={on}"]
    )
    model = build_model(cfg).eval()
    with torch.no_grad():
        outs = model.block_outputs(_clip(cfg))
    normalized = [max(_token_stats(h)) < 1e-3 for h in outs]
    assert normalized == ([True] * 3 if on else [False, False, True])
    norms = [n for n in model.state_dict() if n.startswith("blocks.") and ".norm." in n]
    assert len(norms) == (6 if on else 2)  # weight and bias per normalized block


def test_layer_view_keeps_the_boundary_norms(make_cfg) -> None:
    cfg = make_cfg("model.boundary_norm=true")  # depth 4, K 2: norms after layers 2 and 4
    model = build_model(cfg).eval()
    view = model.layer_view()
    x = _clip(cfg)
    with torch.no_grad():
        blocks, layers = model.block_outputs(x), view.block_outputs(x)
    assert torch.allclose(layers[1], blocks[0], atol=1e-6)
    assert torch.allclose(layers[3], blocks[1], atol=1e-6)


@pytest.mark.parametrize("regime", ["sequential", "freeze"])
def test_trains_and_refuses_export(regime: str, make_cfg, tmp_path) -> None:
    from bwssl.interop.hf import export_hf

    extra = ["layerlock.start_step=1", "layerlock.interval=1"] if regime == "freeze" else []
    steps = 4 if regime == "freeze" else 2  # freeze: 3 freezing events inside the run
    cfg = make_cfg(
        "model.boundary_norm=true", f"regime={regime}", f"train.max_steps={steps}", *extra
    )
    train(cfg, tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "final.pt").exists()
    with pytest.raises(UserError, match="boundary_norm"):
        export_hf(tmp_path / "run", tmp_path / "hf")
