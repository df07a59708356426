"""Loading a checkpoint runs no code in it, on every path that loads one.

Each test plants a pickle whose unpickling would create a sentinel file (through
``os.system``, ``exec``, or an object ``ndarray`` where an old checkpoint keeps
its NumPy RNG state) and checks that bwssl refuses it with a one-line error
naming the file, and that the sentinel never appears. The planted file passes
the integrity check (it is a well-formed torch file, with a forged ``.sha256``
in half the cases): the checksum is not what stops it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import bwssl
from bwssl.analysis import AnalysisOptions, analyze
from bwssl.cli import main
from bwssl.errors import UserError
from bwssl.train.checkpoint import UnsafeCheckpoint, load_checkpoint
from bwssl.train.trainer import derive_e2e_run, train

from .helpers import PAYLOADS, config, plant

CASES = [(kind, forged) for kind in PAYLOADS for forged in (False, True)]
IDS = [f"{kind}{'-forged-sha256' if forged else ''}" for kind, forged in CASES]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run (4 steps, last.pt at step 4), copied by each test."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train(config("train.max_steps=4", "train.checkpoint_every=2"), run)
    return run


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def _refused(error: BaseException, path: Path) -> None:
    text = str(error)
    assert "\n" not in text
    assert str(path) in text and "refusing to load" in text


@pytest.mark.parametrize("kind,forged", CASES, ids=IDS)
def test_load_checkpoint_and_load_model_refuse_a_planted_pickle(kind, forged, tmp_path):
    sentinel = tmp_path / "SENTINEL"
    ckpt = tmp_path / "evil.pt"
    plant(ckpt, kind, sentinel, forged)
    with pytest.raises(UnsafeCheckpoint) as e:
        load_checkpoint(ckpt)
    _refused(e.value, ckpt)
    with pytest.raises(UserError) as e:
        bwssl.load_model(ckpt)
    _refused(e.value, ckpt)
    assert not sentinel.exists()


@pytest.mark.parametrize("kind,forged", CASES, ids=IDS)
def test_resume_refuses_a_planted_last_pt(kind, forged, finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    sentinel = tmp_path / "SENTINEL"
    for name in ("final.pt", "final.pt.sha256"):
        (run / "checkpoints" / name).unlink()
    plant(run / "checkpoints" / "last.pt", kind, sentinel, forged)
    with pytest.raises(UnsafeCheckpoint) as e:
        train(config("train.max_steps=4", "train.checkpoint_every=2"), run)
    _refused(e.value, run / "checkpoints" / "last.pt")
    assert not sentinel.exists()


@pytest.mark.parametrize("kind,forged", CASES, ids=IDS)
def test_a_planted_final_pt_is_not_taken_as_finished(kind, forged, finished_run, tmp_path):
    """train's 'already finished' check loads final.pt, safely, rather than trusting it."""
    run = _copy(finished_run, tmp_path)
    sentinel = tmp_path / "SENTINEL"
    plant(run / "checkpoints" / "final.pt", kind, sentinel, forged)
    with pytest.raises(UnsafeCheckpoint):
        train(config("train.max_steps=4", "train.checkpoint_every=2"), run)
    assert not sentinel.exists()


def test_the_cli_commands_refuse_a_planted_final_pt(finished_run, tmp_path, capsys):
    """bwssl train, analyze and export-hf: exit status 2 and one 'error:' line each."""
    run = _copy(finished_run, tmp_path)
    sentinel = tmp_path / "SENTINEL"
    final = run / "checkpoints" / "final.pt"
    plant(final, "os.system", sentinel, forge_checksum=True)
    commands = [
        ["train", "tiny-debug", *config_args(), "--out", str(run)],
        ["analyze", str(run), "--out", str(tmp_path / "analysis"), "progress=false"],
    ]
    try:
        import safetensors  # noqa: F401
        import transformers  # noqa: F401

        commands.append(["export-hf", str(run), str(tmp_path / "hf")])
    except ImportError:  # the hf extra is not installed: export fails before loading
        pass
    for argv in commands:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: refusing to load") and str(final) in err[-1], argv
        assert "Traceback" not in "\n".join(err)
    assert not sentinel.exists()


def config_args() -> list[str]:
    """The overrides of the :func:`finished_run` config as CLI arguments."""
    return [
        "train.epochs=2",
        "train.progress=false",
        "model.num_blocks=2",
        "train.max_steps=4",
        "train.checkpoint_every=2",
    ]


def test_analyze_refuses_a_planted_final_pt(finished_run, tmp_path):
    run = _copy(finished_run, tmp_path)
    sentinel = tmp_path / "SENTINEL"
    plant(run / "checkpoints" / "final.pt", "exec", sentinel, forge_checksum=False)
    options = AnalysisOptions(metrics=["mse"], progress=False, figures=False)
    with pytest.raises(UnsafeCheckpoint):
        analyze([run], tmp_path / "analysis", options)
    assert not sentinel.exists()


def test_the_e2e_recut_refuses_a_planted_source(tmp_path):
    """derive_e2e_run loads the source run's final.pt; a planted one is refused."""
    source = tmp_path / "e2e-k2"
    train(config("regime=e2e", "train.max_steps=2"), source)
    sentinel = tmp_path / "SENTINEL"
    plant(source / "checkpoints" / "final.pt", "os.system", sentinel, forge_checksum=True)
    with pytest.raises(UnsafeCheckpoint):
        derive_e2e_run(
            source,
            config("regime=e2e", "train.max_steps=2", "model.num_blocks=4"),
            tmp_path / "e2e-k4",
        )
    assert not sentinel.exists()


def test_checkpoints_hold_only_what_weights_only_loading_allows(finished_run):
    """No allowlist needed: torch's own weights-only unpickler finds nothing it does not
    know in either checkpoint, and loads both."""
    for name in ("last.pt", "final.pt"):
        path = finished_run / "checkpoints" / name
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
        assert torch.load(path, weights_only=True)["position"]["global_step"] == 4
