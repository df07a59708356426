"""Training options that cut memory or compute: decoder masking, a shared decoder,
activation checkpointing, several processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bwssl.data.masking import tube_mask
from bwssl.data.transforms import normalize
from bwssl.models.blockwise import build_model
from bwssl.objectives.masked_pixels import decoder_subset, split_indices
from bwssl.train.trainer import train


def _run(cmd: list[str], env: dict[str, str]) -> None:
    """Run ``cmd``; on failure show the end of its output (torchrun's workers' tracebacks)."""
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-4000:], done.stdout[-2000:])


def _final(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=False)["model"]


def test_decoder_masking_picks_a_seeded_subset_of_masked_tokens():
    mask = tube_mask(3, (2, 4, 4), 0.75, torch.Generator().manual_seed(0))
    _, masked = split_indices(mask)  # (3, 24)

    def subset(fraction, step):
        return decoder_subset(masked, fraction, torch.Generator().manual_seed(step))

    half = subset(0.5, 5)
    assert half.shape == (3, 12)
    for row, full in zip(half, masked, strict=True):
        assert set(row.tolist()) <= set(full.tolist())
        assert row.tolist() == sorted(row.tolist())
    assert torch.equal(half, subset(0.5, 5))
    assert not torch.equal(half, subset(0.5, 6))
    assert subset(1.0, 0) is masked


def test_decoder_masking_trains_and_is_recorded(make_cfg, tmp_path):
    train(make_cfg("mask.decoder_ratio=0.5"), tmp_path)
    assert "decoder_ratio: 0.5" in (tmp_path / "config.yaml").read_text()


def test_shared_decoder_is_one_module_trained_by_every_block(make_cfg, tmp_path):
    cfg = make_cfg("model.shared_decoder=true", "model.num_blocks=2")
    model = build_model(cfg)
    assert list(model.decoders.keys()) == ["0"]
    assert model.head(0) is model.head(1)
    torch.manual_seed(0)
    init = {k: v.clone() for k, v in build_model(cfg).state_dict().items()}
    train(cfg, tmp_path)
    final = _final(tmp_path)
    for prefix in ("blocks.0.", "blocks.1.", "decoders.0."):
        assert any(not torch.equal(init[n], final[n]) for n in init if n.startswith(prefix))


def test_compiled_units_save_plain_state_dicts(make_cfg, tmp_path):
    torch._dynamo.reset()
    train(make_cfg("train.compile=true", "train.compile_backend=eager"), tmp_path)
    keys = list(_final(tmp_path))
    assert keys and not any("_orig_mod" in k or "module." in k for k in keys)
    plain = build_model(make_cfg()).state_dict().keys()
    assert set(keys) == set(plain)


def test_activation_checkpointing_gives_the_same_gradients(make_cfg):
    grads = []
    for flag in ("false", "true"):
        cfg = make_cfg("regime=e2e", f"model.grad_checkpointing={flag}")
        torch.manual_seed(0)
        model = build_model(cfg)
        video = normalize(
            torch.rand(2, 3, 4, 32, 32, generator=torch.Generator().manual_seed(1)), channel_dim=1
        )
        mask = tube_mask(2, model.backbone.grid, 0.75, torch.Generator().manual_seed(2))
        (loss,) = model.local_losses(
            model.objective.step_from_mask(video, mask), detach=False
        ).values()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6)


RESNET_GLOBAL_BATCH = ["model.sync_bn=true", "objective.pooling=cbe", "objective.pool_width=32"]
"""A ResNet whose every batch norm, backbone and CbE head, spans the global batch. Noise stays
off: its draws depend on each process's share of the batch."""


