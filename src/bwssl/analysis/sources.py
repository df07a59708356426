"""What is analysed: a run directory or a Hugging Face VideoMAE checkpoint folder, as a
:class:`Source` (its config, its content hash, and how to load its model).

Run directories (``bwssl train`` output) are analysed from ``checkpoints/final.pt``
(``last.pt`` with a warning when training has not finished); model, regime, seed and K
come from the run's config. The model column of the results names the architecture
(:func:`model_name`).

Hugging Face folders: the encoder is cut into ``hf_num_blocks`` blocks
(or at ``hf_boundaries``), its clip format (frames, size, channels) comes
from its config.json, regime is ``hf_regime`` and seed 0. *Which* clips are
probed is up to the options: by default the embedded synthetic data in the
checkpoint's clip format; ``data.root=/data/UCF101`` (and any other
``data.*`` key of :class:`~bwssl.analysis.options.DataOverrides`) picks UCF101.
``mse`` needs the checkpoint's decoder (``VideoMAEForPreTraining``), at the last block.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from bwssl.analysis import features as feat
from bwssl.config import Config, ModelConfig
from bwssl.errors import UserError

if TYPE_CHECKING:
    import torch

    from bwssl.analysis.options import AnalysisOptions
    from bwssl.models import BlockwiseModel

logger = logging.getLogger(__name__)


def model_name(m: ModelConfig) -> str:
    """A readable architecture name, as its backbone's registry entry describes it
    (``deit-tiny``, ``vit-d64``, ``resnet50``, ``resnet18-w8-b1111-cifar``)."""
    from bwssl.models.registry import backbone_spec

    return backbone_spec(m.arch).describe(m)


def trained_model_name(cfg: Config) -> str:
    """The ``model`` column of a run's rows: :func:`model_name`, and ``+noise<std>`` when the
    run trained with feature noise (``noise.std`` > 0), so that runs with and without noise
    are grouped apart (``resnet18-w8-b1111-cifar+noise0.25``)."""
    name = model_name(cfg.model)
    return f"{name}+noise{cfg.noise.std:g}" if cfg.noise.std > 0 else name


@dataclass
class Source:
    """One encoder to analyse: where it is, what it is, and its content hash."""

    name: str
    path: Path
    kind: Literal["run", "hf"]
    config: Config
    """The run's config (for HF folders: :func:`~bwssl.interop.hf_videomae_config`)."""
    digest: str
    """sha256 of the weights (run: the checkpoint file; HF: config and weight files, and K)."""
    checkpoint: Path | None
    regime: str
    seed: int

    def load(self, device: torch.device) -> BlockwiseModel:
        """The model, in eval mode, on ``device``."""
        if self.kind == "hf":
            from bwssl.interop import from_hf_videomae

            model = from_hf_videomae(
                self.path,
                num_blocks=self.config.model.num_blocks,
                boundaries=self.config.model.boundaries,
            )
            return model.to(device).eval()
        from bwssl.models import load_model

        assert self.checkpoint is not None
        return load_model(self.checkpoint, map_location=device)


def _hf_weight_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json"))
    )


def open_source(path: str | Path, options: AnalysisOptions) -> Source:
    """Identify ``path``: a run directory or a Hugging Face VideoMAE folder (UserError else)."""
    p = Path(path)
    if not p.exists():
        raise UserError(
            f"{path} does not exist; give a run directory (bwssl train --out) or a "
            "Hugging Face VideoMAE checkpoint folder"
        )
    if not p.is_dir():
        raise UserError(
            f"{path} is not a folder; give a run directory (bwssl train --out) or a "
            "Hugging Face VideoMAE checkpoint folder"
        )
    name = p.resolve().name
    ckpt_dir = p / "checkpoints"
    if (p / "config.yaml").is_file() or ckpt_dir.is_dir():
        from bwssl.base.rundir import RunDir

        run = RunDir(p)
        ckpt = next((c for c in (run.final, run.last) if c.is_file()), None)
        if ckpt is None:
            raise UserError(
                f"{path} holds no checkpoints/final.pt or checkpoints/last.pt; "
                f"train it first (bwssl train CONFIG --out {path})"
            )
        if ckpt == run.last:
            logger.warning("%s has not finished training; analysing checkpoints/last.pt", path)
        cfg = run.saved_config()
        if cfg is None:
            raise UserError(f"{path} has checkpoints but no config.yaml; is it a bwssl run?")
        return Source(name, p, "run", cfg, feat.file_sha256(ckpt), ckpt, cfg.regime, cfg.seed)
    if (p / "config.json").is_file():
        from bwssl.interop import hf_videomae_config

        cfg = hf_videomae_config(
            p, num_blocks=options.hf_num_blocks, boundaries=options.hf_boundaries
        )
        files = [p / "config.json", *_hf_weight_files(p)]
        cut = json.dumps(cfg.model.block_ranges())
        digest = hashlib.sha256((feat.files_sha256(files) + cut).encode()).hexdigest()
        return Source(name, p, "hf", cfg, digest, None, options.hf_regime, 0)
    raise UserError(
        f"{path} is neither a bwssl run directory (config.yaml, checkpoints/) nor a "
        "Hugging Face checkpoint folder (config.json)"
    )
