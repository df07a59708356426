"""The redesign into backbones, objectives and regimes changed nothing a user had.

The fixtures were written by the code before it (see tests/fixtures/pre_redesign).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bwssl.analysis import AnalysisOptions, analyze
from bwssl.analysis.results import read_results
from bwssl.models import load_model
from bwssl.train.trainer import train

FIXTURES = Path(__file__).parent / "fixtures" / "pre_redesign"


@pytest.mark.parametrize("regime", ["e2e", "simultaneous", "sequential"])
def test_masked_pixel_training_gives_the_same_weights(regime, make_cfg, tmp_path):
    before = torch.load(FIXTURES / "tiny_debug_2ep_weights.pt")[regime]
    train(make_cfg(f"regime={regime}", "seed=0", "train.epochs=2"), tmp_path)
    after = torch.load(tmp_path / "checkpoints" / "final.pt", weights_only=False)["model"]
    assert after.keys() == before.keys()
    worst = max((after[n] - before[n]).abs().max().item() for n in before)
    # The fixture was written on an AMD EPYC; on an Intel Xeon the same code (before and
    # after the redesign) lands 4.5e-6 away, from the CPU's float kernels alone. One AdamW
    # step moves a weight by about the lr (1e-3 here), so 2e-5 still catches any change of
    # what training computes.
    assert worst <= 2e-5, (regime, worst)


def test_an_old_run_loads_and_is_analysed(tmp_path):
    run = FIXTURES / "run-simultaneous"
    model = load_model(run)
    assert model.head_key == "decoders" and model.head_blocks == (0, 1)
    state = torch.load(run / "checkpoints" / "final.pt", weights_only=False)["model"]
    assert all(torch.equal(model.state_dict()[n], state[n]) for n in state)
    options = AnalysisOptions(
        metrics=["probe_acc", "mse", "local_loss", "cka_next"],
        probe_repeats=1,
        progress=False,
        figures=False,
    )
    table = read_results(analyze([run], tmp_path / "analysis", options))
    got = {(r.metric, r.block) for r in table}
    assert {
        ("probe_acc", 1),
        ("probe_acc", 2),
        ("mse", 1),
        ("mse", 2),
        ("local_loss", 2),
        ("cka_next", 1),
    } <= got
    mse = {r.block: r.value for r in table if r.metric == "mse"}
    local = {r.block: r.value for r in table if r.metric == "local_loss"}
    assert mse == local  # for masked pixels the local loss is the reconstruction MSE