@pytest.mark.parametrize(
    "regime,objective,preset",
    [
        ("simultaneous", "masked_pixels", "tiny-debug"),
        ("e2e", "masked_pixels", "tiny-debug"),
        ("simultaneous", "barlow_twins", "tiny-debug"),
        ("e2e", "vicreg", "tiny-debug"),
        ("layerlock", "masked_pixels", "tiny-debug"),  # freezing at steps 2 and 4, latents
        ("simultaneous", "barlow_twins", "resnet-debug"),  # with model.sync_bn and CbE heads
    ],
)
def test_two_processes_match_one_with_the_same_global_batch(regime, objective, preset, tmp_path):
    """The same weights from one process and from two splitting its batch; for joint
    embedding that needs the views, the losses and the projectors' batch norms all taken
    over the global batch, and for a ResNet its batch norms too (``model.sync_bn``) and those
    of its CbE heads (the paper's heads, whose batch norm reads the expanded map)."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None, "torchrun ships with torch"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [
        "-m",
        "bwssl",
        "train",
        preset,
        *(RESNET_GLOBAL_BATCH if preset == "resnet-debug" else []),
        f"regime={regime}",
        "train.epochs=2",
        "train.batch_size=4",
        "train.device=cpu",
        f"objective.name={objective}",
        "layerlock.start_step=2",
        "layerlock.interval=2",
        "layerlock.max_frozen=2",
        "layerlock.latent_fraction=0.5",
    ]
    _run([sys.executable, *args, "--out", str(tmp_path / "one")], env)
    _run(
        [torchrun, "--standalone", "--nproc_per_node=2", *args, "--out", str(tmp_path / "two")], env
    )
    one, two = _final(tmp_path / "one"), _final(tmp_path / "two")
    assert one.keys() == two.keys()
    assert not any(k.startswith(("module.", "_orig_mod.")) or ".module." in k for k in two)
    losses = [
        [json.loads(line)["loss"] for line in (tmp_path / r / "metrics.jsonl").open()]
        for r in ("one", "two")
    ]
    assert len(losses[0]) == len(losses[1]) == 8
    # Step 1 (no update yet) must agree for every objective; later steps drift apart for joint
    # embedding (below), so they are compared for masked pixels only.
    compared = losses if objective == "masked_pixels" else [x[:1] for x in losses]
    for a, b in zip(*compared, strict=True):
        assert a.keys() == b.keys()
        assert all(b[k] == pytest.approx(a[k], rel=1e-5) for k in a), (a, b)
    # Joint embedding: a constant shift of a block's output (its last bias) is removed by the
    # projector's batch norm, so its gradient is zero up to rounding, and AdamW turns rounding
    # noise into steps of size lr: those weights may differ by up to 2 * lr * steps.
    atol = 1e-5 if objective == "masked_pixels" else 2 * 1e-3 * 8
    for n in one:
        torch.testing.assert_close(one[n], two[n], rtol=1e-4, atol=atol)


def test_a_run_interrupted_in_one_process_resumes_in_two(tmp_path, monkeypatch):
    """Resume under a changed world size: stopped after 3 of 4 steps in one process, finished
    by torchrun with 2 processes, it ends where an uninterrupted one-process run ends."""
    from bwssl.config import load_config
    from bwssl.train.trainer import Trainer

    overrides = [
        "regime=simultaneous",
        "train.epochs=2",
        "train.batch_size=4",
        "train.device=cpu",
        "train.checkpoint_every=1",
        "data.synthetic_train=8",
        "train.progress=false",
    ]
    cfg = load_config("tiny-debug", overrides)
    train(cfg, tmp_path / "whole")

    step, calls = Trainer.step, []

    def stop_after_three(self, *args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "resumed")
    ckpt = torch.load(tmp_path / "resumed" / "checkpoints" / "last.pt", weights_only=False)
    assert ckpt["position"]["global_step"] == 3

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "bwssl",
            "train",
            "tiny-debug",
            *overrides,
            "--out",
            str(tmp_path / "resumed"),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming" in proc.stderr
    whole, resumed = _final(tmp_path / "whole"), _final(tmp_path / "resumed")
    for n in whole:
        torch.testing.assert_close(whole[n], resumed[n], rtol=1e-4, atol=1e-5)
