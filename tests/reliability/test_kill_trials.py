"""SIGKILL at random moments, inside checkpoint writes too: every resumed run ends bitwise
equal to an uninterrupted one (a small run of ``kill_trials.py`` in the suite)."""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
from collections import Counter
from pathlib import Path

TRIALS = 6


def _kill_trials():
    spec = importlib.util.spec_from_file_location(
        "kill_trials", Path(__file__).with_name("kill_trials.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_six_sigkill_trials_all_end_bitwise_equal(tmp_path):
    kt = _kill_trials()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = tmp_path / "reference"
    # A checkpoint at every step: most kills land during or right around a checkpoint write.
    subprocess.run(kt.command(reference, "simultaneous", 1), env=env, check=True,
                   capture_output=True)  # fmt: skip
    rng = random.Random(0)
    met: Counter = Counter()
    survived = []
    for i in range(TRIALS):
        out = tmp_path / f"trial{i}"
        ok, why, seen = kt.trial(out, kt.command(out, "simultaneous", 1), reference, rng, 1, env)
        survived.append((ok, why))
        met.update(seen)
    assert all(ok for ok, _ in survived), survived
    assert met["kills"] + met["finished before the kill"] == TRIALS
    assert met["kills"] >= TRIALS // 2, met
