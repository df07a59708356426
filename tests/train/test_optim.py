"""The optimizers of a unit: LARS against the official Barlow Twins rule and, clipped,
against solo-learn's; the recipe's learning rates, a LARS run that trains and resumes
bitwise, and bad optimizer keys."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bwssl.config import ConfigError
from bwssl.models.blockwise import build_model
from bwssl.train.optim import LARS, OPTIMIZERS, build_optimizer, final_lr, peak_lr, set_lr
from bwssl.train.trainer import Trainer, lr_at, train


def official_lars_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    mus: list[torch.Tensor],
    lrs: list[float],
    weight_decay: float,
    eta: float = 0.001,
    momentum: float = 0.9,
) -> None:
    """The official Barlow Twins LARS step, transcribed with plain tensor ops: both filters
    on, so 1-D tensors get neither weight decay nor the trust ratio."""
    for p, dp, mu, lr in zip(params, grads, mus, lrs, strict=True):
        if p.ndim != 1:
            dp = dp + weight_decay * p
            param_norm = torch.sqrt((p * p).sum())
            update_norm = torch.sqrt((dp * dp).sum())
            if param_norm > 0 and update_norm > 0:
                dp = dp * (eta * param_norm / update_norm)
        mu.copy_(momentum * mu + dp)
        p.copy_(p - lr * mu)


def _tensors(gen: torch.Generator) -> list[torch.Tensor]:
    shapes = [(6, 5), (4, 3, 3, 3), (6,), (4,)]  # linear weight, conv weight, bias, norm weight
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


def test_lars_update_equals_the_official_rule_with_its_exclusions():
    gen = torch.Generator().manual_seed(0)
    start = _tensors(gen)
    params = [torch.nn.Parameter(t.clone()) for t in start]
    lrs = [1.6, 1.6, 0.0384, 0.0384]  # the recipe's weights and biases groups at batch 2048
    opt = LARS(
        [{"params": params[:2], "lr": lrs[0]}, {"params": params[2:], "lr": lrs[2]}],
        lr=0.0,
        weight_decay=0.05,
    )
    ref = [t.clone() for t in start]
    mus = [torch.zeros_like(t) for t in start]
    for _ in range(5):
        grads = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in start]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        official_lars_step(ref, grads, mus, lrs, weight_decay=0.05)
        for p, r in zip(params, ref, strict=True):
            torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-14)
    for p, mu in zip(params, mus, strict=True):
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], mu, rtol=1e-12, atol=1e-14)
    # The exclusions matter here: a 1-D tensor moved by plain SGD with momentum, not by
    # eta x its norm.
    moved = [(p.detach() - s).norm() / s.norm() for p, s in zip(params, start, strict=True)]
    assert max(moved[:2]) < 0.05 < min(moved[2:])


def solo_learn_clipped_step(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    mus: list[torch.Tensor],
    lr: float,
    weight_decay: float,
    eta: float,
    momentum: float = 0.9,
) -> list[float | None]:
    """solo-learn's LARS step with clip_lr and exclude_bias_n_norm on (vturrisi/solo-learn
    solo/utils/lars.py at 9187ea3), written from a reading of it with plain float and tensor
    ops. Returns each tensor's factor min(r / lr, 1) (None where it is not scaled)."""
    factors: list[float | None] = []
    for p, g, mu in zip(params, grads, mus, strict=True):
        w_norm, g_norm = float(p.norm()), float(g.norm())
        factor = None
        if p.ndim != 1 and w_norm != 0 and g_norm != 0:
            rate = eta * w_norm / (g_norm + weight_decay * w_norm + 1e-8)
            factor = min(rate / lr, 1.0) if lr else 1.0  # r / 0 is inf there
            g = (g + weight_decay * p) * factor  # decay only together with the scaling
        factors.append(factor)
        mu.copy_(momentum * mu + g)  # its first buffer is g itself: the same as from 0
        p.copy_(p - lr * mu)
    return factors


