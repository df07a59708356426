"""The two-process side of the GlobalBatchNorm2d test: small, so spawned processes start fast
(they import this module, not the test module with its trainer imports)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from bwssl.models.heads import GlobalBatchNorm2d
from bwssl.models.pooling import ConvExpansion


def bn_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A (8, 4, 3, 3) batch and fixed weights for a loss that is not the plain sum."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(8, 4, 3, 3, generator=g, dtype=torch.float64) * 2 + 1
    return x, torch.randn(8, 4, 3, 3, generator=g, dtype=torch.float64)


def bn_run(bn: nn.Module, x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    with torch.no_grad():
        bn.weight.fill_(1.5), bn.bias.fill_(-0.5)
    out = bn(x)
    (out * w).sum().backward()
    return {
        "out": out.detach(),
        "x_grad": x.grad,
        "w_grad": bn.weight.grad,
        "b_grad": bn.bias.grad,
        "mean": bn.running_mean.clone(),
        "var": bn.running_var.clone(),
    }


def cbe_run(cbe: ConvExpansion, x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two training forwards and backwards of a CbE head (seeded weights, 3x3 conv, L2
    pooling) on ``x`` (B, 4, 3, 3), a loss weighted by ``w`` (B, 6)."""
    torch.manual_seed(5)
    nn.init.normal_(cbe.conv.weight)
    with torch.no_grad():
        cbe.norm.weight.fill_(1.5), cbe.norm.bias.fill_(-0.5)
    cbe.double().train()
    x = x.clone().requires_grad_(True)
    for _ in range(2):
        out = cbe(x)
        (out * w).sum().backward()
    return {
        "out": out.detach(),
        "x_grad": x.grad,
        "conv_grad": cbe.conv.weight.grad,
        "w_grad": cbe.norm.weight.grad,
        "mean": cbe.norm.running_mean.clone(),
        "var": cbe.norm.running_var.clone(),
        "count": cbe.norm.num_batches_tracked.clone(),
    }


def cbe_batch() -> tuple[torch.Tensor, torch.Tensor]:
    x, _ = bn_batch()
    return x, torch.randn(8, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)


def bn_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        x, w = bn_batch()
        rows = slice(rank * 4, (rank + 1) * 4)
        got = bn_run(GlobalBatchNorm2d(4).double().train(), x[rows], w[rows])
        torch.save(got, f"{out_dir}/rank{rank}.pt")
        x, w = cbe_batch()  # objective.cbe_checkpoint on the global batch
        cbe = ConvExpansion(4, 6, 3, "l2", checkpoint=True)
        torch.save(cbe_run(cbe, x[rows], w[rows]), f"{out_dir}/cbe{rank}.pt")
        # objective.cbe_chunk: 3 images at a time of the 4 local ones
        cbe = ConvExpansion(4, 6, 3, "l2", checkpoint=True, chunk=3)
        torch.save(cbe_run(cbe, x[rows], w[rows]), f"{out_dir}/chunk{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
