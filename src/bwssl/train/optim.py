"""The optimizer of one training unit: AdamW or LARS, their parameter groups, and the ends
of the learning-rate schedule.

:func:`build_optimizer` is what the trainer asks for ("the optimizer of these
parameters of this model", per ``train.optimizer``, from :data:`OPTIMIZERS`);
:func:`set_lr` puts the schedule's learning rate (from :func:`peak_lr` to
:func:`final_lr`) into it at every step. Every group carries an ``lr_factor``:
its learning rate is the schedule's times that factor, so that biases and norms
follow the weights' schedule at their own peak (``train.lr_biases``), as in the
official Barlow Twins recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    from bwssl.config import TrainConfig


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio (You et al., 2017), as used by Barlow
    Twins, VICReg and blockwise self-supervised learning at ImageNet scale.

    Written here because torch has no LARS. Per parameter ``p`` with gradient ``g``, every
    step:

        g <- g + weight_decay * p                     (not for 1-D p if exclude_1d_from_decay)
        g <- g * eta * ||p|| / ||g||                  (not for 1-D p if exclude_1d_from_trust;
                                                       the ratio is 1 when ||p|| or ||g|| is 0)
        mu <- momentum * mu + g                       (mu starts at 0; no dampening, no Nesterov)
        p <- p - lr * mu

    This is the rule of the official Barlow Twins optimizer: the trust ratio uses the
    norm of the decayed gradient and does not include the learning rate, and
    1-D parameters (biases, BatchNorm / LayerNorm weights) are excluded from weight
    decay and from the trust ratio by the per-group flags. A 0-D parameter is treated as a
    weight, as in that code. The momentum buffer is the state ``momentum_buffer`` of each
    parameter, so ``state_dict`` / ``load_state_dict`` resume a run exactly.

    With ``clip`` (a group flag), the rule is instead solo-learn's LARS with ``clip_lr``: its
    layer-wise rate ``r`` is capped at the group's ``lr``, so that no layer steps faster than
    the schedule. ``r`` divides by the raw gradient's norm plus the decay's norm (not by the
    norm of the decayed gradient) and by ``eps`` (1e-8, solo-learn's default), and what the
    momentum buffer collects is the gradient times the capped fraction ``min(r / lr, 1)``:

        r <- eta * ||p|| / (||g|| + weight_decay * ||p|| + eps)
        g <- (g + weight_decay * p) * min(r / lr, 1)  (only if ||p|| > 0 and ||g|| > 0, and
                                                       not for 1-D p if exclude_1d_from_trust;
                                                       else g stays the raw gradient, without
                                                       decay)
        mu <- momentum * mu + g
        p <- p - lr * mu

    so a layer's step before momentum is ``min(r, lr)`` times its decayed gradient. At
    ``lr`` 0 the factor is 1 (and the step 0). ``exclude_1d_from_decay`` plays no part
    there: in that rule a parameter is decayed exactly when it is scaled.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        eta: float = 0.001,
        weight_decay: float = 0.0,
        exclude_1d_from_decay: bool = True,
        exclude_1d_from_trust: bool = True,
        clip: bool = False,
        eps: float = 1e-8,
    ) -> None:
        if lr < 0 or not 0 <= momentum < 1 or eta <= 0 or weight_decay < 0 or eps < 0:
            raise ValueError(
                f"LARS needs lr >= 0, momentum in [0, 1), eta > 0, weight_decay >= 0, "
                f"eps >= 0; got lr={lr}, momentum={momentum}, eta={eta}, "
                f"weight_decay={weight_decay}, eps={eps}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "eta": eta,
            "weight_decay": weight_decay,
            "exclude_1d_from_decay": exclude_1d_from_decay,
            "exclude_1d_from_trust": exclude_1d_from_trust,
            "clip": clip,
            "eps": eps,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient; ``closure`` (optional)
        re-evaluates the loss first, as for any torch optimizer."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                one_d = p.ndim == 1
                if group.get("clip", False):  # .get: groups saved before it resume unclipped
                    if not (one_d and group["exclude_1d_from_trust"]):
                        g = _clipped(p, g, group)
                else:
                    if group["weight_decay"] and not (one_d and group["exclude_1d_from_decay"]):
                        g = g.add(p, alpha=group["weight_decay"])
                    if not (one_d and group["exclude_1d_from_trust"]):
                        w_norm = torch.linalg.vector_norm(p)
                        g_norm = torch.linalg.vector_norm(g)
                        ratio = torch.where(
                            (w_norm > 0) & (g_norm > 0),
                            group["eta"] * w_norm / g_norm,
                            torch.ones_like(w_norm),
                        )
                        g = g.mul(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(g)
                p.add_(buf, alpha=-group["lr"])
        return loss


def _clipped(p: torch.Tensor, g: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    """solo-learn's clipped rule's update direction of a scaled ``p``: the decayed gradient
    times min(r / lr, 1), r = eta ||p|| / (||g|| + weight_decay ||p|| + eps); the raw
    gradient (no decay) when ||p|| or ||g|| is 0. Computed without a host sync."""
    wd = group["weight_decay"]
    w_norm = torch.linalg.vector_norm(p)
    g_norm = torch.linalg.vector_norm(g)
    local = group["eta"] * w_norm / (g_norm + wd * w_norm + group.get("eps", 1e-8))
    # at lr 0, solo-learn's min(r / lr, 1) is min(inf, 1) = 1
    factor = (local / group["lr"]).clamp(max=1.0) if group["lr"] else torch.ones_like(local)
    scaled = (g.add(p, alpha=wd) if wd else g).mul(factor)
    return torch.where((w_norm > 0) & (g_norm > 0), scaled, g)


def param_groups(
    model: nn.Module, params: list[nn.Parameter], weight_decay: float, lr_factor_1d: float = 1.0
) -> list[dict[str, Any]]:
    """AdamW groups of the ``params`` of ``model``: weights with ``weight_decay``, then the
    parameters without decay (1-D ones: biases, norms, q/v bias; and mask tokens), whose
    learning rate is ``lr_factor_1d`` times the schedule's."""
    wanted = {id(p) for p in params}
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if id(p) not in wanted:
            continue
        (no_decay if p.ndim <= 1 or name.endswith("mask_token") else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lr_factor": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_factor": lr_factor_1d},
    ]


