"""Deterministic clip order and augmentation seeds, keyed by (seed, epoch, step).

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

from bwssl.objectives.base import derive_seed


class EpochBatchSampler(torch.utils.data.Sampler[list[tuple[int, int]]]):
    """Yields batches of ``(index, aug_seed)`` keys for one epoch.

    Each global batch of ``batch_size`` keys is split across ``world`` processes
    (this one takes ``rank::world``); ``start`` skips batches already trained.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        epoch: int = 0,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.epoch, self.start, self.rank, self.world = epoch, start, rank, world

    def steps(self) -> int:
        return self.num_items // self.batch_size

    def __len__(self) -> int:
        return self.steps() - self.start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng(derive_seed(self.seed, self.epoch, 1))
        order = rng.permutation(self.num_items)
        aug = rng.integers(0, 2**31 - 1, size=self.num_items)
        for step in range(self.start, self.steps()):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            yield [(int(i), int(aug[i])) for i in idx[self.rank :: self.world]]
