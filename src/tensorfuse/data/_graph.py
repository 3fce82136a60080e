"""Atomic structures as batched graphs: positions, species, edges with periodic shifts."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch

from tensorfuse.data._neighbors import neighbor_list


@dataclass(frozen=True)
class AtomicGraph:
    """One or many structures as a single graph (a batch is the disjoint union of its members).

    Edges are directed pairs within the cutoff: ``edge_index[0]`` is the neighbour (sender)
    ``j`` and ``edge_index[1]`` the centre (receiver) ``i`` whose features the edge updates. The
    edge vector points from the centre to the neighbour: ``r_ij = x_j - x_i + unit_shift @ cell``.

    Attributes
    ----------
    positions : ``[N, 3]`` Cartesian positions (Å).
    numbers : ``[N]`` atomic numbers (long).
    edge_index : ``[2, E]`` (long).
    unit_shifts : ``[E, 3]`` integer lattice translations of the neighbour (stored as floats).
    cell : ``[B, 3, 3]`` lattice vectors as rows (zeros where there is no cell).
    pbc : ``[B, 3]`` periodicity of each axis (bool).
    batch : ``[N]`` index of the structure of each atom (long).
    """

    positions: torch.Tensor
    numbers: torch.Tensor
    edge_index: torch.Tensor
    unit_shifts: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    batch: torch.Tensor

    # -- sizes -------------------------------------------------------------------------------
    @property
    def num_atoms(self) -> int:
        return self.positions.shape[0]

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]

    @property
    def num_graphs(self) -> int:
        return self.cell.shape[0]

    def atoms_per_graph(self) -> torch.Tensor:
        return torch.bincount(self.batch, minlength=self.num_graphs)

    # -- geometry ----------------------------------------------------------------------------
    def shifts(self, cell: torch.Tensor | None = None) -> torch.Tensor:
        """Cartesian shift of each edge's neighbour image: ``unit_shift @ cell`` ``[E, 3]``."""
        cell = self.cell if cell is None else cell
        edge_graph = self.batch[self.edge_index[1]]
        return torch.einsum("ei,eij->ej", self.unit_shifts, cell[edge_graph])

    def edge_vectors(self, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None) -> torch.Tensor:
        """``r_ij = x_j - x_i + shift`` for every edge ``[E, 3]`` (optionally with other positions/cell)."""
        positions = self.positions if positions is None else positions
        sender, receiver = self.edge_index
        return positions[sender] - positions[receiver] + self.shifts(cell)

    def volume(self) -> torch.Tensor:
        return torch.linalg.det(self.cell).abs()

    # -- conversions -------------------------------------------------------------------------
    def to(self, device=None, dtype: torch.dtype | None = None) -> "AtomicGraph":
        """Move to ``device``; floating tensors (positions, shifts, cell) take ``dtype``."""
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value.is_floating_point():
                changes[f.name] = value.to(device=device, dtype=dtype)
            else:
                changes[f.name] = value.to(device=device)
        return replace(self, **changes)

    def with_positions(self, positions: torch.Tensor) -> "AtomicGraph":
        return replace(self, positions=positions)

    @staticmethod
    def from_atoms(atoms, cutoff: float, dtype: torch.dtype | None = None) -> "AtomicGraph":
        """Graph of an ASE ``Atoms`` with all neighbours within ``cutoff`` (periodic images included)."""
        return AtomicGraph.from_arrays(
            atoms.get_positions(), atoms.get_atomic_numbers(), cutoff, atoms.cell.array, atoms.pbc, dtype
        )

    @staticmethod
    def from_arrays(
        positions,
        numbers,
        cutoff: float,
        cell=None,
        pbc=(False, False, False),
        dtype: torch.dtype | None = None,
    ) -> "AtomicGraph":
        """Graph from numpy-like positions ``[N, 3]``, atomic numbers ``[N]``, cell ``[3, 3]`` and pbc."""
        dtype = torch.get_default_dtype() if dtype is None else dtype
        positions = np.asarray(positions, dtype=np.float64)
        numbers = np.asarray(numbers)
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
        if numbers.shape != (positions.shape[0],):
            raise ValueError(f"numbers must have shape [{positions.shape[0]}], got {numbers.shape}")
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        sender, receiver, unit_shifts = neighbor_list(positions, cell, pbc, cutoff)
        return AtomicGraph(
            positions=torch.tensor(positions, dtype=dtype),
            numbers=torch.tensor(numbers, dtype=torch.long),
            edge_index=torch.tensor(np.stack([sender, receiver]), dtype=torch.long),
            unit_shifts=torch.tensor(unit_shifts, dtype=dtype),
            cell=torch.tensor(cell, dtype=dtype).unsqueeze(0),
            pbc=torch.tensor(pbc).unsqueeze(0),
            batch=torch.zeros(len(numbers), dtype=torch.long),
        )


def batch_graphs(graphs: Sequence[AtomicGraph]) -> AtomicGraph:
    """Concatenate graphs into one batch (edge indices offset, ``batch`` numbering the members)."""
    if not graphs:
        raise ValueError("cannot batch an empty list of graphs")
    offsets = np.cumsum([0] + [g.num_atoms for g in graphs[:-1]])
    graph_offsets = np.cumsum([0] + [g.num_graphs for g in graphs[:-1]])
    return AtomicGraph(
        positions=torch.cat([g.positions for g in graphs]),
        numbers=torch.cat([g.numbers for g in graphs]),
        edge_index=torch.cat([g.edge_index + int(o) for g, o in zip(graphs, offsets)], dim=1),
        unit_shifts=torch.cat([g.unit_shifts for g in graphs]),
        cell=torch.cat([g.cell for g in graphs]),
        pbc=torch.cat([g.pbc for g in graphs]),
        batch=torch.cat([g.batch + int(o) for g, o in zip(graphs, graph_offsets)]),
    )