def test_clipped_lars_equals_solo_learn_s_rule_where_the_clip_binds_and_where_not():
    gen = torch.Generator().manual_seed(2)
    start = _tensors(gen)
    # the first weight gets a gradient 1000 x smaller than the second: its rate
    # eta ||w|| / (||g|| + wd ||w||) exceeds the lr (the clip binds), the other's does not
    grad_scale = [1e-3, 1.0, 1.0, 1.0]
    params = [torch.nn.Parameter(t.clone()) for t in start]
    opt = LARS(params, lr=0.0, eta=0.02, weight_decay=0.05, clip=True)
    ref = [t.clone() for t in start]
    mus = [torch.zeros_like(t) for t in start]
    bound, free, history = set(), set(), []
    schedule = (0.3, 0.25, 0.1, 0.05, 0.0, 0.03)  # with a step at lr 0
    for lr in schedule:
        set_lr(opt, lr)
        grads = [
            s * torch.randn(t.shape, generator=gen, dtype=torch.float64)
            for s, t in zip(grad_scale, start, strict=True)
        ]
        history.append(grads)
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        factors = solo_learn_clipped_step(ref, grads, mus, lr, weight_decay=0.05, eta=0.02)
        assert factors[2:] == [None, None]  # 1-D: raw gradient, no decay, no scaling
        for i, f in enumerate(factors[:2]):
            (bound if f == 1.0 else free).add((i, lr))
        for p, r in zip(params, ref, strict=True):
            torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-14)
    for p, mu in zip(params, mus, strict=True):
        torch.testing.assert_close(opt.state[p]["momentum_buffer"], mu, rtol=1e-12, atol=1e-14)
    # both cases happened: the first weight clipped at every lr > 0, the second never
    assert {(0, lr) for lr in schedule if lr} <= bound
    assert {(1, lr) for lr in schedule if lr} <= free
    # and the clip changes the steps: the unclipped rule, on the same gradients, ends
    # elsewhere (by a margin) for both weights
    other = [torch.nn.Parameter(t.clone()) for t in start]
    unclipped = LARS(other, lr=0.0, eta=0.02, weight_decay=0.05)
    for lr, grads in zip(schedule, history, strict=True):
        set_lr(unclipped, lr)
        for p, g in zip(other, grads, strict=True):
            p.grad = g.clone()
        unclipped.step()
    for i in (0, 1):
        moved_clip, moved_off = params[i].detach() - start[i], other[i].detach() - start[i]
        assert (moved_clip - moved_off).norm() > 0.1 * moved_clip.norm(), i


def test_clip_off_leaves_lars_bitwise_as_before():
    gen = torch.Generator().manual_seed(3)
    start = _tensors(gen)
    runs = []
    for kwargs in ({}, {"clip": False}):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = LARS(params, lr=0.4, eta=0.02, weight_decay=0.05, **kwargs)
        g = torch.Generator().manual_seed(4)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
            opt.step()
        runs.append([p.detach() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*runs, strict=True))
    # a group saved before the clip existed (no "clip" or "eps") steps unclipped
    params = [torch.nn.Parameter(t.clone()) for t in start]
    opt = LARS(params, lr=0.4, eta=0.02, weight_decay=0.05)
    for key in ("clip", "eps"):
        del opt.param_groups[0][key]
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()
    assert all(torch.equal(a.detach(), b) for a, b in zip(params, runs[0], strict=True))


@pytest.mark.parametrize("clip", [False, True])
def test_lars_config_passes_lars_clip_to_every_group(clip, make_cfg):
    cfg = make_cfg("objective.name=barlow_twins", "train.optimizer=lars", f"train.lars_clip={clip}")
    assert cfg.train.lars_clip is clip
    model = build_model(cfg)
    opt = build_optimizer(cfg.train, model, list(model.parameters()))
    assert [g["clip"] for g in opt.param_groups] == [clip, clip]


@pytest.mark.parametrize(
    "clip, weight_decay",
    [(True, 0.1), (False, 0.0)],  # clipped: raw gradient, no decay; official: ratio 1
)
def test_lars_steps_raw_gradients_for_zero_weights_or_gradients(clip, weight_decay):
    zero_w = torch.nn.Parameter(torch.zeros(3, 4))
    still = torch.nn.Parameter(torch.randn(3, 4))
    before = still.detach().clone()
    grad = torch.randn(3, 4)
    zero_w.grad, still.grad = grad.clone(), torch.zeros(3, 4)
    LARS([zero_w, still], lr=0.5, weight_decay=weight_decay, clip=clip).step()
    assert torch.equal(zero_w.detach(), -0.5 * grad)  # unscaled (ratio 1, not 0 or nan)
    assert torch.equal(still.detach(), before)  # and no decay either


@pytest.mark.parametrize("clip", [False, True])
def test_lars_state_dict_resumes_exactly(clip):
    gen = torch.Generator().manual_seed(1)
    a = [torch.nn.Parameter(t) for t in _tensors(gen)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    grads = [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in a] for _ in range(4)]

    def steps(opt, params, todo):
        for gs in todo:
            for p, g in zip(params, gs, strict=True):
                p.grad = g.clone()
            opt.step()

    opt_a = LARS(a, lr=0.3, weight_decay=1e-3, clip=clip)
    steps(opt_a, a, grads)
    opt_b = LARS(b, lr=0.3, weight_decay=1e-3, clip=clip)
    steps(opt_b, b, grads[:2])
    saved = opt_b.state_dict()
    opt_b = LARS(b, lr=0.3, weight_decay=1e-3, clip=clip)
    opt_b.load_state_dict(saved)
    steps(opt_b, b, grads[2:])
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


RECIPE = (
    "objective.name=barlow_twins",
    "train.optimizer=lars",
    "train.lr=0.2",
    "train.lr_biases=0.0048",
    "train.lr_scale_batch=256",
    "train.min_lr_ratio=0.001",
    "train.weight_decay=1e-6",
)


