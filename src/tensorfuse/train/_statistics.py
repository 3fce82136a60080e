"""Dataset statistics stored in the model: reference energies, force scale, neighbour count."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from tensorfuse.data._io import DataError, Frame, isolated_atom_energies
from tensorfuse.model._config import Statistics

CHUNK = 4096  # frames per step of the statistics' passes
RANK_TOLERANCE = 1e-10  # eigenvalues of the composition Gram matrix below this (relative) span no element


def composition(frames: Sequence[Frame], species: Sequence[int]) -> np.ndarray:
    """``[frames, species]``: how many atoms of each element every frame has."""
    return np.array([[np.sum(f.numbers == z) for z in species] for f in frames], dtype=np.float64)


def per_element_fit(gram: np.ndarray, rhs: np.ndarray) -> tuple[np.ndarray, int]:
    """Minimum-norm solution of the normal equations of a per-element least-squares fit, and their
    rank. Frames of one composition (every molecular-dynamics set of one molecule) fix only the sum
    ``sum_Z n_Z E0_Z``: the minimum-norm split of it is defined and the same whatever the frames'
    order or chunking, where a solve of the near-singular system amplified rounding into arbitrary
    per-element values (0.1 eV apart between an ``.xyz`` file and the same frames on disk)."""
    values, vectors = np.linalg.eigh(gram)
    kept = values > RANK_TOLERANCE * max(values.max(initial=0.0), 1e-300)
    scale = values[kept].reshape(-1, *[1] * (np.ndim(rhs) - 1))  # rhs may hold one column per state
    solution = vectors[:, kept] @ ((vectors[:, kept].T @ rhs) / scale)
    return solution, int(kept.sum())


def least_squares_e0s(frames: Iterable[Frame], species: Sequence[int]) -> dict[int, float]:
    """E0 per element minimizing ``sum_frames (E - sum_Z n_Z E0_Z)^2`` (MACE's ``average``); the
    normal equations add up chunk by chunk, so that frames read from disk are never all in memory."""
    gram, rhs, labelled = np.zeros((len(species), len(species))), np.zeros(len(species)), 0
    for chunk in chunked(frames):
        rows = [f for f in chunk if f.energy is not None]
        if rows:
            counts = composition(rows, species)
            gram += counts.T @ counts
            rhs += counts.T @ np.array([f.energy for f in rows])
            labelled += len(rows)
    if not labelled:
        raise DataError("cannot fit reference energies: no training frame has an energy")
    solution, rank = per_element_fit(gram, rhs)
    if rank < len(species):
        warnings.warn(
            f"the training frames' compositions determine only {rank} combination(s) of the {len(species)} "
            "elements' reference energies (e.g. every frame is the same molecule): E0s are the minimum-norm "
            "least-squares solution, right for these compositions but not per element; set data.e0s or add "
            "isolated-atom frames for transferable E0s", stacklevel=2)
    return {int(z): float(e) for z, e in zip(species, solution)}


def chunked(frames: Iterable[Frame], size: int = CHUNK) -> Iterator[list[Frame]]:
    """Lists of at most ``size`` consecutive frames."""
    chunk = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
    force_squares, force_components, residuals = 0.0, 0, Moments()
    for chunk in chunked(frames):  # one pass, chunk by chunk (frames read from disk are never all in memory)
        forces = [f.forces for f in chunk if f.forces is not None]
        if forces:
            forces = np.concatenate(forces)
            force_squares += np.sum(forces**2)
            force_components += forces.size
        residuals.add([(f.energy - sum(e0[int(z)] for z in f.numbers)) / f.num_atoms for f in chunk
                       if f.energy is not None])
    if force_components:
        scale = float(np.sqrt(force_squares / force_components))
    else:
        scale = residuals.std() if residuals.count > 1 else 1.0
    shift = {}
    if states is not None:
        species = sorted(e0)
        per_state = []
        for s in range(len(states.names)):
            rows = [f for f in frames if f.states.has_energy[s]]
            counts = composition(rows, species)
            residual = np.array([f.states.energies[s] - sum(e0[int(z)] for z in f.numbers) for f in rows])
            per_state.append(per_element_fit(counts.T @ counts, counts.T @ residual)[0] if rows else np.zeros(len(species)))
        shift = {int(z): [float(per_state[s][k]) for s in range(len(states.names))] for k, z in enumerate(species)}
    return Statistics(avg_num_neighbors=avg_num_neighbors, atomic_energies=e0,
                      energy_scale=scale if scale > 1e-8 else 1.0, energy_shift=shift)


class Moments:
    """Count, mean and spread of values added in chunks (Chan et al.'s pairwise update); a single
    chunk gives exactly ``np.std`` of it."""

    def __init__(self):
        self.count, self.mean, self.squares, self.chunks, self.first = 0, 0.0, 0.0, 0, None

    def add(self, values) -> None:
        values = np.asarray(values, dtype=np.float64)
        if not len(values):
            return
        mean = float(values.mean())
        delta, total = mean - self.mean, self.count + len(values)
        self.squares += float(np.sum((values - mean) ** 2)) + delta**2 * self.count * len(values) / total
        self.mean += delta * len(values) / total
        self.count, self.chunks = total, self.chunks + 1
        self.first = values if self.chunks == 1 else None

    def std(self) -> float:
        if self.first is not None:
            return float(np.std(self.first))
        return float(np.sqrt(self.squares / self.count)) if self.count else 0.0


def refit_energy_shift(model, dataset, batch_size: int, dist=None) -> dict[int, float]:
    """Re-fit the per-element energy shift of ``model`` to ``dataset``'s energies, in place.

    Training on forces (weighted 100:1, as MACE does) learns the constant part of the energy very
    slowly; the forces do not depend on it. A least-squares fit of one shift per element to the
    residuals ``E_ref - E_model`` (minimum norm where compositions do not tell elements apart) fixes
    that exactly, after training, leaving every force unchanged. Each frame counts with its
    ``config_weight``, as in the loss (a frame of weight 0.1 moves the shift a tenth as much).
    Returns the new shifts (Z -> eV).
    The normal equations add up batch by batch: the dataset may be read from disk.

    The ordered states of a ``"diabatic"`` or ``"gaps"`` model depend on their shifts nonlinearly
    (a shift of a diabatic matrix's diagonal moves its eigenvalues by ``U_ak^2``): their shifts are
    fitted by Gauss–Newton steps on the same normal equations, with the energies' derivatives with
    respect to each state's shift taken by finite differences (forces are unchanged by shifts of
    the independent states, and near-unchanged by those of ordered ones).
    """
    energy_model = model.energy_model
    config = energy_model.config
    if config.num_states > 1 and config.state_energies != "independent":
        return _refit_ordered_shifts(model, dataset, batch_size, dist)
    statistics = config.statistics
    species = config.species
    num_states = config.num_states
    gram, rhs = np.zeros((len(species), len(species))), np.zeros((len(species), num_states))
    for graph, energies, predicted, weights in _predicted_batches(model, dataset, batch_size, dist):
        counts = graph_composition(graph, species)
        gram += counts.T @ (weights[:, None] * counts)
        rhs += counts.T @ (weights[:, None] * (energies - predicted.reshape(-1, num_states)))
    gram, rhs = _summed(dist, gram, rhs)
    delta, _ = per_element_fit(gram, rhs)  # [Z, S]
    if num_states > 1:
        shifts = {int(z): [a + float(d) for a, d in zip(statistics.shift_of(int(z), num_states), delta[k])]
                  for k, z in enumerate(species)}
    else:
        shifts = {int(z): statistics.energy_shift.get(int(z), 0.0) + float(delta[k, 0]) for k, z in enumerate(species)}
    energy_model.set_statistics(dataclasses.replace(statistics, energy_shift=shifts))
    return shifts


GAUSS_NEWTON_STEPS = 6
SHIFT_STEP = 1e-3  # eV: the finite difference of a state's shift


def _refit_ordered_shifts(model, dataset, batch_size: int, dist=None) -> dict:
    """Per-element, per-state shifts of an ordered multi-state model by Gauss–Newton (see above)."""
    import torch

    energy_model = model.energy_model
    species, num_states = energy_model.config.species, energy_model.config.num_states
    size = len(species) * num_states
    shifts = {}
    for _ in range(GAUSS_NEWTON_STEPS):
        gram, rhs = np.zeros((size, size)), np.zeros(size)
        buffer = energy_model.priors.shift  # [Z, S], derived from the statistics: perturbed and restored
        for graph, energies, predicted, weights in _predicted_batches(model, dataset, batch_size, dist):
            slopes = np.zeros(predicted.shape + (num_states,))  # dE_k / d(shift of state a) of one atom
            device_graph = graph.to(next(model.parameters()).device)
            counts = graph_composition(graph, species)  # [B, Z]
            for a in range(num_states):  # every atom's shift moved: the structure's by its atom count
                with torch.no_grad():
                    buffer[:, a] += SHIFT_STEP
                    moved = model(device_graph, forces=False)["energy"].double().cpu().numpy()
                    buffer[:, a] -= SHIFT_STEP
                slopes[:, :, a] = (moved - predicted) / (SHIFT_STEP * counts.sum(1, keepdims=True))
            jacobian = (counts[:, None, :, None] * slopes[:, :, None, :]).reshape(len(counts), num_states, size)
            gram += np.einsum("b,bki,bkj->ij", weights, jacobian, jacobian)
            rhs += np.einsum("b,bki,bk->i", weights, jacobian, energies - predicted)
        gram, rhs = _summed(dist, gram, rhs)
        delta = per_element_fit(gram, rhs)[0].reshape(len(species), num_states)
        statistics = energy_model.config.statistics
        shifts = {int(z): [a + float(d) for a, d in zip(statistics.shift_of(int(z), num_states), delta[k])]
                  for k, z in enumerate(species)}
        energy_model.set_statistics(dataclasses.replace(statistics, energy_shift=shifts))
        if np.abs(delta).max() < 1e-6:
            break
    return shifts


def _predicted_batches(model, dataset, batch_size: int, dist=None):
    """``(graph, reference energies [B, S], predicted energies [B, S], config weights [B])`` over this
    rank's labelled frames."""
    import torch

    num_states = model.energy_model.config.num_states
    device = next(model.parameters()).device
    positions = np.arange(len(dataset))
    local = positions[dist.rank :: dist.world_size] if dist is not None and dist.enabled else positions
    for batch, energies in _labelled_batches(dataset, local, batch_size, num_states):
        graph, targets = dataset.collate(batch)
        with torch.no_grad():
            predicted = model(graph.to(device), forces=False)["energy"].double().cpu().numpy()
        yield graph, energies, predicted.reshape(-1, num_states), targets.weight.double().numpy()


def _summed(dist, *arrays):
    """The arrays summed over the ranks of a distributed run (numpy in, numpy out)."""
    import torch

    if dist is None or not dist.enabled:
        return arrays
    # on the process group's device (nccl reduces GPU tensors only)
    return tuple(dist.sum_(torch.from_numpy(x).to(dist.device)).cpu().numpy() for x in arrays)


def _labelled_batches(dataset, positions: np.ndarray, batch_size: int, num_states: int):
    """Batches of ``batch_size`` of the ``positions`` whose frames have every state's energy, with
    those energies ``[batch, num_states]``."""
    pending, energies = [], []
    for start in range(0, len(positions), CHUNK):
        chunk = positions[start : start + CHUNK]
        labels = dataset.energy_labels(chunk, num_states)
        keep = np.isfinite(labels).all(axis=1)
        pending.extend(chunk[keep].tolist())
        energies.extend(labels[keep])
        while len(pending) >= batch_size:
            yield pending[:batch_size], np.array(energies[:batch_size])
            del pending[:batch_size], energies[:batch_size]
    if pending:
        yield pending, np.array(energies)


def graph_composition(graph, species: Sequence[int]) -> np.ndarray:
    """``[structures, species]`` atom counts of a batched graph."""
    lookup = np.full(max(species) + 1, -1)
    lookup[list(species)] = np.arange(len(species))
    counts = np.zeros((graph.num_graphs, len(species)))
    np.add.at(counts, (graph.batch.cpu().numpy(), lookup[graph.numbers.cpu().numpy()]), 1.0)
    return counts
