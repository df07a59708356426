"""Every registered (backbone, objective, regime) is a valid run of the one training loop.

The matrix is read from the registries, so a new entry there is tested here
without a new test file: it trains two steps, checkpoints, resumes to the
same weights after an interruption, and, where the regime isolates blocks,
no gradient crosses a block boundary.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from bwssl.data.transforms import normalize
from bwssl.models import BACKBONES, build_model
from bwssl.objectives import OBJECTIVES, StepKey
from bwssl.regimes import REGIMES, stages
from bwssl.train.trainer import Trainer, train
from bwssl.train.units import UnitForward

MATRIX = list(itertools.product(BACKBONES, OBJECTIVES, REGIMES))


def _cfg(make_cfg, arch: str, objective: str, regime: str, *extra: str):
    return make_cfg(
        f"model.arch={arch}",
        f"objective.name={objective}",
        f"regime={regime}",
        "model.num_blocks=2",
        "train.max_steps=2",
        "train.checkpoint_every=1",
        *extra,
    )


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=False)["model"]


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("arch,objective,regime", MATRIX)
def test_two_steps_checkpoint_and_resume_to_the_same_weights(
    arch, objective, regime, make_cfg, tmp_path, monkeypatch
):
    cfg = _cfg(make_cfg, arch, objective, regime)
    train(cfg, tmp_path / "clean")
    clean = _weights(tmp_path / "clean")
    torch.manual_seed(cfg.seed)
    init = build_model(cfg).state_dict()
    assert clean.keys() == init.keys()
    trained = [n for n in clean if not torch.equal(clean[n], init[n])]
    if stages(regime, 2):
        assert any(n.startswith("blocks.") for n in trained), "no block was trained"
    else:
        assert not trained, "a regime without stages changed weights"

    # The same run, stopped after its first optimizer step, then resumed.
    calls = {"n": 0}
    step = Trainer.step

    def stop_at_second(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupted
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", stop_at_second)
    if stages(regime, 2):
        with pytest.raises(Interrupted):
            train(cfg, tmp_path / "resumed")
        assert not (tmp_path / "resumed" / "checkpoints" / "final.pt").exists()
    monkeypatch.setattr(Trainer, "step", step)
    train(cfg, tmp_path / "resumed")
    resumed = _weights(tmp_path / "resumed")
    for n in clean:
        assert torch.equal(clean[n], resumed[n]), n


@pytest.mark.parametrize("arch,objective,regime", MATRIX)
def test_no_gradient_crosses_a_unit_boundary(arch, objective, regime, make_cfg):
    """In every stage each unit's losses reach exactly that unit's blocks and heads: with one
    unit per block (blockwise regimes) no gradient crosses a block boundary."""
    cfg = _cfg(make_cfg, arch, objective, regime)
    torch.manual_seed(0)
    model = build_model(cfg)
    d = cfg.data
    video = normalize(
        torch.rand(
            4,
            d.channels,
            d.num_frames,
            d.crop_size,
            d.crop_size,
            generator=torch.Generator().manual_seed(1),
        ),
        channel_dim=1,
    )
    step = model.objective.prepare(video, StepKey(0, 0, 0, 4), torch.arange(4))
    for stage in stages(regime, model.num_blocks):
        xs = step.views
        with torch.no_grad():
            for k in range(stage.frozen):
                xs = [
                    model.forward_block(k, x, inp)
                    for x, inp in zip(xs, step.block_inputs, strict=True)
                ]
        for unit in stage.units:
            model.zero_grad(set_to_none=True)
            xs, losses = UnitForward(model, unit, stage.loss_blocks)(xs, step)
            assert set(losses) == set(unit) & set(stage.loss_blocks)
            sum(losses.values()).backward()
            mine = {id(p) for k in unit for p in model.block_params(k)}
            for name, p in model.named_parameters():
                if id(p) not in mine:
                    assert p.grad is None, (stage.index, unit, name)
            assert any(
                p.grad is not None and p.grad.abs().sum() > 0
                for k in unit
                for p in model.blocks[k].parameters()
            )
            xs = [x.detach() for x in xs]
        if stage.isolated:
            assert all(len(u) == 1 for u in stage.units)


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_every_objective_has_heads_only_where_its_regime_has_losses(objective, make_cfg):
    for regime in REGIMES:
        model = build_model(_cfg(make_cfg, "video_vit", objective, regime))
        prefix = model.head_key + "."
        keys = {k.split(".")[1] for k in model.state_dict() if k.startswith(prefix)}
        assert keys == {str(k) for k in model.head_blocks}
        if regime in ("e2e", "untrained"):
            assert model.head_blocks == (1,)
        else:
            assert model.head_blocks == (0, 1)
