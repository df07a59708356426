"""The supervised blockwise objective: cross-entropy of each block's head with the clip
labels, which reach it from the data through the trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bwssl.analysis.results import read_results
from bwssl.cli import main
from bwssl.config import ConfigError
from bwssl.data.transforms import normalize
from bwssl.models import build_model
from bwssl.objectives import StepKey, with_labels
from bwssl.objectives.joint_embedding import augmented_view
from bwssl.objectives.supervised import Supervised
from bwssl.train.trainer import Trainer, train


def _video(cfg, b=4):
    d = cfg.data
    g = torch.Generator().manual_seed(5)
    x = torch.rand(b, d.channels, d.num_frames, d.crop_size, d.crop_size, generator=g)
    return normalize(x, channel_dim=1)


def test_the_loss_is_cross_entropy_of_the_heads_logits(make_cfg):
    """With a one-width projector the head is gsp + one Linear: logits by hand, then
    F.cross_entropy with the labels, equal the block's local loss."""
    cfg = make_cfg(
        "objective.name=supervised",
        "objective.pooling=gsp",
        "objective.projector=[16]",
        "data.synthetic_classes=5",
    )
    model = build_model(cfg)
    (linear,) = model.head(1).net
    assert linear.weight.shape == (5, 32)  # the classes come from the data config
    video, labels = _video(cfg), torch.tensor([4, 0, 2, 2])
    step = with_labels(model.objective.prepare(video, StepKey(0, 0, 0, 4), torch.arange(4)), labels)
    losses = model.local_losses(step)
    h = model.block_outputs(step.views[0])
    for k in (0, 1):
        pooled = model.backbone.feature_map(k, h[k]).mean(dim=(2, 3))  # (B, C)
        logits = pooled @ model.head(k).net[0].weight.T
        torch.testing.assert_close(losses[k], F.cross_entropy(logits, labels))
    other = with_labels(step, torch.tensor([1, 1, 3, 0]))
    assert not torch.equal(model.local_losses(other)[1], losses[1])
    with pytest.raises(ValueError, match="labels"):
        model.local_losses(model.objective.prepare(video, StepKey(0, 0, 0, 4), torch.arange(4)))
    with pytest.raises(ValueError, match=r"one per clip, shape \(4,\)"):
        with_labels(step, torch.tensor([1, 2]))


def test_the_head_is_the_projector_with_its_output_cut_to_the_classes(make_cfg):
    cfg = make_cfg(
        "objective.name=supervised", "objective.projector=[24,8]", "objective.num_classes=3"
    )
    head = build_model(cfg).head(0)
    dims = [m.weight.shape for m in head.net if isinstance(m, torch.nn.Linear)]
    assert dims == [(24, 32), (3, 24)]


def test_training_sees_the_first_joint_embedding_view_and_evaluation_the_clip(make_cfg):
    cfg = make_cfg("objective.name=supervised")
    objective = build_model(cfg).objective
    video, key = _video(cfg), StepKey(0, 2, 1, 4)
    train_step = objective.prepare(video, key, torch.arange(4))
    assert torch.equal(train_step.views[0], augmented_view(cfg, video, key, torch.arange(4), 0))
    assert torch.equal(objective.prepare(video, key, torch.arange(4), train=False).views[0], video)


def test_the_clip_labels_reach_the_loss_in_training(make_cfg, tmp_path, monkeypatch):
    """Every micro-batch's loss gets the labels of its own clips (two accumulation steps)."""
    cfg = make_cfg(
        "objective.name=supervised",
        "train.max_steps=2",
        "train.batch_size=8",
        "train.accum_steps=2",
    )
    batches, seen = [], []
    step, loss = Trainer.step, Supervised.loss

    def spy_step(self, model, stage, units, batch, pos, lr):
        batches.append(batch.label.clone())
        return step(self, model, stage, units, batch, pos, lr)

    def spy_loss(self, k, outs, head, st, backbone):
        if k == 0:
            seen.append(st.labels.clone())
        return loss(self, k, outs, head, st, backbone)

    monkeypatch.setattr(Trainer, "step", spy_step)
    monkeypatch.setattr(Supervised, "loss", spy_loss)
    train(cfg, tmp_path / "run")
    assert len(batches) == 2 and len(seen) == 4
    assert torch.equal(torch.cat(seen), torch.cat(batches))
    assert len(set(torch.cat(batches).tolist())) > 1  # real labels, not a constant


def test_the_class_count_must_match_the_training_set(make_cfg, tmp_path):
    cfg = make_cfg("objective.name=supervised", "objective.num_classes=7")
    with pytest.raises(ConfigError, match=r"objective\.num_classes.*training set has 10"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run folder is written
    with pytest.raises(ConfigError, match=r"objective\.num_classes"):
        make_cfg("objective.name=supervised", "objective.num_classes=1")


def test_the_local_loss_analysis_gives_the_heads_their_labels(make_cfg, tmp_path):
    cfg = make_cfg(
        "objective.name=supervised",
        "objective.pooling=cbe",
        "objective.pool_width=64",
        "train.max_steps=2",
        "data.synthetic_classes=2",
        "data.synthetic_test=8",
    )
    train(cfg, tmp_path / "run")
    args = ["metrics=[local_loss]", "probe_repeats=1", "progress=false", "figures=false"]
    assert main(["analyze", str(tmp_path / "run"), "--out", str(tmp_path / "an"), *args]) == 0
    rows = {r.block: r.value for r in read_results(tmp_path / "an" / "results.csv")}
    assert set(rows) == {1, 2} and all(0 < v < 10 for v in rows.values())
