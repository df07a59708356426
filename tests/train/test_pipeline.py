"""Block-parallel training (train.parallel=blocks): processes that each train their own blocks
end where one process training them all ends; layouts, checkpoints, failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bwssl.config import ConfigError, load_config
from bwssl.errors import UserError
from bwssl.regimes import simultaneous
from bwssl.train.pipeline_layout import PipelineLayout
from bwssl.train.trainer import train

HERE = Path(__file__).parent
BASE = [
    "train.epochs=2",
    "train.batch_size=4",
    "train.device=cpu",
    "train.progress=false",
    "train.checkpoint_every=3",
    "train.log_every=1",
]
"""Two epochs of four steps, a checkpoint mid-epoch."""


def _torchrun() -> str:
    found = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert found is not None, "torchrun ships with torch"
    return found


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``cmd``; on failure show the end of its output (the workers' tracebacks)."""
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, (done.returncode, done.stderr[-4000:], done.stdout[-2000:])
    return done


def _final(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "final.pt", weights_only=True)["model"]


def _assert_same(one: Path, other: Path) -> None:
    a, b = _final(one), _final(other)
    assert list(a) == list(b)
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)


def _pipelines(
    tmp_path: Path, nproc: int, runs: dict[str, list[str]], layout: tuple[str, ...] = ()
) -> None:
    """Train ``runs`` (name: overrides) block-parallel in ``nproc`` torchrun processes (with
    the ``layout`` overrides), and each again in this process without the pipeline (the
    reference, under ``NAME-one``)."""
    spec = [
        [str(tmp_path / name), [*BASE, *o, "train.parallel=blocks", *layout]]
        for name, o in runs.items()
    ]
    (tmp_path / "runs.json").write_text(json.dumps(spec))
    _run(
        [
            _torchrun(),
            "--standalone",
            f"--nproc_per_node={nproc}",
            str(HERE / "pipeline_runs.py"),
            str(tmp_path / "runs.json"),
        ]
    )
    for name, overrides in runs.items():
        train(load_config("tiny-debug", [*BASE, *overrides]), tmp_path / f"{name}-one")


def test_two_processes_end_with_the_weights_of_one_for_every_objective(tmp_path):
    """One block per process, and two (K=4 on 2 processes), for every objective; the metrics
    lines are the single process's; each process holds only its blocks' training state."""
    one_epoch = "train.epochs=1"
    runs = {
        "pixels": [],
        "barlow": ["objective.name=barlow_twins", "model.num_blocks=4", one_epoch],
        "vicreg": ["objective.name=vicreg", one_epoch],
        "simclr": ["objective.name=simclr", one_epoch],
    }
    _pipelines(tmp_path, 2, runs)
    for name in runs:
        _assert_same(tmp_path / f"{name}-one", tmp_path / name)
    lines = [
        [json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
        for r in ("pixels-one", "pixels")
    ]
    assert [x["step"] for x in lines[1]] == list(range(1, 9)) == [x["step"] for x in lines[0]]
    for a, b in zip(*lines, strict=True):
        assert b["loss"].keys() == a["loss"].keys()
        assert all(b["loss"][k] == pytest.approx(a["loss"][k], rel=1e-6) for k in a["loss"])
        assert b["lr"] == a["lr"] and len(b["pipeline_busy_ms"]) == 2
    # Every process held only its blocks' training state; together, the whole model's.
    layout = json.loads((tmp_path / "barlow" / "pipeline.json").read_text())
    ranks = layout["ranks"]
    assert [r["blocks"] for r in ranks] == [[0, 1], [2, 3]]
    model = load_config("tiny-debug", ["model.num_blocks=4", "objective.name=barlow_twins"])
    from bwssl.models.blockwise import build_model

    params = sum(p.numel() for p in build_model(model).parameters())
    whole = sum(r["state_bytes"] for r in ranks)
    assert whole == pytest.approx(3 * 4 * params, rel=0.01)  # weights, two AdamW moments
    assert all(r["state_bytes"] < 0.7 * whole for r in ranks)
    assert layout["pipeline_stages"] == 2 and layout["replicas"] == 1
    eight_steps = json.loads((tmp_path / "pixels" / "pipeline.json").read_text())
    assert eight_steps["efficiency"] > 0 and eight_steps["ranks"][1]["steps"] == 8


def test_two_stages_of_two_replicas_end_with_the_weights_of_one_process(tmp_path):
    """Replicas split every batch as data-parallel processes do; joint embedding's batch
    statistics are gathered over a stage's replicas only."""
    barlow = ["objective.name=barlow_twins", "train.epochs=1"]
    _pipelines(tmp_path, 4, {"pixels": [], "barlow": barlow}, ("train.pipeline_stages=2",))
    _assert_same(tmp_path / "pixels-one", tmp_path / "pixels")
    # Joint embedding: the batch norm of the projector removes a constant shift of a block's
    # output (its last bias), whose gradient is so zero up to rounding; the rounding of a sum
    # over two replicas differs from one process's, and AdamW turns that noise into steps of
    # size lr. Those weights may differ by up to 2 * lr * steps, as in a data-parallel run.
    one, two = _final(tmp_path / "barlow-one"), _final(tmp_path / "barlow")
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=2 * 1e-3 * 4)
    layout = json.loads((tmp_path / "pixels" / "pipeline.json").read_text())
    assert [(r["stage"], r["replica"], r["blocks"]) for r in layout["ranks"]] == [
        (0, 0, [0]),
        (0, 1, [0]),
        (1, 0, [1]),
        (1, 1, [1]),
    ]


