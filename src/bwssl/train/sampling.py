"""Deterministic clip order, augmentation seeds and masks, keyed by (seed, epoch, step).

Every random choice of a training step is a pure function of the run seed, the
epoch and the step within the epoch. So regimes with the same seed see the same
clips, augmentations and masks in the same order (sequential stage k replays
the simultaneous epochs), a resumed run continues the exact stream, and the
number of data-loader workers or processes changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from bwssl.data.masking import make_mask, num_visible


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence([abs(int(k)) for k in keys]).generate_state(1)[0])


class EpochBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(index, aug_seed)`` keys for one epoch.

    Each global batch of ``batch_size`` keys is split across ``world`` processes
    (this one takes ``rank::world``); ``start`` skips batches already trained.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, epoch: int = 0,
                 start: int = 0, rank: int = 0, world: int = 1) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.epoch, self.start, self.rank, self.world = epoch, start, rank, world

    def steps(self) -> int:
        return self.num_items // self.batch_size

    def __len__(self) -> int:
        return self.steps() - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng(_seed(self.seed, self.epoch, 1))
        order = rng.permutation(self.num_items)
        aug = rng.integers(0, 2**31 - 1, size=self.num_items)
        for step in range(self.start, self.steps()):
            idx = order[step * self.batch_size:(step + 1) * self.batch_size]
            yield [(int(i), int(aug[i])) for i in idx[self.rank::self.world]]


def step_mask(kind: str, batch: int, grid: tuple[int, int, int], ratio: float, seed: int,
              epoch: int, step: int) -> torch.Tensor:
    """The (batch, N) mask of a global training batch."""
    gen = torch.Generator().manual_seed(_seed(seed, epoch, step, 2))
    return make_mask(kind, batch, grid, ratio, gen)


def step_targets(masked_idx: torch.Tensor, fraction: float, seed: int, epoch: int,
                 step: int) -> torch.Tensor:
    """Decoder masking: a seeded subset of the masked tokens for the decoders to rebuild.

    ``masked_idx`` is (B, N_mask); returns (B, M) with M = round(fraction * N_mask).
    """
    if fraction >= 1.0:
        return masked_idx
    b, n = masked_idx.shape
    m = num_visible(n, 1.0 - fraction)
    gen = torch.Generator().manual_seed(_seed(seed, epoch, step, 3))
    pick = torch.rand(b, n, generator=gen).argsort(dim=1)[:, :m].sort(dim=1).values
    return torch.gather(masked_idx, 1, pick.to(masked_idx.device))
