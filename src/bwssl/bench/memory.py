"""Peak memory of a block of code, on CPU or CUDA.

On GPU it is CUDA's ``max_memory_allocated``. On CPU it is the running sum of
the CPU allocator's own allocation and free events as ``torch.profiler``
reports them (``profile_memory=True``): every tensor, kernel workspace and
autograd buffer that goes through c10's CPU allocator is seen, and nothing
else. The process RSS is not used: it also counts the Python heap, libraries
and freed memory that malloc keeps. A ``TorchDispatchMode`` that tracks op
outputs was not used either: it misses buffers that kernels allocate
internally and needs weak references to learn when a storage dies. The
profiler slows the code it watches, so timed steps never run inside it.
"""

from __future__ import annotations

import gc
from types import TracebackType

import torch


class PeakMemory:
    """Peak bytes torch allocates on ``device`` inside the ``with`` block, above the entry level.

    After the block, ``peak`` is the highest live total reached and ``retained``
    what is still live at exit, both relative to entry; ``events`` is the number
    of CPU allocator events seen (0 on CUDA).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self.retained = 0
        self.events = 0
        self._floor = 0
        self._prof: torch.profiler.profile | None = None

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._floor = torch.cuda.memory_allocated(self.device)
        else:
            self._prof = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
            )
            self._prof.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self._floor
            self.retained = torch.cuda.memory_allocated(self.device) - self._floor
            return
        assert self._prof is not None
        self._prof.__exit__(kind, exc, tb)
        if kind is not None:
            return
        # Allocation events carry +bytes, frees -bytes; their running sum is the live total.
        cpu = torch.autograd.DeviceType.CPU
        deltas = sorted(
            (e.start_ns(), e.nbytes())
            for e in self._prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == cpu
        )
        live = peak = 0
        for _, nbytes in deltas:
            live += nbytes
            peak = max(peak, live)
        self.peak, self.retained, self.events = peak, live, len(deltas)
        self._prof = None
