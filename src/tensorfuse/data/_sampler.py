"""The global batches of a training epoch: a fixed number of frames, or frames up to a budget of atoms.

Every rank of a data-parallel run draws the same permutation from the run's generator (whose state
every checkpoint holds, so a resumed run draws the epochs it did not finish exactly as the
uninterrupted run would) and reads only its share of each global batch
(:meth:`~tensorfuse.train._distributed.Distributed.shard`). The permutation and the batch
boundaries are arrays (8 bytes per frame, and 4 for the atom counts of a budget); batches are made
as they are asked for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch


@dataclass(frozen=True)
class EpochBatches:
    """Batch ``k`` is ``order[starts[k]:starts[k + 1]]`` (positions in the dataset)."""

    order: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __iter__(self) -> Iterator[list[int]]:
        for start, stop in zip(self.starts[:-1].tolist(), self.starts[1:].tolist()):
            yield self.order[start:stop].tolist()


class BatchSampler:
    """Shuffled global batches of ``batch_size`` frames, or, with ``batch_atoms``, of as many
    consecutive frames of the shuffled order as fit in ``batch_atoms`` atoms (for data sets of mixed
    sizes: batches of about equal cost; ``atom_counts`` per frame). A frame larger than the budget
    is a batch of its own."""

    def __init__(self, num_frames: int, batch_size: int, batch_atoms: int | None = None,
                 atom_counts: np.ndarray | None = None):
        self.num_frames, self.batch_size, self.batch_atoms = int(num_frames), int(batch_size), batch_atoms
        self.atom_counts = None
        if batch_atoms is not None:
            self.atom_counts = np.asarray(atom_counts, dtype=np.int32)  # 4 bytes per frame of a large data set
            if len(self.atom_counts) != self.num_frames:
                raise ValueError(f"{len(self.atom_counts)} atom counts for {self.num_frames} frames")
            larger = self.atom_counts > batch_atoms
            if larger.any():
                warnings.warn(f"{int(larger.sum())} of {len(larger)} training frames have more atoms than "
                              f"training.batch_atoms={batch_atoms} (largest: {int(self.atom_counts.max())}): each is a "
                              "batch of its own", stacklevel=2)

    def __len__(self) -> int:
        return self.num_frames

    def epoch(self, generator: torch.Generator) -> EpochBatches:
        n = self.num_frames
        order = torch.randperm(n, generator=generator).numpy()
        if self.batch_atoms is None:
            starts = np.append(np.arange(0, n, self.batch_size), n) if n else np.zeros(1)
        else:
            starts = budget_starts(self.atom_counts[order], self.batch_atoms)
        return EpochBatches(order, starts.astype(np.int64))


def budget_starts(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Where each batch starts (and, last, the end) when consecutive ``sizes`` are filled up to ``budget``."""
    starts, total = [0], 0
    for offset in range(0, len(sizes), 65536):  # Python ints for a block at a time, not for every frame
        for k, size in enumerate(sizes[offset : offset + 65536].tolist(), start=offset):
            if total and total + size > budget:
                starts.append(k)
                total = 0
            total += size
    if len(sizes):
        starts.append(len(sizes))
    return np.array(starts, dtype=np.int64)
