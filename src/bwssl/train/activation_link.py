"""Activations from one pipeline stage to the next: point-to-point sends of tensor lists.

A stage's output is a list of tensors (one per view) whose shapes the receiver
does not know in advance (masking keeps a per-step number of tokens, decoding
tokens join some blocks), so every message starts with a small header of
shapes and dtypes. A tensor arrives with the strides it left with (a transposed
output stays transposed, without a copy): kernels choose their code path by
memory layout, and another path rounds differently. Sends are asynchronous (``isend``): a stage hands its
output over and moves on to its next batch; the send of step t is waited for
only when step t + 1 sends, so one message per link is in flight.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
"""The activation dtypes a header can name (by index)."""
MAX_DIMS = 6
"""Dimensions a header can describe per tensor."""
PER_TENSOR = 2 + 2 * MAX_DIMS
"""Header entries per tensor: dtype, ndim, the shape it travels in, the order of its dims."""


def memory_order(x: torch.Tensor) -> list[int]:
    """The dims of ``x`` from the slowest-varying in memory to the fastest: ``x.permute`` of
    this order is contiguous when ``x`` is a permuted dense tensor (a transposed output)."""
    return sorted(range(x.ndim), key=lambda d: (-x.stride(d), -x.size(d)))


class ActivationLink:
    """The sending end to rank ``to`` and the receiving end from rank ``source`` (either may
    be None) of one process, on ``device``, over the default process group."""

    def __init__(self, source: int | None, to: int | None, device: torch.device) -> None:
        self.source, self.to, self.device = source, to, device
        self._in_flight: list[tuple[dist.Work, torch.Tensor]] = []

    def send(self, xs: list[torch.Tensor]) -> None:
        """Send ``xs`` (detached) to the next stage without waiting for it to arrive."""
        assert self.to is not None, "the last stage sends nothing"
        self.wait()
        header = torch.zeros(1 + len(xs) * PER_TENSOR, dtype=torch.int64)
        header[0] = len(xs)
        payload = [header]
        for i, x in enumerate(xs):
            if x.ndim > MAX_DIMS or x.dtype not in DTYPES:
                raise ValueError(f"cannot send a {x.dtype} tensor of shape {tuple(x.shape)}")
            order = memory_order(x)
            dense = x.detach().permute(order)
            if not dense.is_contiguous():  # gaps in its storage: send a compact copy
                order, dense = list(range(x.ndim)), x.detach().contiguous()
            at = 1 + i * PER_TENSOR
            header[at] = DTYPES.index(x.dtype)
            header[at + 1] = x.ndim
            header[at + 2 : at + 2 + x.ndim] = torch.tensor(dense.shape)
            header[at + 2 + MAX_DIMS : at + 2 + MAX_DIMS + x.ndim] = torch.tensor(order)
            payload.append(dense)
        payload[0] = header.to(self.device)
        for t in payload:
            self._in_flight.append((dist.isend(t, self.to), t))

    def recv(self, views: int) -> list[torch.Tensor]:
        """The ``views`` tensors the previous stage sent for the next micro-batch."""
        assert self.source is not None, "the first stage receives nothing"
        header = torch.zeros(1 + views * PER_TENSOR, dtype=torch.int64, device=self.device)
        dist.recv(header, self.source)
        header = header.cpu()
        if int(header[0]) != views:
            raise RuntimeError(f"rank {self.source} sent {int(header[0])} views, not {views}")
        out = []
        for i in range(views):
            at = 1 + i * PER_TENSOR
            dtype, ndim = DTYPES[int(header[at])], int(header[at + 1])
            shape = header[at + 2 : at + 2 + ndim].tolist()
            order = header[at + 2 + MAX_DIMS : at + 2 + MAX_DIMS + ndim].tolist()
            x = torch.empty(shape, dtype=dtype, device=self.device)
            dist.recv(x, self.source)
            out.append(x.permute([order.index(d) for d in range(ndim)]))
        return out

    def wait(self) -> None:
        """Wait until every send in flight has been delivered."""
        for work, _ in self._in_flight:
            work.wait()
        self._in_flight.clear()
