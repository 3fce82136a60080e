"""Frames as graphs with labels, ready to batch: held in memory, or read from disk batch by batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from tensorfuse.data._graph import AtomicGraph, batch_graphs
from tensorfuse.data._io import Frame
from tensorfuse.data._neighbors import neighbor_list
from tensorfuse.data._on_disk import OnDiskFrames


@dataclass(frozen=True)
class Targets:
    """Labels of a batch; ``has_*`` marks the structures that have each label."""

    energy: torch.Tensor  # [B]
    forces: torch.Tensor  # [N, 3]
    stress: torch.Tensor  # [B, 3, 3]
    has_energy: torch.Tensor  # [B] bool
    has_forces: torch.Tensor  # [B] bool
    has_stress: torch.Tensor  # [B] bool
    weight: torch.Tensor  # [B]
    states: "StateTargets | None" = None

    def to(self, device=None, dtype=None) -> "Targets":
        moved = {k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
                 for k, v in self.__dict__.items() if k != "states"}
        return Targets(**moved, states=self.states.to(device, dtype) if self.states is not None else None)


@dataclass(frozen=True)
class StateTargets:
    """Labels of several electronic states (zeros where ``has_*`` is false)."""

    energy: torch.Tensor  # [B, S]
    forces: torch.Tensor  # [N, S, 3]
    couplings: torch.Tensor  # [N, P, 3], ΔE·d in eV/Å
    has_energy: torch.Tensor  # [B, S] bool
    has_forces: torch.Tensor  # [B, S] bool
    has_couplings: torch.Tensor  # [B, P] bool

    def to(self, device=None, dtype=None) -> "StateTargets":
        return StateTargets(**{k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
                               for k, v in self.__dict__.items()})

    @staticmethod
    def of(frames, dtype) -> "StateTargets":
        labels = [f.states for f in frames]

        def zeros_for_nan(x):
            return torch.as_tensor(np.nan_to_num(x, nan=0.0), dtype=dtype)

        return StateTargets(
            energy=zeros_for_nan(np.stack([l.energies for l in labels])),
            forces=zeros_for_nan(np.concatenate([l.forces.transpose(1, 0, 2) for l in labels])),
            couplings=zeros_for_nan(np.concatenate([l.couplings.transpose(1, 0, 2) for l in labels])),
            has_energy=torch.as_tensor(np.stack([l.has_energy for l in labels])),
            has_forces=torch.as_tensor(np.stack([l.has_forces for l in labels])),
            has_couplings=torch.as_tensor(np.stack([l.has_couplings for l in labels])),
        )


class GraphDataset(torch.utils.data.Dataset):
    """Frames with their neighbour lists (computed once for ``r_max``) and labels."""

    def __init__(self, frames: Sequence[Frame], r_max: float, dtype: torch.dtype = torch.float64):
        self.frames = list(frames)
        self.r_max, self.dtype = float(r_max), dtype
        self.graphs = [
            AtomicGraph.from_arrays(f.positions, f.numbers, r_max, f.cell, f.pbc, dtype=dtype) for f in self.frames
        ]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> int:
        return index  # batches are assembled by `collate` from indices

    def collate(self, indices: Sequence[int]) -> tuple[AtomicGraph, Targets]:
        return collate_frames([self.frames[i] for i in indices], [self.graphs[i] for i in indices], self.dtype)

    def average_num_neighbors(self) -> float:
        edges = sum(g.num_edges for g in self.graphs)
        atoms = sum(g.num_atoms for g in self.graphs)
        return edges / max(atoms, 1)

    def atom_counts(self) -> np.ndarray:
        return np.array([f.num_atoms for f in self.frames], dtype=np.int64)

    def energy_labels(self, indices: Sequence[int], num_states: int = 1) -> np.ndarray:
        """``[len(indices), num_states]`` energies (eV), NaN where a frame has none."""
        return _energy_labels([self.frames[i] for i in indices], num_states)


class OnDiskGraphDataset(torch.utils.data.Dataset):
    """A split of an on-disk data set (:class:`~tensorfuse.data._on_disk.OnDiskFrames`): frames are
    read, and their neighbour lists computed, when a batch is loaded; nothing is held per atom."""

    def __init__(self, frames: OnDiskFrames, r_max: float, dtype: torch.dtype = torch.float64):
        self.frames, self.r_max, self.dtype = frames, float(r_max), dtype

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> int:
        return index

    def collate(self, indices: Sequence[int]) -> tuple[AtomicGraph, Targets]:
        frames = self.frames.load(indices)
        graphs = [AtomicGraph.from_arrays(f.positions, f.numbers, self.r_max, f.cell, f.pbc, dtype=self.dtype)
                  for f in frames]
        return collate_frames(frames, graphs, self.dtype)

    def average_num_neighbors(self) -> float:
        """Edges per atom within ``r_max``: as the validation pass counted them, or by a pass of its own."""
        counted = self.frames.neighbour_counts.get(self.r_max)
        if counted:
            return counted["edges"] / max(counted["atoms"], 1)
        edges = atoms = 0
        for f in self.frames:
            edges += len(neighbor_list(f.positions, f.cell, f.pbc, self.r_max)[0])
            atoms += f.num_atoms
        return edges / max(atoms, 1)

    def atom_counts(self) -> np.ndarray:
        return self.frames.atom_counts()

    def energy_labels(self, indices: Sequence[int], num_states: int = 1) -> np.ndarray:
        if num_states > 1:
            raise ValueError("on-disk data sets hold the labels of one state")
        return self.frames.energies(np.asarray(indices)).reshape(-1, 1)


def graph_dataset(frames, r_max: float, dtype: torch.dtype = torch.float64):
    """The dataset of a split: in memory for a list of frames, read by batch for an on-disk split."""
    if isinstance(frames, OnDiskFrames):
        return OnDiskGraphDataset(frames, r_max, dtype)
    return GraphDataset(frames, r_max, dtype)


def collate_frames(frames: Sequence[Frame], graphs: Sequence[AtomicGraph], dtype) -> tuple[AtomicGraph, Targets]:
    """One batch: the graphs joined, the frames' labels as :class:`Targets` (zeros where missing)."""
    graph = batch_graphs(graphs)
    energy = torch.tensor([f.energy if f.energy is not None else 0.0 for f in frames], dtype=dtype)
    forces = torch.cat([
        torch.as_tensor(f.forces if f.forces is not None else np.zeros((f.num_atoms, 3)), dtype=dtype)
        for f in frames
    ])
    stress = torch.stack([torch.as_tensor(_stress_of(f), dtype=dtype) for f in frames])
    return graph, Targets(
        energy=energy,
        forces=forces,
        stress=stress,
        has_energy=torch.tensor([f.energy is not None for f in frames]),
        has_forces=torch.tensor([f.forces is not None for f in frames]),
        has_stress=torch.tensor([f.stress is not None or f.virial is not None for f in frames]),
        weight=torch.tensor([f.weight for f in frames], dtype=dtype),
        states=StateTargets.of(frames, dtype) if frames[0].states is not None else None,
    )


def _energy_labels(frames: Sequence[Frame], num_states: int) -> np.ndarray:
    if num_states > 1:
        return np.array([f.states.energies for f in frames], dtype=np.float64).reshape(-1, num_states)
    return np.array([np.nan if f.energy is None else f.energy for f in frames], dtype=np.float64).reshape(-1, 1)


def _stress_of(frame: Frame) -> np.ndarray:
    if frame.stress is not None:
        return frame.stress
    if frame.virial is not None:
        volume = abs(np.linalg.det(frame.cell))
        return -frame.virial / volume if volume > 0 else np.zeros((3, 3))
    return np.zeros((3, 3))