def test_the_layout_splits_units_evenly_and_pairs_replicas():
    stage = simultaneous(5)[0]
    lay = PipelineLayout.of(world=4, rank=3, stages=2)
    assert (lay.stage, lay.replica, lay.previous, lay.next, lay.lag) == (1, 1, 1, None, 0)
    assert lay.split(stage) == [((0,), (1,), (2,)), ((3,), (4,))]
    assert lay.blocks(stage) == (3, 4)
    first = PipelineLayout.of(world=4, rank=1, stages=2)
    assert (first.previous, first.next, first.lag) == (None, 3, 1)
    with pytest.raises(UserError, match=r"train\.pipeline_stages=3 must divide the 4"):
        PipelineLayout.of(world=4, rank=0, stages=3)
    with pytest.raises(UserError, match="only 5 gradient-isolated units"):
        PipelineLayout.of(world=6, rank=0, stages=6).split(stage)


@pytest.mark.parametrize(
    "overrides,match",
    [
        (["regime=e2e"], "cannot pipeline regime e2e: its stage 1 trains its blocks end to end"),
        (["regime=sequential"], "regime sequential: its stage 1 trains one block at a time"),
        (["regime=layerlock"], "cannot pipeline regime layerlock"),
        (["model.shared_decoder=true"], "model.shared_decoder=true shares one"),
        (["train.pipeline_stages=3"], "train.pipeline_stages.*must be <= the 2 blocks"),
    ],
)
def test_regimes_that_cannot_be_pipelined_are_refused_naming_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match) as e:
        load_config("tiny-debug", ["train.parallel=blocks", *overrides])
    assert "'train." in str(e.value)
    if "regime=" in overrides[0]:
        assert "(simultaneous)" in str(e.value)


def _worker(parent: int, rank: int) -> int:
    """The pid of torchrun ``parent``'s worker of ``rank`` (read from /proc)."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in env:
                return int(child)
    raise AssertionError(f"no worker of rank {rank} under {parent}")


def _lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def test_a_killed_process_takes_the_others_down_and_the_run_resumes_in_any_layout(
    tmp_path, monkeypatch
):
    """SIGKILL one process of a pipeline: the others end within the timeout, never hang. The
    run continues in one process (stopped again two steps later), then as a pipeline again,
    and ends with the weights of an uninterrupted single-process run."""
    import signal
    import time

    from bwssl.train.trainer import Trainer

    overrides = [*BASE, "train.epochs=4", "train.checkpoint_every=1", "train.dist_timeout_s=20"]
    run = tmp_path / "run"
    cmd = [_torchrun(), "--standalone", "--nproc_per_node=2", "-m", "bwssl", "train"]
    cmd += ["tiny-debug", *overrides, "train.parallel=blocks", "--out", str(run)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _lines(run) < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the kill"
    os.kill(_worker(proc.pid, 1), signal.SIGKILL)
    killed = time.time()
    proc.communicate(timeout=60)
    assert proc.returncode != 0 and time.time() - killed < 20
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    done = ckpt["position"]["global_step"]
    assert 3 <= done < 16 and not (run / "checkpoints" / "final.pt").exists()

    # On in one process, stopped after two more steps (a checkpoint at every step) ...
    cfg = load_config("tiny-debug", overrides)
    step, calls = Trainer.step, []

    def stop_after_two(self, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(1)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "step", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, run)
    monkeypatch.setattr(Trainer, "step", step)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["position"]["global_step"] == done + 2
    changes = [json.loads(x)["changed"] for x in (run / "resumes.jsonl").read_text().splitlines()]
    assert changes[0] == {"train.parallel": ["blocks", "none"]}

    # ... and finished as a pipeline again.
    finished = _run(cmd)
    assert "resuming" in finished.stderr
    train(cfg, tmp_path / "whole")
    _assert_same(tmp_path / "whole", run)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 17))
