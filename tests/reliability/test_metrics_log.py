"""metrics.jsonl: a torn last line never blocks a resume, and no step is logged twice."""

from __future__ import annotations

import json
import logging

from bwssl.base.rundir import RunDir, read_metrics
from bwssl.train.trainer import train

from .helpers import config, metric_steps, train_until

TORN = '{"step": 6, "stage": 0, "epoch": 1, "loss": {"0": 1.07'
"""The start of a line, as a process killed in the middle of writing it leaves it."""


def test_a_torn_last_line_is_dropped_on_resume(tmp_path, monkeypatch, caplog):
    cfg = config("train.checkpoint_every=3")
    train(cfg, tmp_path / "whole")
    run = tmp_path / "torn"
    train_until(cfg, run, 5, monkeypatch)  # last.pt at step 3; steps 1-5 logged
    with (run / "metrics.jsonl").open("a") as f:
        f.write(TORN)
    with caplog.at_level(logging.WARNING):
        train(cfg, run)
    assert "dropped 1 line that is not JSON" in caplog.text
    assert metric_steps(run) == metric_steps(tmp_path / "whole") == list(range(1, 9))


def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(tmp_path, monkeypatch):
    cfg = config("train.checkpoint_every=100")
    run = tmp_path / "run"
    train_until(cfg, run, 3, monkeypatch)
    assert not RunDir(run).last.exists() and metric_steps(run) == [1, 2, 3]
    train(cfg, run)
    assert metric_steps(run) == list(range(1, 9))


def test_a_run_killed_before_its_first_checkpoint_with_a_torn_line(tmp_path, monkeypatch):
    cfg = config("train.checkpoint_every=100")
    run = tmp_path / "run"
    train_until(cfg, run, 2, monkeypatch)
    with (run / "metrics.jsonl").open("a") as f:
        f.write(TORN)
    train(cfg, run)
    assert metric_steps(run) == list(range(1, 9))


def test_readers_skip_torn_lines(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n[1, 2]\n' + TORN)
    with caplog.at_level(logging.WARNING):
        assert read_metrics(path) == [{"step": 1}, {"step": 2}]
    assert "skipped 2 lines" in caplog.text


def test_truncate_keeps_the_lines_up_to_the_checkpoint_untouched(tmp_path):
    run = RunDir(tmp_path)
    lines = [json.dumps({"step": s, "loss": {"0": 1.0 / s}}) for s in range(1, 6)]
    run.metrics.write_text("\n".join(lines) + "\n")
    run.truncate_metrics(3)
    assert run.metrics.read_text() == "\n".join(lines[:3]) + "\n"
    stamp = run.metrics.stat().st_mtime_ns
    run.truncate_metrics(3)  # nothing to drop: the file is not rewritten
    assert run.metrics.stat().st_mtime_ns == stamp
    run.truncate_metrics(0)
    assert run.metrics.read_text() == ""


def test_log_appends_whole_lines(tmp_path):
    run = RunDir(tmp_path)
    for s in range(1, 4):
        run.log({"step": s, "loss": {"0": 0.5}})
    text = run.metrics.read_text()
    assert text.endswith("\n") and [json.loads(x)["step"] for x in text.splitlines()] == [1, 2, 3]
