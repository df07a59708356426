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

from bwssl.config import Config, ConfigError, load_config
from bwssl.data.transforms import normalize
from bwssl.models import BACKBONES, backbone_spec, build_model
from bwssl.objectives import OBJECTIVES, StepKey, with_labels
from bwssl.regimes import REGIMES, is_layerwise, run_stages
from bwssl.train.trainer import Trainer, train
from bwssl.train.units import UnitForward

MATRIX = list(itertools.product(BACKBONES, OBJECTIVES, REGIMES))


def _cfg(make_cfg, arch: str, objective: str, regime: str, *extra: str):
    """Two steps of the backbone's debug preset; a layer-wise regime freezes its first layer
    (and switches targets) at the second. None where the backbone or the objective cannot
    serve the combination (checked: refused up front, naming the key)."""
    spec = backbone_spec(arch)
    if spec.debug_preset is not None:
        preset = spec.debug_preset

        def make_cfg(*overrides: str) -> Config:
            return load_config(preset, list(overrides))

    args = [
        f"model.arch={arch}",
        f"objective.name={objective}",
        f"regime={regime}",
        "model.num_blocks=2",
        "train.max_steps=2",
        "train.checkpoint_every=1",
        "layerlock.start_step=1",
        "layerlock.interval=1",
        "layerlock.max_frozen=1",
        *extra,
    ]
    if is_layerwise(regime) and not spec.layer_cut:
        with pytest.raises(ConfigError, match=r"'regime'.*cannot be cut per layer"):
            make_cfg(*args)
        return None
    if objective == "masked_pixels" and not spec.masks_tokens:
        with pytest.raises(ConfigError, match=r"'objective\.name'.*hides tokens"):
            make_cfg(*args)
        return None
    if is_layerwise(regime) and regime != "freeze" and objective != "masked_pixels":
        with pytest.raises(ConfigError, match=r"objective\.name"):
            make_cfg(*args)
        return None
    return make_cfg(*args)


def _stages(cfg):
    return run_stages(cfg, 2)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=False)["model"]


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("arch,objective,regime", MATRIX)
def test_two_steps_checkpoint_and_resume_to_the_same_weights(
    arch, objective, regime, make_cfg, tmp_path, monkeypatch
):
    cfg = _cfg(make_cfg, arch, objective, regime)
    if cfg is None:
        return
    train(cfg, tmp_path / "clean")
    clean = _weights(tmp_path / "clean")
    torch.manual_seed(cfg.seed)
    init = build_model(cfg).state_dict()
    assert clean.keys() == init.keys()
    trained = [n for n in clean if not torch.equal(clean[n], init[n])]
    if _stages(cfg):
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
    if _stages(cfg):
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
    if cfg is None:
        return
    torch.manual_seed(0)
    model = build_model(cfg)
    if is_layerwise(regime):
        model = model.layer_view()
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
    labels = torch.tensor([0, 1, 0, 1])
    step = with_labels(model.objective.prepare(video, StepKey(0, 0, 0, 4), torch.arange(4)), labels)
    for stage in _stages(cfg):
        model.objective.set_targets(stage.targets)
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
        cfg = _cfg(make_cfg, "video_vit", objective, regime)
        if cfg is None:
            continue
        model = build_model(cfg)
        prefix = model.head_key + "."
        keys = {k.split(".")[1] for k in model.state_dict() if k.startswith(prefix)}
        assert keys == {str(k) for k in model.head_blocks}
        if regime in ("e2e", "untrained", "last_only", "first_e2e") or is_layerwise(regime):
            assert model.head_blocks == (1,)
        else:
            assert model.head_blocks == (0, 1)


@pytest.mark.parametrize("arch", list(BACKBONES))
def test_every_backbone_has_a_debug_preset_of_its_own(arch):
    spec = backbone_spec(arch)
    assert spec.debug_preset is not None
    cfg = load_config(spec.debug_preset)
    assert cfg.model.arch == arch
    assert cfg.train.batch_size <= 8 and cfg.data.synthetic_train <= 32
