"""Barlow Twins, VICReg and NT-Xent: official formulas, invariances, errors and DDP semantics."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from bwssl.objectives.losses import barlow_twins_loss, gather_batch, nt_xent_loss, vicreg_loss

LOSSES: dict[str, Callable[..., Tensor]] = {
    "barlow_twins": barlow_twins_loss,
    "vicreg": vicreg_loss,
    "nt_xent": nt_xent_loss,
}


def _views(b: int = 8, d: int = 6, dtype: torch.dtype = torch.float64, seed: int = 0):
    """Two correlated (b, d) views of the same samples."""
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(b, d, generator=g, dtype=dtype)
    z2 = z1 + 0.5 * torch.randn(b, d, generator=g, dtype=dtype)
    return z1, z2


# --- separate transcriptions of the official formulas ---------------------------------------


def _ref_barlow(z1: Tensor, z2: Tensor, lambd: float = 0.0051, scale: float = 1.0) -> Tensor:
    bn = nn.BatchNorm1d(z1.shape[1], affine=False).to(z1.dtype).train()
    c = bn(z1).T @ bn(z2) / z1.shape[0]
    d = c.shape[0]
    on_diag = sum((c[i, i] - 1) ** 2 for i in range(d))
    off_diag = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return scale * (on_diag + lambd * off_diag)


def _ref_vicreg(
    x: Tensor, y: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0
) -> Tensor:
    b, d = x.shape
    repr_loss = ((x - y) ** 2).sum() / (b * d)

    def std_term(v: Tensor) -> Tensor:
        std = torch.sqrt(v.var(dim=0) + 1e-4)
        return torch.clamp(1 - std, min=0).mean()

    def cov_term(v: Tensor) -> Tensor:
        cov = torch.cov(v.T)  # unbiased, (d, d)
        return sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    std_loss = std_term(x) / 2 + std_term(y) / 2
    cov_loss = cov_term(x) + cov_term(y)
    return sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss


def _ref_nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.1) -> float:
    n = z1.shape[0]
    z = torch.cat([z1 / z1.norm(dim=1, keepdim=True), z2 / z2.norm(dim=1, keepdim=True)])
    sim = 1 - torch.cdist(z, z) ** 2 / 2  # cosine similarity of unit vectors
    total = 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        denom = sum(math.exp(sim[i, k].item() / temperature) for k in range(2 * n) if k != i)
        total += -(sim[i, positive].item() / temperature - math.log(denom))
    return total / (2 * n)


REFERENCES: dict[str, Callable[..., Tensor | float]] = {
    "barlow_twins": _ref_barlow,
    "vicreg": _ref_vicreg,
    "nt_xent": _ref_nt_xent,
}
CUSTOM_KWARGS = {
    "barlow_twins": {"lambd": 0.02, "scale": 0.5},
    "vicreg": {"sim_coeff": 3.0, "std_coeff": 7.0, "cov_coeff": 2.0},
    "nt_xent": {"temperature": 0.5},
}


@pytest.mark.parametrize("custom", [False, True], ids=["defaults", "custom"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_matches_official_formula(name: str, custom: bool):
    kwargs = CUSTOM_KWARGS[name] if custom else {}
    z1, z2 = _views(b=8, d=6, dtype=torch.float64, seed=1)
    expected = float(REFERENCES[name](z1, z2, **kwargs))
    got = LOSSES[name](z1, z2, **kwargs)
    assert got.dtype == torch.float64
    assert abs(got.item() - expected) <= 1e-6
    # float32 inputs are computed in float32: same value up to float32 rounding
    got32 = LOSSES[name](z1.float(), z2.float(), **kwargs)
    assert got32.dtype == torch.float32
    assert got32.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("name", list(LOSSES))
def test_bf16_autocast_computes_in_float32(name: str):
    z1, z2 = (z.bfloat16() for z in _views(dtype=torch.float32, seed=2))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = LOSSES[name](z1, z2)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, LOSSES[name](z1.float(), z2.float()))


def test_barlow_twins_invariant_to_per_feature_affine_maps():
    z1, z2 = _views(b=16, d=5, dtype=torch.float32, seed=3)
    g = torch.Generator().manual_seed(4)

    def affine(z: Tensor) -> Tensor:
        a = 0.5 + 1.5 * torch.rand(z.shape[1], generator=g)
        b = 3.0 * torch.randn(z.shape[1], generator=g)
        return a * z + b

    base = barlow_twins_loss(z1, z2)
    moved = barlow_twins_loss(affine(z1), affine(z2))
    assert moved.item() == pytest.approx(base.item(), rel=1e-4)


@pytest.mark.parametrize("name", list(LOSSES))
def test_symmetric_in_views(name: str):
    z1, z2 = _views(b=8, d=6, dtype=torch.float64, seed=5)
    fn = LOSSES[name]
    assert fn(z1, z2).item() == pytest.approx(fn(z2, z1).item(), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", list(LOSSES))
def test_batch_of_one_raises(name: str):
    z = torch.randn(1, 4)
    with pytest.raises(ValueError, match=rf"{name}_loss: .*needs at least 2 samples") as info:
        LOSSES[name](z, z.clone())
    assert "got batch size 1" in str(info.value)


@pytest.mark.parametrize("name", list(LOSSES))
def test_bad_shapes_raise(name: str):
    fn = LOSSES[name]
    with pytest.raises(ValueError, match=rf"{name}_loss: .*same shape"):
        fn(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match=rf"{name}_loss: .*2-D"):
        fn(torch.randn(4, 3, 2), torch.randn(4, 3, 2))


def test_gather_batch_is_identity_without_process_group():
    assert not dist.is_initialized()
    z = torch.randn(3, 2)
    assert gather_batch(z) is z


# --- two processes (gloo) versus one process on the whole batch ------------------------------

_DDP_BATCH, _DDP_IN, _DDP_OUT = 8, 5, 4


def _ddp_encoder() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(_DDP_IN, _DDP_OUT).double()


def _ddp_batch() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(_DDP_BATCH, _DDP_IN, generator=g, dtype=torch.float64)
    x2 = x1 + 0.3 * torch.randn(_DDP_BATCH, _DDP_IN, generator=g, dtype=torch.float64)
    return x1, x2


def _losses_and_grads(model: nn.Module, lin: nn.Linear, x1: Tensor, x2: Tensor):
    """{loss name: (loss, weight grad, bias grad)} for views x1, x2 through ``model``."""
    out = {}
    for name, fn in LOSSES.items():
        lin.zero_grad(set_to_none=True)
        z1, z2 = model(torch.cat([x1, x2])).chunk(2)  # one forward per step, as DDP expects
        loss = fn(z1, z2)
        loss.backward()
        out[name] = (loss.detach(), lin.weight.grad.clone(), lin.bias.grad.clone())
    return out


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        x1, x2 = _ddp_batch()
        per = _DDP_BATCH // world_size
        rows = slice(rank * per, (rank + 1) * per)
        lin = _ddp_encoder()
        model = DistributedDataParallel(lin)
        results = _losses_and_grads(model, lin, x1[rows], x2[rows])
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        # Both ranks leave together: gloo aborted a process that tore its group down while
        # its peer was still inside a collective.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one_process_full_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Spawned children unpickle ``_ddp_worker`` by its module name, which pytest's importlib
    # mode derives from the path (e.g. ``tests.objectives.test_losses``): make it importable.
    parts = __name__.split(".")
    root = Path(__file__).resolve().parents[len(parts) - 1]
    assert root.joinpath(*parts).with_suffix(".py") == Path(__file__).resolve()
    monkeypatch.syspath_prepend(str(root))
    world_size = 2
    mp.spawn(
        _ddp_worker,
        args=(world_size, str(tmp_path / "store"), str(tmp_path)),
        nprocs=world_size,
        join=True,
    )
    lin = _ddp_encoder()
    expected = _losses_and_grads(lin, lin, *_ddp_batch())
    for rank in range(world_size):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        for name, (loss, w_grad, b_grad) in expected.items():
            assert w_grad.norm() > 1e-3, name  # a meaningful gradient to compare
            g_loss, g_w, g_b = got[name]
            torch.testing.assert_close(g_loss, loss, rtol=0, atol=1e-9, msg=f"{name} loss")
            torch.testing.assert_close(g_w, w_grad, rtol=0, atol=1e-9, msg=f"{name} weight grad")
            torch.testing.assert_close(g_b, b_grad, rtol=0, atol=1e-9, msg=f"{name} bias grad")
