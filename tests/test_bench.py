from __future__ import annotations

import importlib.util
import json
import math

import torch

from bwssl.bench import PeakMemory
from bwssl.cli import main

HAS_HF = importlib.util.find_spec("transformers") is not None


def test_bench_json_has_every_regime_and_the_ratios(tmp_path):
    out = tmp_path / "bench.json"
    rc = main(["bench", "--json", str(out), "--device", "cpu", "--sizes", "tiny-debug",
               "--steps", "2", "--warmup", "0", "--batch", "2"])
    assert rc == 0
    result = json.loads(out.read_text())
    runs = {r["run"]: r for r in result["runs"]}
    expected = {"e2e", "simultaneous", "sequential [stage 1/2]", "sequential [stage 2/2]"}
    if HAS_HF:
        expected.add("transformers-videomae")
    assert set(runs) == expected
    for r in runs.values():
        assert r["size"] == "tiny-debug" and r["batch"] == 2
        assert len(r["step_ms"]) == 2 and r["clips_per_s"] > 0
        assert r["peak_bytes"] > 0 and r["state_bytes"] > 0 and r["memory_events"] > 0
        # the peak includes the live parameters, and more (grads, optimizer state, activations)
        assert r["peak_bytes"] > 4 * r["params_total"]
        assert math.isfinite(r["vs_e2e"]["step_time"])
    assert runs["e2e"]["vs_e2e"]["peak_memory"] == 1.0
    # simultaneous trains a decoder per block: more parameters than e2e
    assert runs["simultaneous"]["params_total"] > runs["e2e"]["params_total"]
    ratios = result["ratios"]["tiny-debug"]
    names = {"simultaneous_vs_e2e_peak_memory", "simultaneous_vs_e2e_step_time"}
    if HAS_HF:
        names.add("e2e_vs_hf_throughput")
    assert set(ratios) == names
    for check in ratios.values():
        assert check["value"] > 0 and isinstance(check["met"], bool)
    sim, e2e = runs["simultaneous"], runs["e2e"]
    assert ratios["simultaneous_vs_e2e_peak_memory"]["value"] == sim["peak_bytes"] / e2e["peak_bytes"]
    assert result["machine"]["torch"] == torch.__version__
    assert result["sizes"]["tiny-debug"]["tokens"] == 2 * 4 * 4


def test_cpu_peak_memory_sees_a_known_allocation():
    size = 8 * 2**20
    with PeakMemory(torch.device("cpu")) as m:
        t = torch.empty(size, dtype=torch.uint8)
        t.fill_(1)
        del t
    assert m.peak >= size
    assert m.retained < size  # freed before the window closed

    with PeakMemory(torch.device("cpu")) as m:
        kept = torch.ones(size // 4, dtype=torch.float32)
        tmp = kept * 2  # a second buffer of the same size, freed at once
        del tmp
    assert m.peak >= 2 * size and m.retained >= size
    assert kept.sum() > 0


def test_bench_rejects_unknown_size(capsys):
    assert main(["bench", "--device", "cpu", "--sizes", "no-such-size"]) == 2
    assert "no-such-size" in capsys.readouterr().err
