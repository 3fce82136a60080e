"""Neighbour lists with periodic images, computed by vesin (a cell-list library made for atoms)."""

from __future__ import annotations

import numpy as np

MAX_COORDINATE = 1e5
"""Å: larger coordinates or cell vectors are refused (the cell-list neighbour search divides space
into cells of the cutoff's size; at 1e6 Å its cell counts overflow and the process dies with SIGFPE)."""


def neighbor_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs ``(j, i)`` with ``|x_j - x_i + S @ cell| < cutoff``, ``i != j`` or ``S != 0``.

    Returns ``(sender j, receiver i, unit shifts S [E, 3])``. Works for molecules (no periodic
    axis; the cell is ignored), slabs and bulk, including cells smaller than the cutoff (an atom
    then sees several images of a neighbour, and images of itself).
    """
    from vesin import NeighborList

    positions = np.ascontiguousarray(positions, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or infinite values")
    if len(positions) and np.abs(positions).max() > MAX_COORDINATE:
        raise ValueError(f"a coordinate of {np.abs(positions).max():.4g} Å: coordinates beyond "
                         f"{MAX_COORDINATE:g} Å are not supported")
    cell = np.asarray(cell, dtype=np.float64)
    if pbc.any():
        if not np.all(np.isfinite(cell)) or np.linalg.norm(cell, axis=1).max() > MAX_COORDINATE:
            raise ValueError(f"cell vectors must be finite and at most {MAX_COORDINATE:g} Å long, got {cell.tolist()}")
        if abs(np.linalg.det(cell)) < 1e-12:
            raise ValueError(f"a periodic structure needs a cell with non-zero volume, got {cell.tolist()}")
    else:
        cell = np.zeros((3, 3))
    if len(positions) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 3))
    calculator = NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts = calculator.compute(points=positions, box=cell, periodic=pbc, quantities="ijS")
    i, j, shifts = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64), np.asarray(shifts)
    # vesin's pair (i, j, S) has r = x_j - x_i + S @ cell: j is the neighbour of centre i.
    order = np.lexsort((j, i))  # deterministic order, grouped by centre
    return j[order], i[order], shifts[order].astype(np.float64)


def closest_distance(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float) -> float:
    """The shortest distance between two atoms (periodic images included), or ``inf`` when no pair
    is closer than ``cutoff``."""
    sender, receiver, shifts = neighbor_list(positions, cell, pbc, cutoff)
    if len(sender) == 0:
        return float("inf")
    cell = np.asarray(cell, dtype=np.float64) if np.any(pbc) else np.zeros((3, 3))
    vectors = positions[sender] - positions[receiver] + shifts @ cell
    return float(np.linalg.norm(vectors, axis=1).min())
