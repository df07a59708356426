"""Activations from one pipeline stage to the next: point-to-point sends of tensor lists.

A stage's output is a list of tensors (one per view) whose shapes the receiver
does not know in advance (masking keeps a per-step number of tokens, decoding
tokens join some blocks), so every message starts with a small header of
shapes and dtypes. Sends are asynchronous (``isend``): a stage hands its
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
        header = torch.zeros(1 + len(xs) * (2 + MAX_DIMS), dtype=torch.int64)
        header[0] = len(xs)
        for i, x in enumerate(xs):
            if x.ndim > MAX_DIMS or x.dtype not in DTYPES:
                raise ValueError(f"cannot send a {x.dtype} tensor of shape {tuple(x.shape)}")
            at = 1 + i * (2 + MAX_DIMS)
            header[at] = DTYPES.index(x.dtype)
            header[at + 1] = x.ndim
            header[at + 2 : at + 2 + x.ndim] = torch.tensor(x.shape)
        payload = [header.to(self.device), *(x.detach().contiguous() for x in xs)]
        for t in payload:
            self._in_flight.append((dist.isend(t, self.to), t))

    def recv(self, views: int) -> list[torch.Tensor]:
        """The ``views`` tensors the previous stage sent for the next micro-batch."""
        assert self.source is not None, "the first stage receives nothing"
        header = torch.zeros(1 + views * (2 + MAX_DIMS), dtype=torch.int64, device=self.device)
        dist.recv(header, self.source)
        header = header.cpu()
        if int(header[0]) != views:
            raise RuntimeError(f"rank {self.source} sent {int(header[0])} views, not {views}")
        out = []
        for i in range(views):
            at = 1 + i * (2 + MAX_DIMS)
            dtype, ndim = DTYPES[int(header[at])], int(header[at + 1])
            shape = header[at + 2 : at + 2 + ndim].tolist()
            x = torch.empty(shape, dtype=dtype, device=self.device)
            dist.recv(x, self.source)
            out.append(x)
        return out

    def wait(self) -> None:
        """Wait until every send in flight has been delivered."""
        for work, _ in self._in_flight:
            work.wait()
        self._in_flight.clear()
