"""Deterministic sampling for the step-counted loop: what each step trains on depends only on
(seed, step), never on how many processes or data-loader workers there are or whether the run resumed.

For step s and global batch position j: dataset index perm_e[(s*B + j) mod N] with perm_e a permutation
seeded by (seed, epoch e), so each epoch visits every sample once; sample seed hash(seed, s, j); step seed
hash(seed, s), the same for every sample of the step on every rank (for choices a whole batch must share,
such as the size of its crops: SyntheticWeatherDataset's clean_crop).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

from dwgn.training.config import ConfigError


def mix_seed(*values: int) -> int:
    """A 32-bit seed from a tuple of non-negative ints (numpy's SeedSequence hash)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0])


class StepSampler(Sampler):
    """Yields, for each step in [start, steps), this rank's slice of the global batch as a list of
    `(dataset index, sample seed, step seed)`; indices walk a per-epoch permutation seeded by (seed, epoch)."""

    def __init__(self, n: int, global_batch: int, seed: int, start: int, steps: int, rank: int = 0, world: int = 1):
        if n <= 0:
            raise ValueError("the training set is empty")
        if global_batch % world:
            raise ConfigError(f"batch_size {global_batch} (the global batch) must divide evenly over {world} "
                              "processes; pick a multiple of the process count")
        self.n, self.batch, self.seed = n, global_batch, seed
        self.start, self.steps, self.rank, self.world = start, steps, rank, world
        self._perm: tuple[int, np.ndarray] | None = None

    def _index(self, position: int) -> int:
        epoch = position // self.n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 1, epoch]).permutation(self.n))
        return int(self._perm[1][position % self.n])

    def items(self, step: int) -> list[tuple[int, int, int]]:
        """This rank's `(index, sample_seed, step_seed)` triples for `step`."""
        local = self.batch // self.world
        js = range(self.rank * local, (self.rank + 1) * local)
        step_seed = mix_seed(self.seed, 3, step)
        return [(self._index(step * self.batch + j), mix_seed(self.seed, 2, step, j), step_seed) for j in js]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.steps):
            yield self.items(step)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)
