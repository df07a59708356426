"""The ResNet backbone (He et al., v1.5: the stride of a bottleneck sits on its 3x3 conv), cut
into blocks between its 4 stages.

Written here rather than imported because torchvision is not a dependency
(its wheels pin a torch of their own). Module names, parameter shapes and the
initialization follow torchvision's ``resnet18`` .. ``resnet152`` exactly
(kaiming-normal fan-out convolutions, unit batch norms, and with
``zero_init_residual`` the last batch norm of every residual branch at 0), so a
torchvision state dict maps onto it key by key
(:mod:`bwssl.interop.torchvision_resnet`); the classifier ``fc`` is left out.

Stages: 0 = stem (``conv1``, ``bn1``, ``relu``, ``maxpool``) + ``layer1``, 1 =
``layer2``, 2 = ``layer3``, 3 = ``layer4``; block k holds the stages of
``cfg.block_ranges()[k]`` under their torchvision names (``blocks.0.conv1.weight``,
``blocks.0.layer1.0.conv1.weight``, ``blocks.1.layer2.0.downsample.0.weight``).

Input clips (B, C, T, H, W) must have T = 1 (an image is a one-frame clip);
block outputs are feature maps (B, C_k, H_k, W_k). In training mode every
block's output gets the configured feature noise (:func:`add_feature_noise`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from bwssl.config import ModelConfig, NoiseConfig
from bwssl.models.backbone import Backbone, BlockInput, ClipShape
from bwssl.models.heads import GlobalBatchNorm2d

RESNET_LAYOUTS: dict[int, tuple[Literal["basic", "bottleneck"], tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
"""Residual block kind and blocks per stage of each standard depth (torchvision's)."""

NormLayer = Callable[[int], nn.Module]


def resnet_layout(m: ModelConfig) -> tuple[Literal["basic", "bottleneck"], tuple[int, ...]]:
    """The block kind of ``m.resnet_depth`` and the blocks per stage (``m.resnet_stage_blocks``
    when given, else the depth's standard)."""
    kind, blocks = RESNET_LAYOUTS[m.resnet_depth]
    return kind, tuple(m.resnet_stage_blocks) if m.resnet_stage_blocks is not None else blocks


def _conv3x3(a: int, b: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(a, b, 3, stride=stride, padding=1, bias=False)


def _conv1x1(a: int, b: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(a, b, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, norm: NormLayer
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = norm(planes)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        """The batch norm that ends the residual branch."""
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a residual connection (ResNet-50+)."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, norm: NormLayer
    ) -> None:
        super().__init__()
        self.conv1 = _conv1x1(inplanes, planes)
        self.bn1 = norm(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = norm(planes)
        self.conv3 = _conv1x1(planes, planes * 4)
        self.bn3 = norm(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    @property
    def last_norm(self) -> nn.Module:
        """The batch norm that ends the residual branch."""
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def make_stage(
    kind: Literal["basic", "bottleneck"],
    inplanes: int,
    planes: int,
    blocks: int,
    stride: int,
    norm: NormLayer,
) -> nn.Sequential:
    """One stage (torchvision's ``layerN``): the first block changes width and stride through
    a 1x1 convolution + norm shortcut (``downsample``) when they change."""
    cls = BasicBlock if kind == "basic" else Bottleneck
    out = planes * cls.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(_conv1x1(inplanes, out, stride), norm(out))
    layers = [cls(inplanes, planes, stride, downsample, norm)]
    layers += [cls(out, planes, 1, None, norm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ResNetBlock(nn.Module):
    """Consecutive stages of the ResNet; the first block also holds the stem.

    Its submodules carry torchvision's names: ``conv1``, ``bn1``, ``relu``,
    ``maxpool`` (stem only; an identity with the CIFAR stem) and ``layer{i}``.
    """

    conv1: nn.Conv2d
    bn1: nn.Module
    relu: nn.Module
    maxpool: nn.Module

    def __init__(self, stem: nn.ModuleDict | None, stages: dict[str, nn.Sequential]) -> None:
        super().__init__()
        self.has_stem = stem is not None
        if stem is not None:
            for name, module in stem.items():
                self.add_module(name, module)
        self.stage_names = tuple(stages)
        for name, stage in stages.items():
            self.add_module(name, stage)

    def forward(self, x: torch.Tensor, inp: BlockInput | None = None) -> torch.Tensor:
        """The first block takes clips (B, C, 1, H, W), the others maps (B, C, H, W); returns
        the map (B, C_k, H_k, W_k). ``inp`` is ignored (a ResNet keeps every position)."""
        if self.has_stem:
            if x.dim() != 5 or x.shape[2] != 1:
                raise ValueError(f"a resnet takes one-frame clips (B, C, 1, H, W), got {x.shape}")
            x = x[:, :, 0]  # (B, C, H, W)
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return x


def add_feature_noise(
    h: torch.Tensor, std: float, mode: Literal["all", "channel", "position"]
) -> torch.Tensor:
    """``h + std * randn_like(h) * s`` for a map ``h`` (B, C, H, W), drawn from the global RNG.

    ``s`` is the standard deviation of ``h`` (not detached, as the released code): ``all``
    one scalar over the whole tensor, ``channel`` one per channel over (B, H, W),
    ``position`` one per spatial position over (B, C).
    """
    if mode == "all":
        s = h.std()
    elif mode == "channel":
        s = h.std(dim=(0, 2, 3), keepdim=True)  # (1, C, 1, 1)
    else:
        s = h.std(dim=(0, 1), keepdim=True)  # (1, 1, H, W)
    return h + std * torch.randn_like(h) * s


def output_sizes(size: int, cifar_stem: bool) -> list[int]:
    """Side of each stage's output map for ``size``-pixel inputs (stride 4 after the ImageNet
    stem, 1 after the CIFAR stem, then 1, 2, 2, 2 per stage)."""

    def down(s: int) -> int:  # a stride-2 conv or pool with "same" padding
        return (s - 1) // 2 + 1

    s = size if cifar_stem else down(down(size))
    out = [s]
    for _ in range(3):
        s = down(s)
        out.append(s)
    return out


class ResNet(Backbone):
    """A torchvision-layout ResNet cut into blocks at ``cfg.block_ranges()`` (stage indices).

    ``cfg.resnet_width`` sets the first stage's width (doubled per stage),
    ``cfg.resnet_stage_blocks`` the residual blocks per stage, ``cfg.cifar_stem``
    the stem, ``cfg.sync_bn`` whether batch norms use the global batch under DDP.
    ``noise`` is added to every block's output in training mode.
    """

    def __init__(self, cfg: ModelConfig, clip: ClipShape, noise: NoiseConfig | None = None) -> None:
        super().__init__()
        self.cfg, self.clip = cfg, clip
        self.noise = noise if noise is not None else NoiseConfig()
        norm: NormLayer = GlobalBatchNorm2d if cfg.sync_bn else nn.BatchNorm2d
        kind, counts = resnet_layout(cfg)
        w = cfg.resnet_width
        stem = nn.ModuleDict(
            {
                "conv1": nn.Conv2d(clip.channels, w, 3, 1, 1, bias=False)
                if cfg.cifar_stem
                else nn.Conv2d(clip.channels, w, 7, 2, 3, bias=False),
                "bn1": norm(w),
                "relu": nn.ReLU(inplace=True),
                "maxpool": nn.Identity() if cfg.cifar_stem else nn.MaxPool2d(3, 2, 1),
            }
        )
        expansion = 1 if kind == "basic" else 4
        stages, inplanes = [], w
        for i, n in enumerate(counts):
            stages.append(make_stage(kind, inplanes, w * 2**i, n, 1 if i == 0 else 2, norm))
            inplanes = w * 2**i * expansion
        self.widths = [w * 2**i * expansion for i in range(4)]
        """Channels of each stage's output."""
        self.ranges = cfg.block_ranges()
        self.blocks = nn.ModuleList(
            ResNetBlock(stem if a == 0 else None, {f"layer{i + 1}": stages[i] for i in range(a, b)})
            for a, b in self.ranges
        )
        init_resnet(self.blocks, zero_init_residual=True)
        sizes = output_sizes(clip.size, cfg.cifar_stem)
        self.sizes = [sizes[b - 1] for _, b in self.ranges]
        """Side of each block's output map."""

    def forward_block(self, k: int, x: torch.Tensor, inp: BlockInput | None = None) -> torch.Tensor:
        """Block k's map (B, C_k, H_k, W_k), with feature noise when block k is training."""
        h = self.blocks[k](x, inp)
        if self.blocks[k].training and self.noise.std > 0:
            h = add_feature_noise(h, self.noise.std, self.noise.mode)
        return h

    def pool(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """Global average pooling: (B, C, H, W) -> (B, C)."""
        return h.mean(dim=(2, 3))

    def tokens(self, k: int, h: torch.Tensor) -> torch.Tensor:
        """The map's positions as tokens, row by row: (B, C, H, W) -> (B, H*W, C)."""
        return h.flatten(2).transpose(1, 2)

    def feature_dim(self, k: int) -> int:
        return self.widths[self.ranges[k][1] - 1]

    def num_tokens(self, k: int) -> int:
        return self.sizes[k] ** 2


def init_resnet(module: nn.Module, zero_init_residual: bool = True) -> None:
    """torchvision's ResNet init: kaiming-normal (fan-out, ReLU) convolutions, batch norms at
    weight 1 and bias 0; with ``zero_init_residual`` the last norm of every residual branch
    at weight 0, so that a fresh residual block is the identity plus its shortcut."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, BasicBlock | Bottleneck):
                nn.init.zeros_(m.last_norm.weight)  # type: ignore[arg-type]
