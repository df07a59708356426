"""Adding a backbone or an objective is its own code plus one registry line.

Both parts below live in this file; registering each is the one line
``monkeypatch.setitem(REGISTRY, name, builder)``. Nothing else in bwssl is
touched, and the run trains and is analysed like any other.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bwssl.analysis import AnalysisOptions, analyze
from bwssl.config import Config
from bwssl.models import BACKBONES, Backbone, BlockInput, build_model, load_model
from bwssl.objectives import OBJECTIVES, Objective, StepData, StepKey
from bwssl.train.trainer import train


class TinyConv3d(Backbone):
    """Two blocks of strided 3-D convolutions: a backbone with a feature map, not tokens."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        c, d = cfg.data.channels, cfg.data
        self.grid = [(d.num_frames + 1) // 2, (d.crop_size + 1) // 2]  # after block 0
        self.grid.append((self.grid[0] + 1) // 2 * ((self.grid[1] + 1) // 2) ** 2)
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(nn.Conv3d(c, 8, 3, stride=2, padding=1), nn.ReLU()),
                nn.Sequential(nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.ReLU()),
            ]
        )

    def forward_block(self, k: int, x: torch.Tensor, inp: BlockInput | None = None) -> torch.Tensor:
        return self.blocks[k](x)

    def pool(self, k: int, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=(2, 3, 4))  # (B, C, T, H, W) -> (B, C)

    def tokens(self, k: int, h: torch.Tensor) -> torch.Tensor:
        return h.flatten(2).transpose(1, 2)  # (B, T*H*W, C)

    def feature_dim(self, k: int) -> int:
        return (8, 16)[k]

    def num_tokens(self, k: int) -> int:
        t, s, n1 = self.grid
        return t * s * s if k == 0 else n1


class PredictBrightness(Objective):
    """Predict each clip's mean brightness from block k's pooled features."""

    head_key = "probes"

    def make_head(self, backbone: Backbone, k: int) -> nn.Module:
        return nn.Linear(backbone.feature_dim(k), 1)

    def prepare(
        self, video: torch.Tensor, key: StepKey, rows: torch.Tensor, *, train: bool = True
    ) -> StepData:
        return StepData([video], [None])

    def loss(
        self, k: int, outs: list[torch.Tensor], head: nn.Module, step: StepData, backbone: Backbone
    ) -> torch.Tensor:
        (h,) = outs
        target = step.views[0].mean(dim=(1, 2, 3, 4)).unsqueeze(1)
        return (head(backbone.pool(k, h)) - target).pow(2).mean()


def test_a_new_backbone_and_objective_train_resume_and_analyse(make_cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(BACKBONES, "tiny_conv3d", TinyConv3d)
    monkeypatch.setitem(OBJECTIVES, "brightness", PredictBrightness)
    cfg = make_cfg(
        "model.arch=tiny_conv3d",
        "objective.name=brightness",
        "regime=simultaneous",
        "model.num_blocks=2",
        "train.max_steps=3",
        "data.synthetic_classes=2",
        "data.synthetic_test=16",
    )
    model = build_model(cfg)
    assert {k.split(".")[0] for k in model.state_dict()} == {"blocks", "probes"}

    run = tmp_path / "run"
    train(cfg, run)
    loaded = load_model(run)
    assert isinstance(loaded.backbone, TinyConv3d)
    options = AnalysisOptions(
        metrics=["probe_acc", "map", "cka_next", "cps", "local_loss", "mse"],
        probe_repeats=1,
        progress=False,
        figures=False,
    )
    rows = analyze([run], tmp_path / "analysis", options)
    from bwssl.analysis.results import read_results

    table = read_results(rows)
    metrics = {(r.metric, r.block) for r in table}
    for metric in ("probe_acc", "map", "cps", "local_loss"):
        assert {(metric, 1), (metric, 2)} <= metrics, metric
    assert ("cka_next", 1) in metrics
    assert not any(r.metric == "mse" for r in table)  # no pixels rebuilt: skipped
    assert {r.objective for r in table} == {"brightness"}


def test_a_part_missing_part_of_its_interface_is_refused_when_built():
    class NoPool(Backbone):
        def tokens(self, k, h):
            return h

        def feature_dim(self, k):
            return 1

        def num_tokens(self, k):
            return 1

    class NoLoss(Objective):
        def make_head(self, backbone, k):
            return nn.Identity()

        def prepare(self, video, key, rows, *, train=True):
            return StepData([video], [None])

    with pytest.raises(TypeError, match="pool"):
        NoPool()
    with pytest.raises(TypeError, match="loss"):
        NoLoss(None)  # type: ignore[arg-type]


def test_the_tiny_backbone_reports_its_token_counts(make_cfg):
    model = TinyConv3d(make_cfg())
    video = torch.zeros(1, 3, 4, 32, 32)
    for k, h in enumerate(model.block_outputs(video)):
        assert model.tokens(k, h).shape[1] == model.num_tokens(k)
