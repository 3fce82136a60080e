"""Labels of several electronic states: per-state energies and forces, and the couplings between states.

In an extxyz file, state ``s`` (a name such as ``S1``) has its energy under ``energy_S1`` (info)
and its forces under ``forces_S1`` (arrays), and the pair ``(S0, S1)`` its coupling vectors under
``nac_S0_S1`` (arrays, one 3-vector per atom); the templates are settable. A coupling is read
either as the derivative coupling ``d_ij = <i|∇_R j>`` in 1/Å (``coupling_kind="nac"``, the
default) or as ``ΔE_ij d_ij = (E_j - E_i) d_ij`` in the file's energy unit per Å
(``"scaled"``); tensorfuse learns the latter, which stays finite where ``d_ij`` has a pole. The
sign of each frame's coupling is arbitrary (the phase of the electronic wavefunctions): losses and
metrics take the better sign per frame and pair. Missing labels are NaN, so a frame may lack some
states' forces or any coupling.

Rigid-body parts: a derivative coupling computed with atom-centred basis functions (CASSCF's CSF
term, for one) has components along the rigid translations and rotations of the molecule (the
electronic transition momentum and angular momentum): 30-45 % of the norm in the bundled ethylene
data. Nothing that depends on the geometry alone (a potential, a diabatic matrix) can produce
them, and a hop that rescales the velocities along them changes the total linear and angular
momentum. By default (``coupling_projection="rigid"``) they are projected out as the couplings are
read (as SHARC's ``nac_projection``; electron translation and rotation factors remove them from
the theory itself); ``"none"`` keeps the file's vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COUPLING_KINDS = ("nac", "scaled")
COUPLING_PROJECTIONS = ("rigid", "none")


@dataclass(frozen=True)
class StateKeys:
    """State names and where their labels are."""

    names: tuple[str, ...]
    energy: str = "energy_{state}"
    forces: str = "forces_{state}"
    coupling: str = "nac_{i}_{j}"
    coupling_kind: str = "nac"
    coupling_projection: str = "rigid"

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        n = len(self.names)
        return tuple((i, j) for i in range(n) for j in range(i + 1, n))

    def energy_key(self, s: int) -> str:
        return self.energy.format(state=self.names[s])

    def forces_key(self, s: int) -> str:
        return self.forces.format(state=self.names[s])

    def coupling_key(self, i: int, j: int) -> str:
        return self.coupling.format(i=self.names[i], j=self.names[j])

    def all_keys(self) -> list[str]:
        n = len(self.names)
        return ([self.energy_key(s) for s in range(n)] + [self.forces_key(s) for s in range(n)]
                + [self.coupling_key(i, j) for i, j in self.pairs])


@dataclass
class StateLabels:
    """``energies [S]`` (eV), ``forces [S, N, 3]`` (eV/Å), ``couplings [P, N, 3]`` (ΔE·d, eV/Å); NaN = missing."""

    energies: np.ndarray
    forces: np.ndarray
    couplings: np.ndarray

    @property
    def has_energy(self) -> np.ndarray:
        return np.isfinite(self.energies)

    @property
    def has_forces(self) -> np.ndarray:
        return np.isfinite(self.forces).reshape(len(self.forces), -1).all(1)

    @property
    def has_couplings(self) -> np.ndarray:
        return np.isfinite(self.couplings).reshape(len(self.couplings), -1).all(1)


def read_state_labels(atoms, keys: StateKeys, factor: float, source: str, label) -> StateLabels:
    """The state labels of one ASE ``Atoms``; ``label(atoms, key, per_atom)`` finds a key's value.

    Raises ``DataError`` naming ``source`` and the key for a wrong shape, a value that is not a
    number or one that is NaN/infinite."""
    from tensorfuse.data._io import DataError

    n, states = len(atoms), len(keys.names)
    energies = np.full(states, np.nan)
    forces = np.full((states, n, 3), np.nan)
    couplings = np.full((len(keys.pairs), n, 3), np.nan)
    for s in range(states):
        key = keys.energy_key(s)
        value = label(atoms, key, per_atom=False)
        if value is not None:
            try:
                energies[s] = float(np.asarray(value, dtype=np.float64).reshape(())) * factor
            except (TypeError, ValueError):
                raise DataError(f"{source}: key {key!r} must be one number, got {value!r}") from None
            if not np.isfinite(energies[s]):
                raise DataError(f"{source}: key {key!r} contains NaN or infinite values")
        forces_s = _vectors(atoms, keys.forces_key(s), n, source, label)
        if forces_s is not None:
            forces[s] = forces_s * factor
    for p, (i, j) in enumerate(keys.pairs):
        sign, value = 1.0, _vectors(atoms, keys.coupling_key(i, j), n, source, label)
        if value is None:  # the file may order the pair the other way: d_ji = -d_ij
            sign, value = -1.0, _vectors(atoms, keys.coupling_key(j, i), n, source, label)
        if value is None:
            continue
        if keys.coupling_kind == "scaled":
            couplings[p] = sign * value * factor
        elif np.isfinite(energies[[i, j]]).all():
            couplings[p] = sign * value * (energies[j] - energies[i])
    if keys.coupling_projection == "rigid" and np.isfinite(couplings).all() and len(keys.pairs):
        import torch

        rotations = not bool(np.any(atoms.pbc))  # a periodic structure's rotations are no symmetry
        couplings = without_rigid_motion(torch.from_numpy(atoms.positions[None]), torch.from_numpy(couplings[None]),
                                         rotations)[0].numpy()
    return StateLabels(energies, forces, couplings)


def without_rigid_motion(positions, vectors, rotations: bool = True):
    """Per-atom vectors ``[T, P, N, 3]`` (torch) of structures ``positions [T, N, 3]`` without their
    components along the rigid translations (and rotations) of each structure: the Euclidean
    projection for which ``sum_A v_A = 0`` and ``sum_A r_A x v_A = 0``, so that a velocity change
    ``Δv_A ∝ v_A / m_A`` keeps the total linear and angular momentum."""
    import torch

    t, n = positions.shape[:2]
    centred = positions - positions.mean(1, keepdim=True)
    eye = torch.eye(3, dtype=positions.dtype, device=positions.device)
    modes = [eye[k].expand(t, n, 3) for k in range(3)]  # translations
    if rotations:
        modes += [torch.linalg.cross(eye[k].expand(t, n, 3), centred) for k in range(3)]
    basis = torch.stack([m.reshape(t, 3 * n) for m in modes], dim=2)  # [T, 3N, M]
    u, sigma, _ = torch.linalg.svd(basis, full_matrices=False)
    u = u * (sigma > 1e-8 * sigma[:, :1]).unsqueeze(1)  # a linear molecule has one rotation fewer
    flat = vectors.reshape(t, vectors.shape[1], 3 * n)
    flat = flat - (flat @ u) @ u.transpose(1, 2)
    return flat.reshape(vectors.shape)


def _vectors(atoms, key: str, n: int, source: str, label):
    from tensorfuse.data._io import DataError

    value = label(atoms, key, per_atom=True)
    if value is None:
        return None
    try:
        value = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{source}: key {key!r} must hold numbers") from None
    if value.shape != (n, 3):
        raise DataError(f"{source}: key {key!r} must have shape ({n}, 3), got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise DataError(f"{source}: key {key!r} contains NaN or infinite values")
    return value


def state_order_warning(frames, keys: StateKeys, path) -> str | None:
    """A message (with counts) when some state's energy lies below the state under it."""
    below = [f for f in frames if f.states is not None and
             np.any(np.diff(f.states.energies[np.isfinite(f.states.energies)]) < 0)]
    if not below:
        return None
    return (f"{path}: in {len(below)} of {len(frames)} frames a state's energy lies below the state listed before it "
            f"(first: {below[0].source}; states {list(keys.names)}): check the order of the states")
