"""Joint-embedding objectives on the video ViT: views from the step key, projector heads,
and the analysis rows of a joint-embedding run."""

from __future__ import annotations

import pytest
import torch

from bwssl.analysis.results import read_results
from bwssl.cli import main
from bwssl.config import ConfigError, load_config
from bwssl.data.transforms import denormalize, normalize
from bwssl.models import build_model
from bwssl.models.heads import GlobalBatchNorm1d, Projector
from bwssl.objectives import StepKey
from bwssl.train.trainer import train

JOINT = ["barlow_twins", "vicreg", "simclr"]


def _video(cfg, b=4):
    d = cfg.data
    return normalize(
        torch.rand(
            b,
            d.channels,
            d.num_frames,
            d.crop_size,
            d.crop_size,
            generator=torch.Generator().manual_seed(3),
        ),
        channel_dim=1,
    )


def test_projector_is_linear_bn_relu_with_the_official_default_widths(make_cfg):
    assert load_config("deit-tiny").objective.projector == [8192, 8192, 8192]
    tiny = make_cfg("objective.name=barlow_twins")
    assert max(tiny.objective.projector) <= 64  # debug presets stay tiny under every objective
    p = Projector(16, [32, 32, 8])
    kinds = [type(m).__name__ for m in p.net]
    assert kinds == [
        "Linear",
        "GlobalBatchNorm1d",
        "ReLU",
        "Linear",
        "GlobalBatchNorm1d",
        "ReLU",
        "Linear",
    ]
    assert all(m.bias is None for m in p.net if isinstance(m, torch.nn.Linear))
    bn = GlobalBatchNorm1d(5)
    ref = torch.nn.BatchNorm1d(5)
    x = torch.randn(7, 5)
    torch.testing.assert_close(bn(x), ref(x))  # one process: plain batch norm
    torch.testing.assert_close(bn.running_var, ref.running_var)


@pytest.mark.parametrize("objective", JOINT)
def test_views_are_a_function_of_the_step_key_and_rows(objective, make_cfg):
    """Every regime and every process sees the same two views of a clip at a step."""
    model = build_model(make_cfg(f"objective.name={objective}"))
    video = _video(make_cfg())
    key = StepKey(seed=0, epoch=1, step=2, batch_size=4)
    a = model.objective.prepare(video, key, torch.arange(4))
    b = model.objective.prepare(video, key, torch.arange(4))
    assert len(a.views) == 2 and not torch.equal(a.views[0], a.views[1])
    assert all(torch.equal(x, y) for x, y in zip(a.views, b.views, strict=True))
    half = model.objective.prepare(video[2:], key, torch.tensor([2, 3]))
    for full, part in zip(a.views, half.views, strict=True):
        torch.testing.assert_close(full[2:], part)
    other = model.objective.prepare(video, StepKey(0, 1, 3, 4), torch.arange(4))
    assert not torch.equal(a.views[0], other.views[0])


def test_each_view_gets_its_own_blur_and_solarize_probability(make_cfg):
    """View 1 uses the first entry of a per-view probability, view 2 the second."""
    still = [
        "objective.name=barlow_twins",
        "objective.views.scale=[1.0,1.0]",
        "objective.views.ratio=[1.0,1.0]",
        "objective.views.flip_prob=0.0",
        "objective.views.jitter=0.0",
    ]
    cfg = make_cfg(*still, "objective.views.solarize_prob=[0.0,1.0]")
    video = _video(cfg)
    first, second = (
        build_model(cfg).objective.prepare(video, StepKey(0, 0, 0, 4), torch.arange(4)).views
    )
    torch.testing.assert_close(first, video, atol=1e-5, rtol=0)
    pixels = denormalize(video, channel_dim=1)
    want = normalize(torch.where(pixels >= 0.5, 1 - pixels, pixels), channel_dim=1)
    torch.testing.assert_close(second, want, atol=1e-5, rtol=0)
    cfg = make_cfg(*still, "objective.views.blur_prob=[1.0,0.0]")
    first, second = (
        build_model(cfg).objective.prepare(video, StepKey(0, 0, 0, 4), torch.arange(4)).views
    )
    assert not torch.allclose(first, video, atol=1e-3) and first.std() < video.std()
    torch.testing.assert_close(second, video, atol=1e-5, rtol=0)


@pytest.mark.parametrize("objective", JOINT)
def test_local_losses_are_finite_and_reach_their_projector(objective, make_cfg):
    cfg = make_cfg(f"objective.name={objective}", "regime=simultaneous")
    model = build_model(cfg)
    step = model.objective.prepare(_video(cfg), StepKey(0, 0, 0, 4), torch.arange(4))
    losses = model.local_losses(step)
    assert set(losses) == {0, 1} and all(torch.isfinite(v) for v in losses.values())
    losses[1].backward()
    assert all(p.grad is not None for p in model.head(1).parameters())
    assert all(p.grad is None for p in model.head(0).parameters())


@pytest.mark.parametrize("objective", JOINT)
def test_micro_batches_of_one_clip_are_refused_before_any_compute(objective, make_cfg):
    with pytest.raises(ConfigError, match=r"train.batch_size.*at least 2"):
        make_cfg(f"objective.name={objective}", "train.batch_size=2", "train.accum_steps=2")


def test_analyze_a_joint_embedding_run_gives_every_clip_metric_and_its_local_loss(
    make_cfg, tmp_path, capsys
):
    cfg = make_cfg(
        "objective.name=barlow_twins",
        "regime=simultaneous",
        "train.max_steps=2",
        "data.synthetic_classes=2",
        "data.synthetic_test=16",
    )
    train(cfg, tmp_path / "run")
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "run"),
                "--out",
                str(tmp_path / "an"),
                "metrics=[probe_acc,map,cka_next,cps,local_loss,mse]",
                "probe_repeats=1",
                "progress=false",
                "figures=false",
            ]
        )
        == 0
    )
    table = read_results(tmp_path / "an" / "results.csv")
    got = {(r.metric, r.block) for r in table}
    for metric in ("probe_acc", "map", "cps", "local_loss"):
        assert {(metric, 1), (metric, 2)} <= got, metric
    assert ("cka_next", 1) in got
    assert not any(r.metric == "mse" for r in table)
    assert {r.objective for r in table} == {"barlow_twins"}
