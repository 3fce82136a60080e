"""Dataset statistics stored in the model: reference energies, force scale, neighbour count."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from tensorfuse.data._io import DataError, Frame, isolated_atom_energies
from tensorfuse.model._config import Statistics


def least_squares_e0s(frames: Sequence[Frame], species: Sequence[int], ridge: float = 1e-8) -> dict[int, float]:
    """E0 per element minimizing ``sum_frames (E - sum_Z n_Z E0_Z)^2`` (MACE's ``average``)."""
    rows = [f for f in frames if f.energy is not None]
    if not rows:
        raise DataError("cannot fit reference energies: no training frame has an energy")
    counts = np.array([[np.sum(f.numbers == z) for z in species] for f in rows], dtype=np.float64)
    energies = np.array([f.energy for f in rows])
    solution = np.linalg.solve(counts.T @ counts + ridge * np.eye(len(species)), counts.T @ energies)
    return {int(z): float(e) for z, e in zip(species, solution)}


def atomic_energies(frames: Sequence[Frame], isolated: Sequence[Frame], species, e0s: Any) -> tuple[dict, str]:
    """Reference energies and how they were obtained."""
    if isinstance(e0s, dict):
        missing = [z for z in species if z not in e0s]
        if missing:
            raise DataError(f"data.e0s gives no reference energy for element(s) Z={missing}")
        return {z: e0s[z] for z in species}, "given"
    from_isolated = isolated_atom_energies(isolated)
    if e0s == "isolated" or (e0s == "auto" and from_isolated):
        missing = [z for z in species if z not in from_isolated]
        if missing:
            raise DataError(f"isolated-atom energies are missing for element(s) Z={missing}: add single-atom "
                            "frames to the training file or set data.e0s to 'average' or a mapping")
        return {z: from_isolated[z] for z in species}, "isolated atoms"
    return least_squares_e0s(frames, species), "least squares"


def compute_statistics(frames: Sequence[Frame], avg_num_neighbors: float, e0: dict) -> Statistics:
    """Force-RMS scale (or energy spread without forces) and the neighbour count, as MACE does."""
    forces = [f.forces for f in frames if f.forces is not None]
    if forces:
        scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    else:
        residuals = [(f.energy - sum(e0[int(z)] for z in f.numbers)) / f.num_atoms for f in frames if f.energy is not None]
        scale = float(np.std(residuals)) if len(residuals) > 1 else 1.0
    return Statistics(avg_num_neighbors=avg_num_neighbors, atomic_energies=e0,
                      energy_scale=scale if scale > 1e-8 else 1.0)


def refit_energy_shift(model, dataset, batch_size: int, dist=None) -> dict[int, float]:
    """Re-fit the per-element energy shift of ``model`` to ``dataset``'s energies, in place.

    Training on forces (weighted 100:1, as MACE does) learns the constant part of the energy very
    slowly; the forces do not depend on it. A least-squares fit of one shift per element to the
    residuals ``E_ref - E_model`` (minimum norm where compositions do not tell elements apart) fixes
    that exactly, after training, leaving every force unchanged. Returns the new shifts (Z -> eV).
    """
    import torch

    energy_model = model.energy_model
    species = energy_model.config.species
    z = len(species)
    dtype = energy_model.priors.shift.dtype
    gram = torch.zeros(z, z, dtype=torch.float64)
    rhs = torch.zeros(z, dtype=torch.float64)
    indices = list(range(len(dataset)))
    local = dist.shard(indices) if dist is not None and dist.enabled else indices
    with torch.no_grad():
        for start in range(0, len(local), batch_size):
            graph, targets = dataset.collate(local[start : start + batch_size])
            device = energy_model.priors.shift.device
            graph = graph.to(device)
            energy = model(graph, forces=False)["energy"].double().cpu()
            onehot = torch.nn.functional.one_hot(energy_model.species_table(graph.numbers).cpu(), z).double()
            counts = torch.zeros(graph.num_graphs, z, dtype=torch.float64).index_add_(0, graph.batch.cpu(), onehot)
            keep = targets.has_energy.cpu()
            counts, residual = counts[keep], (targets.energy.double() - energy)[keep]
            gram += counts.T @ counts
            rhs += counts.T @ residual
    if dist is not None and dist.enabled:
        gram, rhs = dist.sum_(gram), dist.sum_(rhs)
    delta = torch.linalg.pinv(gram) @ rhs
    energy_model.priors.shift += delta.to(dtype=dtype, device=energy_model.priors.shift.device)
    shifts = {int(zi): float(v) for zi, v in zip(species, energy_model.priors.shift.cpu())}
    config = energy_model.config
    energy_model.config = config.replace(statistics=dataclasses.replace(config.statistics, energy_shift=shifts))
    return shifts
