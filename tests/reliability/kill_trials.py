"""Kill training runs at random moments, resume them, and check what survives.

Each trial trains ``tiny-debug`` (a metrics line every step; a checkpoint every
1, 5 or 100 steps, so that kills land in checkpoint writes and before the first
checkpoint) in a fresh folder, SIGKILLs it 1 to ``--max-kills`` times
at random moments (each restart resumes the killed run), then lets it finish.
A trial survives when every restart is accepted, the final weights equal an
uninterrupted run's bit for bit, metrics.jsonl holds each step exactly once, and
no temporary file is left. What the run folder looked like at each kill (a
checkpoint in place or not, a torn metrics line, a temporary file, a checksum
file listing two digests) is counted, to show which faults the trials reached.

    python tests/reliability/kill_trials.py --trials 20 --out /tmp/kill-trials

``--src`` trains with another bwssl source tree (its ``src`` folder), e.g. an older
commit's, to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from bwssl.train.checkpoint import load_checkpoint

REGIMES = ("simultaneous", "sequential", "e2e")
CHECKPOINT_EVERY = (1, 5, 100)


def command(out: Path, regime: str, checkpoint_every: int = 1) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bwssl",
        "train",
        "tiny-debug",
        "--out",
        str(out),
        f"regime={regime}",
        "model.num_blocks=2",
        "train.epochs=6",
        f"train.checkpoint_every={checkpoint_every}",
        "train.log_every=1",
    ]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "final.pt")["model"]


def steps(run: Path) -> list[int]:
    return [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def looks(run: Path) -> list[str]:
    """What is in ``run`` right after a kill."""
    seen = []
    ckpts = run / "checkpoints"
    metrics = run / "metrics.jsonl"
    if (ckpts / "last.pt").exists():
        seen.append("last.pt present")
    elif metrics.exists() and metrics.stat().st_size:
        seen.append("steps logged, no checkpoint yet")
    else:
        seen.append("nothing logged yet")
    if metrics.exists() and metrics.stat().st_size and not metrics.read_bytes().endswith(b"\n"):
        seen.append("torn metrics line")
    if list(run.glob(".*.tmp")) + list(ckpts.glob(".*.tmp")):
        seen.append("temporary file left")
    side = ckpts / "last.pt.sha256"
    if side.exists() and side.read_text().count("\n") > 1:
        seen.append("checksum file listing two digests")
    return seen


def trial(
    out: Path,
    cmd: list[str],
    reference: Path,
    rng: random.Random,
    max_kills: int,
    env: dict[str, str],
) -> tuple[bool, str, Counter]:
    """One trial; returns (survived, why not, what the kills met)."""
    met: Counter = Counter()
    for _ in range(rng.randint(1, max_kills)):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # One kill in five at a random moment of the start (import, data, run folder); the
        # others once this start has logged a step, a random moment later.
        started = time.time()
        metrics = out / "metrics.jsonl"
        if rng.random() < 0.2:
            time.sleep(rng.uniform(0.0, 3.0))
        else:
            deadline = started + 120
            while proc.poll() is None and not (
                metrics.exists() and metrics.stat().st_mtime > started
            ):
                if time.time() > deadline:
                    proc.kill()
                    return False, "no step logged after 120 s", met
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            if proc.returncode != 0:
                return False, f"a restart failed: {err.strip().splitlines()[-1:]}", met
            met["finished before the kill"] += 1
            continue
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        met["kills"] += 1
        met.update(looks(out))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return False, f"the final restart failed: {done.stderr.strip().splitlines()[-1:]}", met
    want, got = weights(reference), weights(out)
    if want.keys() != got.keys() or any(not torch.equal(want[n], got[n]) for n in want):
        return False, "final weights differ from the uninterrupted run", met
    if steps(out) != steps(reference):
        return False, f"metrics steps {steps(out)} != {steps(reference)}", met
    left = list(out.glob(".*.tmp")) + list((out / "checkpoints").glob(".*.tmp"))
    if left:
        return False, f"temporary files left: {[p.name for p in left]}", met
    return True, "", met


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--max-kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--src", type=Path, help="train with this bwssl src folder")
    args = ap.parse_args(argv)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if args.src is not None:
        env["PYTHONPATH"] = str(args.src.resolve())
    rng = random.Random(args.seed)
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    survived, met, failures = 0, Counter(), []
    references: dict[str, Path] = {}
    for i in range(args.trials):
        regime = REGIMES[i % len(REGIMES)]
        every = CHECKPOINT_EVERY[(i // len(REGIMES)) % len(CHECKPOINT_EVERY)]
        if regime not in references:
            references[regime] = args.out / f"reference-{regime}"
            subprocess.run(
                command(references[regime], regime), env=env, check=True, capture_output=True
            )
        out = args.out / f"trial-{i}"
        ok, why, seen = trial(
            out, command(out, regime, every), references[regime], rng, args.max_kills, env
        )
        survived += ok
        met += seen
        if not ok:
            failures.append(f"trial {i} ({regime}, checkpoint every {every}): {why}")
        name = f"trial {i} ({regime}, checkpoint every {every})"
        print(f"{name}: {'survived' if ok else 'FAILED: ' + why}", flush=True)
    print(f"\n{survived}/{args.trials} trials survived; {met['kills']} kills")
    for what, n in sorted(met.items()):
        if what != "kills":
            print(f"  {what}: {n}")
    for f in failures:
        print(f"  {f}")
    return 0 if survived == args.trials else 1


if __name__ == "__main__":
    sys.exit(main())