def adamw(
    groups: list[dict[str, Any]],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    **kwargs: Any,
) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where this torch has one for the parameters' device
    (CPU since torch 2.4, CUDA), else torch's default implementation.

    The same update rule; the fused kernel updates all parameters at once instead
    of running several small operations per parameter."""
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device or dtype
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **kwargs)


def lars_groups(
    model: nn.Module, params: list[nn.Parameter], lr_factor_1d: float = 1.0
) -> list[dict[str, Any]]:
    """LARS groups of the ``params`` of ``model`` (in the model's order), as the official
    Barlow Twins code makes them: the weights, then the 1-D parameters (biases, norms)
    at ``lr_factor_1d`` times the schedule's learning rate. Weight decay and the trust
    ratio skip the 1-D ones by :class:`LARS`'s own flags."""
    wanted = {id(p) for p in params}
    weights, one_d = [], []
    for p in model.parameters():
        if id(p) in wanted:
            (one_d if p.ndim == 1 else weights).append(p)
    return [
        {"params": weights, "lr_factor": 1.0},
        {"params": one_d, "lr_factor": lr_factor_1d},
    ]


def build_adamw(
    cfg: TrainConfig, model: nn.Module, params: list[nn.Parameter]
) -> torch.optim.AdamW:
    """AdamW (``cfg.betas``, ``cfg.weight_decay``) over :func:`param_groups`."""
    groups = param_groups(model, params, cfg.weight_decay, lr_factor_1d(cfg))
    return adamw(groups, cfg.lr, (cfg.betas[0], cfg.betas[1]))


def build_lars(cfg: TrainConfig, model: nn.Module, params: list[nn.Parameter]) -> LARS:
    """:class:`LARS` (``cfg.momentum``, ``cfg.lars_eta``, ``cfg.weight_decay``, clipped if
    ``cfg.lars_clip``) over :func:`lars_groups`."""
    return LARS(
        lars_groups(model, params, lr_factor_1d(cfg)),
        lr=cfg.lr,
        momentum=cfg.momentum,
        eta=cfg.lars_eta,
        weight_decay=cfg.weight_decay,
        clip=cfg.lars_clip,
    )


def lr_factor_1d(cfg: TrainConfig) -> float:
    """The learning rate of biases and norms relative to the weights' (``lr_biases / lr``)."""
    return cfg.lr_biases / cfg.lr if cfg.lr_biases is not None else 1.0


OptimizerBuilder = Callable[["TrainConfig", nn.Module, list[nn.Parameter]], torch.optim.Optimizer]

OPTIMIZERS: dict[str, OptimizerBuilder] = {"adamw": build_adamw, "lars": build_lars}
"""``train.optimizer`` -> the builder of one unit's optimizer."""


def build_optimizer(
    cfg: TrainConfig, model: nn.Module, params: list[nn.Parameter]
) -> torch.optim.Optimizer:
    """The optimizer ``cfg.optimizer`` of the ``params`` of ``model`` (one training unit's).
    Its learning rate is set by :func:`set_lr` before every step."""
    return OPTIMIZERS[cfg.optimizer](cfg, model, params)


def peak_lr(cfg: TrainConfig) -> float:
    """The weights' peak learning rate: ``lr``, times ``batch_size / lr_scale_batch`` when
    that is set (Barlow Twins: lr 0.2 with lr_scale_batch 256 is 0.2 x B/256)."""
    return cfg.peak_lr


def final_lr(cfg: TrainConfig) -> float:
    """The weights' learning rate at the end of the cosine: ``min_lr_ratio`` x
    :func:`peak_lr`, or ``min_lr`` when no ratio is set."""
    return cfg.min_lr if cfg.min_lr_ratio is None else cfg.min_lr_ratio * peak_lr(cfg)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to ``lr`` times its ``lr_factor`` (1 when absent).

    The factor is part of the optimizer's state dict, so a resumed run keeps the ratio it
    was started with (also under ``--resume-with train.lr=...``)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_factor", 1.0)
