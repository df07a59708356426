"""Layer-wise regimes: progressive freezing and LayerLock's moving targets.

The tiny-debug model has 4 layers cut into 2 blocks; 16 training clips in
batches of 4 give 4 steps per epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bwssl.cli import main
from bwssl.config import ConfigError
from bwssl.models import build_model
from bwssl.regimes import freezing_events, run_stages
from bwssl.train.trainer import Trainer, train

SCHEDULE = (
    "train.epochs=4",  # 16 steps
    "layerlock.start_step=4",
    "layerlock.interval=4",
    "layerlock.max_frozen=2",
)


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _layer_params(model, layer: int) -> dict[str, torch.Tensor]:
    """Parameters of encoder layer ``layer`` of the tiny-debug model (2 layers per block),
    with the patch embedding for layer 0, by their stored names."""
    block, j = divmod(layer, 2)
    prefixes = [f"blocks.{block}.layers.layers.{j}."] + (["blocks.0.embed."] if layer == 0 else [])
    return {n: p for n, p in model.named_parameters() if any(n.startswith(x) for x in prefixes)}


def test_schedule_of_events_and_stages(make_cfg):
    cfg = make_cfg("regime=layerlock", *SCHEDULE, "layerlock.switch_warmup_steps=2")
    assert freezing_events(cfg, 16) == [(4, 1), (8, 2)]
    s = run_stages(cfg, 16)
    assert [(x.frozen, x.targets, x.lr_offset, x.steps) for x in s] == [
        (0, ("pixels",), 0, 4),
        (1, ("layer:0",), 4, 4),
        (2, ("layer:1",), 8, None),
    ]
    assert [x.rewarm_steps for x in s] == [0, 2, 2]
    every = make_cfg("regime=layerlock", *SCHEDULE, "layerlock.targets=all")
    assert run_stages(every, 16)[-1].targets == ("pixels", "layer:0", "layer:1")
    frozen_only = run_stages(make_cfg("regime=freeze", *SCHEDULE), 16)
    assert [x.targets for x in frozen_only] == [("pixels",)] * 3
    assert [x.frozen for x in run_stages(make_cfg("regime=latent", *SCHEDULE), 16)] == [0, 0, 0]
    # Defaults: first event at half of the run, up to three quarters of the depth frozen by
    # three quarters of the run.
    default = make_cfg("regime=freeze", "model.depth=8", "model.num_blocks=2")
    assert freezing_events(default, 400) == [
        (200, 1),
        (216, 2),
        (232, 3),
        (248, 4),
        (264, 5),
        (280, 6),
    ]


def test_frozen_layers_never_get_a_gradient_and_stay_bitwise(make_cfg, tmp_path, monkeypatch):
    """With weight decay on, layers frozen at step s are bitwise equal to their state at s for
    the rest of the run, and no gradient is ever computed for them from s on."""
    cfg = make_cfg("regime=layerlock", *SCHEDULE, "train.weight_decay=0.1")
    assert cfg.train.weight_decay > 0
    now = {"step": 0}
    grads: dict[int, list[int]] = {0: [], 1: [], 2: [], 3: []}
    snaps: list[dict[str, torch.Tensor]] = []
    step = Trainer.step

    def spy(self, model, *args, **kwargs):
        if not snaps:  # first call: hook every parameter of the stored model
            for layer in grads:
                for p in _layer_params(self.model, layer).values():
                    p.register_hook(lambda g, layer=layer: grads[layer].append(now["step"]) or g)
            snaps.append({n: p.detach().clone() for n, p in self.model.named_parameters()})
        out = step(self, model, *args, **kwargs)
        now["step"] += 1
        snaps.append({n: p.detach().clone() for n, p in self.model.named_parameters()})
        return out

    monkeypatch.setattr(Trainer, "step", spy)
    train(cfg, tmp_path)
    assert len(snaps) == 17  # before step 1, after each of the 16 steps
    torch.manual_seed(cfg.seed)
    names = {layer: list(_layer_params(build_model(cfg), layer)) for layer in grads}
    for layer, frozen_at in ((0, 4), (1, 8)):
        # Gradients reached the layer in every step before its freeze, none after.
        assert sorted(set(grads[layer])) == list(range(frozen_at))
        for n in names[layer]:
            assert not torch.equal(snaps[0][n], snaps[frozen_at][n]) or "bias" in n
            for later in snaps[frozen_at:]:
                assert torch.equal(snaps[frozen_at][n], later[n]), (layer, n)
    for layer in (2, 3):  # never frozen: trained throughout
        assert sorted(set(grads[layer])) == list(range(16))


def test_targets_switch_at_the_scheduled_steps_each_with_a_new_head(
    make_cfg, tmp_path, monkeypatch
):
    cfg = make_cfg("regime=layerlock", *SCHEDULE, "layerlock.switch_warmup_steps=2")
    snaps: list[dict[str, torch.Tensor]] = []
    step = Trainer.step

    def spy(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        snaps.append({n: p.detach().clone() for n, p in self.model.named_parameters()})
        return out

    monkeypatch.setattr(Trainer, "step", spy)
    train(cfg, tmp_path)
    rows = _metrics(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 17))
    want = [["pixels"]] * 4 + [["layer:0"]] * 4 + [["layer:1"]] * 8
    assert [r["targets"] for r in rows] == want
    assert [r["frozen"] for r in rows] == [0] * 4 + [1] * 4 + [2] * 8
    # The learning rate ramps up again after each switch (2 steps).
    lrs = [r["lr"] for r in rows]
    assert lrs[4] < lrs[5] and lrs[8] < lrs[9]
    torch.manual_seed(cfg.seed)
    init = dict(build_model(cfg).named_parameters())
    heads = {
        "pixels": "decoders.1.decoder.head.weight",
        "layer:0": "decoders.1.readouts.0.weight",
        "layer:1": "decoders.1.readouts.1.weight",
    }
    assert set(heads.values()) <= set(init)
    for target, name in heads.items():
        active = [i for i, t in enumerate(want) if t == [target]]
        before = [init[name]] + [snaps[i][name] for i in range(active[0])]
        # Untouched until its switch (no gradient, no weight decay), then trained.
        assert all(torch.equal(init[name], b) for b in before), target
        assert not torch.equal(init[name], snaps[active[-1]][name]), target
        after = snaps[active[-1] :]
        if target != "layer:1":  # once replaced, a head is no longer updated
            assert all(torch.equal(after[0][name], a[name]) for a in after), target


def test_resume_across_freezing_events_gives_the_same_weights(make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg(
        "regime=layerlock", *SCHEDULE, "train.checkpoint_every=3", "layerlock.switch_warmup_steps=2"
    )
    train(cfg, tmp_path / "clean")
    calls = {"n": 0}
    step = Trainer.step

    class Stop(Exception):
        pass

    def stop(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:  # after the checkpoint of step 9, in the third stage
            raise Stop
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", stop)
    with pytest.raises(Stop):
        train(cfg, tmp_path / "resumed")
    monkeypatch.setattr(Trainer, "step", step)
    train(cfg, tmp_path / "resumed")
    a = torch.load(tmp_path / "clean/checkpoints/final.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "resumed/checkpoints/final.pt", weights_only=False)["model"]
    for n in a:
        assert torch.equal(a[n], b[n]), n
    assert [r["step"] for r in _metrics(tmp_path / "resumed")] == list(range(1, 17))


@pytest.mark.parametrize(
    "override,key",
    [
        ("layerlock.interval=0", "layerlock.interval"),
        ("layerlock.start_step=0", "layerlock.start_step"),
        ("layerlock.layers_per_event=0", "layerlock.layers_per_event"),
        ("layerlock.max_frozen=4", "layerlock.max_frozen"),  # the whole depth
        ("layerlock.max_frozen=9", "layerlock.max_frozen"),
        ("layerlock.max_frozen=0.1", "layerlock.max_frozen"),  # no layer at depth 4
        ("layerlock.max_frozen=2.5", "layerlock.max_frozen"),
        ("layerlock.layers_per_event=3", "layerlock.layers_per_event"),
        ("layerlock.latent_fraction=0", "layerlock.latent_fraction"),
        ("layerlock.start_step=16", "layerlock.start_step"),  # past the 16 steps
        ("layerlock.interval=20", "layerlock.interval"),
        ("objective.name=vicreg", "objective.name"),  # no latent targets
    ],
)
def test_bad_schedules_are_refused_before_compute(override, key, tmp_path, capsys):
    args = ["train", "tiny-debug", "regime=layerlock", *SCHEDULE, override]
    code = main([*args, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error:") and key in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_freeze_runs_with_a_joint_embedding_objective(make_cfg, tmp_path):
    cfg = make_cfg("regime=freeze", "objective.name=barlow_twins", *SCHEDULE)
    train(cfg, tmp_path)
    assert [r["frozen"] for r in _metrics(tmp_path)][::4] == [0, 1, 2, 2]


def test_the_layer_view_shares_every_parameter(make_cfg):
    model = build_model(make_cfg("regime=layerlock", *SCHEDULE))
    view = model.layer_view()
    assert view.num_blocks == 4 and model.num_blocks == 2
    ids = {id(p) for p in model.parameters()}
    assert {id(p) for p in view.parameters()} == ids
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        a = model.block_outputs(x)[-1]
        b = view.block_outputs(x)[-1]
    assert torch.equal(a, b)
    assert view.head(3) is model.head(1)
    with pytest.raises(ConfigError):
        make_cfg("regime=layerlock", "layerlock.max_frozen=4")


@pytest.mark.parametrize("rope", ["false", "true"])
def test_layerlock_with_decoding_tokens_and_rotary_positions(make_cfg, tmp_path, rope):
    cfg = make_cfg(
        "regime=layerlock",
        *SCHEDULE,
        "objective.decoding=tokens",
        "objective.decoding_layers=2",
        f"model.rope={rope}",
        "mask.kind=random",
    )
    train(cfg, tmp_path)
    rows = _metrics(tmp_path)
    assert [r["targets"] for r in rows][::4] == [["pixels"], ["layer:0"], ["layer:1"], ["layer:1"]]
    assert all(torch.isfinite(torch.tensor(r["loss"]["1"])) for r in rows)
    final = torch.load(tmp_path / "checkpoints/final.pt", weights_only=False)["model"]
    assert {"decoders.1.readouts.0.weight", "decoders.1.readouts.1.weight"} <= set(final)


def test_a_layerlock_run_is_analysed_on_its_latent_target_and_its_pixel_head(make_cfg, tmp_path):
    from bwssl.analysis.options import options_from_overrides
    from bwssl.analysis.results import read_results
    from bwssl.analysis.suite import analyze

    cfg = make_cfg("regime=layerlock", *SCHEDULE)
    train(cfg, tmp_path / "run")
    opts = options_from_overrides(
        ["metrics=[mse,local_loss]", "mse_clips=8", "batch_size=8", "progress=false"]
    )
    rows = read_results(analyze([tmp_path / "run"], tmp_path / "analysis", opts))
    got = {r.metric: r.value for r in rows}
    assert set(got) == {"mse", "local_loss"}
    # local_loss scores the last target (layer 1's output), mse the pixel read-out.
    assert got["mse"] != got["local_loss"]
    assert all(r.block == 2 for r in rows)
