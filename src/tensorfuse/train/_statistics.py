"""Dataset statistics stored in the model: reference energies, force scale, neighbour count."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from tensorfuse.data._io import DataError, Frame, isolated_atom_energies
from tensorfuse.model._config import Statistics


RIDGE = 1e-8  # per-element fits: compositions that do not tell elements apart get a near minimum-norm split


def composition(frames: Sequence[Frame], species: Sequence[int]) -> np.ndarray:
    """``[frames, species]``: how many atoms of each element every frame has."""
    return np.array([[np.sum(f.numbers == z) for z in species] for f in frames], dtype=np.float64)


def _per_element_fit(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """Solution of the (ridge-regularised) normal equations of a per-element least-squares fit."""
    return np.linalg.solve(gram + RIDGE * np.eye(len(rhs)), rhs)


def least_squares_e0s(frames: Sequence[Frame], species: Sequence[int]) -> dict[int, float]:
    """E0 per element minimizing ``sum_frames (E - sum_Z n_Z E0_Z)^2`` (MACE's ``average``)."""
    rows = [f for f in frames if f.energy is not None]
    if not rows:
        raise DataError("cannot fit reference energies: no training frame has an energy")
    counts = composition(rows, species)
    energies = np.array([f.energy for f in rows])
    solution = _per_element_fit(counts.T @ counts, counts.T @ energies)
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


def compute_statistics(frames: Sequence[Frame], avg_num_neighbors: float, e0: dict, states=None) -> Statistics:
    """Force-RMS scale (or energy spread without forces) and the neighbour count, as MACE does.

    With several ``states`` (:class:`~tensorfuse.data._states.StateKeys`), also one energy shift
    per element and state, fitted to each state's energies above the reference energies (the
    excitation energies are then where training starts)."""
    forces = [f.forces for f in frames if f.forces is not None]
    if forces:
        scale = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    else:
        residuals = [(f.energy - sum(e0[int(z)] for z in f.numbers)) / f.num_atoms for f in frames if f.energy is not None]
        scale = float(np.std(residuals)) if len(residuals) > 1 else 1.0
    shift = {}
    if states is not None:
        species = sorted(e0)
        per_state = []
        for s in range(len(states.names)):
            rows = [f for f in frames if f.states.has_energy[s]]
            counts = composition(rows, species)
            residual = np.array([f.states.energies[s] - sum(e0[int(z)] for z in f.numbers) for f in rows])
            per_state.append(_per_element_fit(counts.T @ counts, counts.T @ residual) if rows else np.zeros(len(species)))
        shift = {int(z): [float(per_state[s][k]) for s in range(len(states.names))] for k, z in enumerate(species)}
    return Statistics(avg_num_neighbors=avg_num_neighbors, atomic_energies=e0,
                      energy_scale=scale if scale > 1e-8 else 1.0, energy_shift=shift)


def refit_energy_shift(model, dataset, batch_size: int, dist=None) -> dict[int, float]:
    """Re-fit the per-element energy shift of ``model`` to ``dataset``'s energies, in place.

    Training on forces (weighted 100:1, as MACE does) learns the constant part of the energy very
    slowly; the forces do not depend on it. A least-squares fit of one shift per element to the
    residuals ``E_ref - E_model`` (near minimum norm where compositions do not tell elements apart) fixes
    that exactly, after training, leaving every force unchanged. Returns the new shifts (Z -> eV).
    """
    import torch

    energy_model = model.energy_model
    statistics = energy_model.config.statistics
    species = energy_model.config.species
    device = next(model.parameters()).device
    indices = list(range(len(dataset)))
    local = dist.shard(indices) if dist is not None and dist.enabled else indices
    num_states = energy_model.config.num_states
    if num_states > 1:  # frames with every state's energy
        local = [i for i in local if dataset.frames[i].states.has_energy.all()]
    else:
        local = [i for i in local if dataset.frames[i].energy is not None]
    predicted = []
    with torch.no_grad():
        for start in range(0, len(local), batch_size):
            graph, _ = dataset.collate(local[start : start + batch_size])
            predicted.append(model(graph.to(device), forces=False)["energy"].double().cpu().numpy())
    counts = composition([dataset.frames[i] for i in local], species)
    if num_states > 1:
        energies = np.array([dataset.frames[i].states.energies for i in local]).reshape(-1, num_states)
    else:
        energies = np.array([dataset.frames[i].energy for i in local]).reshape(-1, 1)
    residual = energies - np.concatenate(predicted).reshape(-1, num_states) if predicted else energies
    gram, rhs = torch.from_numpy(counts.T @ counts), torch.from_numpy(counts.T @ residual)  # rhs [Z, S]
    if dist is not None and dist.enabled:  # on the process group's device (nccl reduces GPU tensors only)
        gram, rhs = (dist.sum_(x.to(dist.device)).cpu() for x in (gram, rhs))
    delta = _per_element_fit(gram.numpy(), rhs.numpy())  # [Z, S]
    if num_states > 1:
        shifts = {int(z): [a + float(d) for a, d in zip(statistics.shift_of(int(z), num_states), delta[k])]
                  for k, z in enumerate(species)}
    else:
        shifts = {int(z): statistics.energy_shift.get(int(z), 0.0) + float(delta[k, 0]) for k, z in enumerate(species)}
    energy_model.set_statistics(dataclasses.replace(statistics, energy_shift=shifts))
    return shifts
