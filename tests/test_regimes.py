"""Stages are a checked contract, and the trainer honours every field of it."""

from __future__ import annotations

import json

import pytest
import torch

from bwssl.config import ConfigError
from bwssl.models import build_model
from bwssl.models.blockwise import BlockwiseModel
from bwssl.regimes import REGIMES, RegimeSpec, Stage, head_blocks, stages
from bwssl.train.trainer import Trainer, train


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"frozen": 1, "units": ((0,),), "loss_blocks": (0,)}, "follow the frozen prefix"),
        ({"frozen": 0, "units": ((0,), (2,)), "loss_blocks": (0,)}, "contiguously"),
        ({"frozen": 0, "units": ((1, 0),), "loss_blocks": (0,)}, "contiguously"),
        ({"frozen": 0, "units": ((0,),), "loss_blocks": (1,)}, "must be trained blocks"),
        ({"frozen": 0, "units": ((0,),), "loss_blocks": ()}, "must be trained blocks"),
        ({"frozen": 0, "units": (), "loss_blocks": (0,)}, "at least one unit"),
        ({"frozen": 0, "units": ((0,),), "loss_blocks": (0,), "steps": 0}, "steps"),
        ({"frozen": 0, "units": ((0,),), "loss_blocks": (0,), "targets": ("latent",)}, "targets"),
        ({"frozen": 0, "units": ((0,),), "loss_blocks": (0,), "carry_optimizer": True}, "first"),
        ({"frozen": 1, "units": ((1,),), "loss_blocks": (1,), "reset": (0, 1)}, "not be frozen"),
        ({"frozen": 0, "units": ((0,),), "loss_blocks": (0,), "reset": (2, 1)}, "sorted"),
    ],
)
def test_a_stage_refuses_what_the_trainer_cannot_run(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Stage(0, **kwargs)


def test_builtin_regimes_are_the_table():
    (e2e,) = stages("e2e", 3)
    assert (e2e.frozen, e2e.units, e2e.loss_blocks, e2e.isolated) == (0, ((0, 1, 2),), (2,), False)
    (sim,) = stages("simultaneous", 3)
    assert (sim.units, sim.loss_blocks, sim.isolated) == (((0,), (1,), (2,)), (0, 1, 2), True)
    seq = stages("sequential", 3)
    assert [(s.frozen, s.units, s.run_blocks) for s in seq] == [
        (0, ((0,),), 1),
        (1, ((1,),), 2),
        (2, ((2,),), 3),
    ]
    assert stages("untrained", 3) == [] and head_blocks("untrained", 3) == (2,)
    with pytest.raises(ValueError, match="unknown regime"):
        stages("nope", 2)


def test_config_names_the_registered_regimes(make_cfg):
    with pytest.raises(ConfigError, match=r"regime.*allowed: e2e, simultaneous"):
        make_cfg("regime=nope")


def _two_stage(carry: bool):
    """Block 1 for 3 steps, then blocks 1 and 2 end to end for 2 steps (optimizer state of block
    1 carried over or not); block 2's loss only in stage 2."""

    def build(k: int) -> list[Stage]:
        return [
            Stage(0, 0, ((0,),), (0,), steps=3),
            Stage(1, 0, ((0, 1),), (1,), steps=2, carry_optimizer=carry),
        ]

    return RegimeSpec(build, heads_like=None)


def _final(run):
    return torch.load(run / "checkpoints" / "final.pt", weights_only=False)["model"]


@pytest.mark.parametrize("carry", [False, True])
def test_stage_length_in_steps_and_optimizer_carry_over(carry, make_cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(REGIMES, "two_stage", _two_stage(carry))
    cfg = make_cfg(
        "regime=two_stage", "model.num_blocks=2", "train.epochs=50", "train.checkpoint_every=1"
    )
    steps_seen: list[tuple[int, int]] = []
    step = Trainer.step

    def spy(self, model, stage, units, batch, pos, lr):
        out = step(self, model, stage, units, batch, pos, lr)
        p = next(model.blocks[0].parameters())
        state = units[0].optimizer.state[p]
        steps_seen.append((stage.index, int(state["step"])))
        return out

    monkeypatch.setattr(Trainer, "step", spy)
    train(cfg, tmp_path / "run")
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in lines] == [0, 0, 0, 1, 1]  # 3 + 2 steps, not 50 epochs
    assert steps_seen == [(0, 1), (0, 2), (0, 3), (1, 4 if carry else 1), (1, 5 if carry else 2)]


def test_a_run_stopped_at_the_stage_boundary_resumes_the_carried_state(
    make_cfg, tmp_path, monkeypatch
):
    monkeypatch.setitem(REGIMES, "two_stage", _two_stage(True))
    cfg = make_cfg("regime=two_stage", "model.num_blocks=2", "train.checkpoint_every=1")
    train(cfg, tmp_path / "clean")

    calls = {"n": 0}
    step = Trainer.step

    def stop_entering_stage_two(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(Trainer, "step", stop_entering_stage_two)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed")
    monkeypatch.setattr(Trainer, "step", step)
    train(cfg, tmp_path / "resumed")
    clean, resumed = _final(tmp_path / "clean"), _final(tmp_path / "resumed")
    assert all(torch.equal(clean[n], resumed[n]) for n in clean)

    monkeypatch.setitem(REGIMES, "two_stage", _two_stage(False))
    train(cfg, tmp_path / "fresh")  # same config text, other regime definition
    fresh = _final(tmp_path / "fresh")
    assert any(not torch.equal(clean[n], fresh[n]) for n in clean if n.startswith("blocks.0."))


def test_the_baseline_regimes_are_their_stage_lists():
    (last,) = stages("last_only", 3)
    assert (last.frozen, last.units, last.loss_blocks, last.reset) == (2, ((2,),), (2,), ())
    assert head_blocks("last_only", 3) == (2,)
    first = stages("first_e2e", 3)
    assert [(s.frozen, s.units, s.loss_blocks, s.reset) for s in first] == [
        (0, ((0, 1, 2),), (2,), ()),
        (1, ((1,),), (1,), (1, 2)),
        (2, ((2,),), (2,), ()),
    ]
    assert head_blocks("first_e2e", 3) == (1, 2)  # block 1 learnt through the last block's head
    with pytest.raises(ValueError, match="carry optimizer state"):
        Stage(1, 0, ((0,),), (0,), reset=(0,), carry_optimizer=True)


def test_last_only_leaves_the_earlier_blocks_as_initialized(make_cfg, tmp_path):
    cfg = make_cfg(
        "regime=last_only", "objective.name=barlow_twins", "model.num_blocks=4", "train.max_steps=2"
    )
    torch.manual_seed(cfg.seed)
    init = build_model(cfg).state_dict()
    train(cfg, tmp_path / "run")
    final = _final(tmp_path / "run")
    for name, value in init.items():
        if name.startswith(("blocks.0.", "blocks.1.", "blocks.2.")):
            assert torch.equal(final[name], value), name  # weights and buffers
    assert any(not torch.equal(final[n], init[n]) for n in init if n.startswith("blocks.3."))


@pytest.mark.parametrize("stop_at", [3, 4], ids=["at-the-boundary", "inside-stage-2"])
def test_first_e2e_keeps_block_one_and_redraws_the_rest_exactly_on_resume(
    stop_at, make_cfg, tmp_path, monkeypatch
):
    cfg = make_cfg(
        "regime=first_e2e",
        "objective.name=barlow_twins",
        "objective.pooling=cbe",
        "objective.pool_width=64",
        "model.num_blocks=4",
        "train.max_steps=2",
        "train.checkpoint_every=1",
    )
    around: list[tuple[dict, dict]] = []
    redraw = BlockwiseModel.redraw

    def spy(self, blocks, seed):
        before = {n: t.clone() for n, t in self.state_dict().items()}
        redraw(self, blocks, seed)
        around.append((before, {n: t.clone() for n, t in self.state_dict().items()}))

    monkeypatch.setattr(BlockwiseModel, "redraw", spy)
    train(cfg, tmp_path / "clean")
    ((before, after),) = around  # once, when stage 2 starts
    for name in before:
        same = torch.equal(before[name], after[name])
        if name.startswith("blocks.0."):
            assert same, name  # the end-to-end block is kept
        elif before[name].ndim >= 2:
            assert not same, name  # blocks 2..4 and their heads are drawn afresh
    assert any(n.startswith("projectors.3.pool.") for n in before)  # trained in stage 1, reset
    clean = _final(tmp_path / "clean")
    assert all(torch.equal(clean[n], before[n]) for n in before if n.startswith("blocks.0."))

    # Stopped on stage 2's first step (its checkpoint is stage 1's end: the resumed run draws
    # the same weights) or its second (the checkpoint holds the draw: no second one).
    calls = {"n": 0}
    step = Trainer.step

    def stop_after_the_boundary(self, *args):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt
        return step(self, *args)

    monkeypatch.setattr(Trainer, "step", stop_after_the_boundary)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed")
    monkeypatch.setattr(Trainer, "step", step)
    around.clear()
    train(cfg, tmp_path / "resumed")
    assert len(around) == (1 if stop_at == 3 else 0)
    resumed = _final(tmp_path / "resumed")
    assert all(torch.equal(clean[n], resumed[n]) for n in clean)