def test_barlow_twins_recipe_learning_rates_at_batch_2048(make_cfg):
    cfg = make_cfg(*RECIPE, "train.batch_size=2048")
    tc = cfg.train
    assert peak_lr(tc) == pytest.approx(1.6) and final_lr(tc) == pytest.approx(0.0016)
    model = build_model(cfg)
    opt = build_optimizer(tc, model, list(model.parameters()))
    assert isinstance(opt, LARS)
    weights, biases = opt.param_groups
    assert weights["params"] and all(p.ndim != 1 for p in weights["params"])
    assert biases["params"] and all(p.ndim == 1 for p in biases["params"])
    assert len(weights["params"]) + len(biases["params"]) == len(list(model.parameters()))
    total, warmup = 3000, 100  # 300 epochs with 10 of warmup, at 10 steps an epoch
    schedule = [lr_at(s, total, warmup, peak_lr(tc), final_lr(tc)) for s in range(total + 1)]
    assert schedule[0] == pytest.approx(1.6 / warmup)
    assert max(schedule) == schedule[warmup - 1] == pytest.approx(1.6)
    for step, want_w, want_b in ((warmup - 1, 1.6, 0.0384), (total, 0.0016, 0.0000384)):
        set_lr(opt, schedule[step])
        assert weights["lr"] == pytest.approx(want_w) and biases["lr"] == pytest.approx(want_b)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_holds_each_parameter_once_and_spares_1d_ones(name, make_cfg):
    cfg = make_cfg("objective.name=barlow_twins", f"train.optimizer={name}", "train.lr_biases=0.5")
    model = build_model(cfg)
    params = list(model.parameters())[::2]  # a unit trains part of the model
    opt = build_optimizer(cfg.train, model, params)
    held = [p for g in opt.param_groups for p in g["params"]]
    assert sorted(map(id, held)) == sorted(map(id, params))
    set_lr(opt, 0.1)
    for group in opt.param_groups:
        one_d = any(p.ndim == 1 for p in group["params"])
        assert group["lr"] == pytest.approx(0.1 * (0.5 / cfg.train.lr if one_d else 1.0))
        if one_d:  # no weight decay on biases and norms, by group (adamw) or by flag (lars)
            assert group["weight_decay"] == 0 or group["exclude_1d_from_decay"]


class Interrupted(Exception):
    pass


def test_tiny_barlow_twins_lars_run_trains_and_resumes_bitwise(make_cfg, tmp_path, monkeypatch):
    # 2 steps an epoch, 10 epochs, one of warmup. At the recipe's lr (0.2 x 16/256) LARS
    # barely moves these tiny weights in 20 steps; at 100 x that (same weights-to-biases
    # ratio) the loss falls.
    cfg = make_cfg(
        *RECIPE,
        "train.lr=20.0",
        "train.lr_biases=0.48",
        "train.batch_size=16",
        "data.synthetic_train=32",
        "train.warmup_epochs=1",
        "train.epochs=10",
        "train.checkpoint_every=1",
    )
    train(cfg, tmp_path / "clean")
    lines = [json.loads(x) for x in (tmp_path / "clean" / "metrics.jsonl").read_text().splitlines()]
    peak = 20.0 * 16 / 256
    assert [r["lr"] for r in lines] == pytest.approx(
        [lr_at(s, 20, 2, peak, 0.001 * peak) for s in range(20)], rel=1e-12
    )
    for block in ("0", "1"):
        loss = [r["loss"][block] for r in lines]
        assert all(math.isfinite(v) for v in loss)
        first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
        assert last < 0.8 * first, (block, first, last)

    step = Trainer.step
    calls = {"n": 0}

    def stop_at_eleventh(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:
            raise Interrupted
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", stop_at_eleventh)
    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "resumed")
    last = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)
    assert last["position"]["global_step"] == 10
    for unit in last["units"]:  # one LARS per block, with its momentum and two lr groups
        state = unit["optimizer"]
        assert state["state"] and all("momentum_buffer" in s for s in state["state"].values())
        weights, biases = state["param_groups"]
        assert weights["lr"] == pytest.approx(lines[9]["lr"], rel=1e-12)
        assert biases["lr"] == pytest.approx(lines[9]["lr"] * 0.48 / 20.0, rel=1e-12)
    monkeypatch.setattr(Trainer, "step", step)
    train(cfg, tmp_path / "resumed")
    clean = torch.load(tmp_path / "clean" / "checkpoints" / "final.pt", weights_only=False)
    resumed = torch.load(tmp_path / "resumed" / "checkpoints" / "final.pt", weights_only=False)
    for n, t in clean["model"].items():
        assert torch.equal(t, resumed["model"][n]), n


@pytest.mark.parametrize(
    "override,key",
    [
        ("train.optimizer=sgd", "train.optimizer"),
        ("train.momentum=1.0", "train.momentum"),
        ("train.lars_eta=0", "train.lars_eta"),
        ("train.lars_clip=sometimes", "train.lars_clip"),
        ("train.lr_biases=-0.1", "train.lr_biases"),
        ("train.min_lr_ratio=1.5", "train.min_lr_ratio"),
        ("train.lr_scale_batch=0", "train.lr_scale_batch"),
    ],
)
def test_bad_optimizer_values_name_their_key(override, key, make_cfg):
    with pytest.raises(ConfigError, match=rf"'{key}'"):
        make_cfg(override)
