"""An SA-CASSCF surface for the surface-hopping engine: ab initio dynamics on the fly."""

from __future__ import annotations

import numpy as np
import torch

from tensorfuse.qm._casscf import BOHR, HARTREE, CasscfSettings, label_sa_casscf


class CasscfSurface:
    """``CasscfSurface(numbers, settings)``: ``surface(x [T, 3N] bohr) -> SurfacePoint`` by SA-CASSCF.

    Every call solves SA-CASSCF at each of the ``T`` configurations (one after the other: run
    trajectories in several processes for more cores), with the orbitals carried from that
    trajectory's previous step, so that each trajectory stays on one solution; energies, analytic
    gradients and derivative couplings of every state, in atomic units. Each coupling's sign is
    kept continuous along its trajectory, and its rigid translations and rotations are projected
    out, as for the labels of learned models (hops keep the total momentum). A configuration where
    CASSCF fails (or does not converge) gets NaN energies: the ensemble stops that trajectory.

    The engine passes each trajectory's active state (``active_forces_only``): only that state's
    gradient is computed (the other states' forces are zero; FSSH needs them nowhere), a third of
    the cost for two states; after a hop, :meth:`active_forces` gives the new state's.

    ``sign_memory`` (what the engine checkpoints) holds the previous couplings and the orbitals of
    every trajectory, so that a resumed run continues each trajectory on the same solution.
    """

    def __init__(self, numbers, settings: CasscfSettings = CasscfSettings()):
        self.numbers = np.asarray(numbers, dtype=np.int64)
        self.settings = settings
        self.num_states = settings.nstates
        self.pairs = tuple((i, j) for i in range(self.num_states) for j in range(i + 1, self.num_states))
        self.has_couplings = settings.couplings
        self.sign_memory: dict | None = None  # {"couplings": [T, P, D], "orbitals": [T, nao, nmo]}
        self.active_forces_only = True

    @property
    def masses(self) -> torch.Tensor:
        from ase.data import atomic_masses

        from tensorfuse.namd import AMU

        return torch.tensor(np.repeat(atomic_masses[self.numbers], 3) * AMU, dtype=torch.float64)

    def reset(self) -> None:
        self.sign_memory = None

    def active_forces(self, x: torch.Tensor, active: torch.Tensor, rows) -> torch.Tensor:
        """Forces ``[len(rows), 3N]`` (atomic units) of state ``active[k]`` at ``x[k]`` for each ``k`` in
        ``rows``, on the orbitals of the last call (the same solution; sign memory untouched)."""
        from ase import Atoms

        n = len(self.numbers)
        orbitals = (self.sign_memory or {}).get("orbitals")
        out = torch.full((len(rows), 3 * n), float("nan"), dtype=torch.float64)
        for i, k in enumerate(rows):
            positions = x[k].detach().reshape(n, 3).numpy() * BOHR
            start = orbitals[k].numpy() if orbitals is not None and orbitals.shape[0] == x.shape[0] else None
            state = int(active[k])
            try:
                labels = label_sa_casscf(Atoms(numbers=self.numbers, positions=positions), self.settings, start,
                                         gradients=[state], couplings=False)
            except Exception:  # noqa: BLE001 -- NaN forces: the ensemble stops this trajectory
                continue
            if labels.converged:
                out[i] = torch.from_numpy(labels.forces[state].reshape(-1) * BOHR / HARTREE)
        return out

    def __call__(self, x: torch.Tensor, active: torch.Tensor | None = None):
        from ase import Atoms

        from tensorfuse.data._states import without_rigid_motion
        from tensorfuse.namd import SurfacePoint

        t, n, s = x.shape[0], len(self.numbers), self.num_states
        memory = self.sign_memory or {}
        orbitals = memory.get("orbitals")
        previous = memory.get("couplings")
        energies = torch.full((t, s), float("nan"), dtype=torch.float64)
        forces = torch.zeros(t, s, 3 * n, dtype=torch.float64)
        h = torch.zeros(t, len(self.pairs), n, 3, dtype=torch.float64)
        kept = []
        for k in range(t):
            positions = x[k].detach().reshape(n, 3).numpy() * BOHR
            start = orbitals[k].numpy() if orbitals is not None and orbitals.shape[0] == t else None
            try:
                labels = label_sa_casscf(Atoms(numbers=self.numbers, positions=positions), self.settings, start,
                                         gradients=None if active is None else [int(active[k])])
            except Exception:  # noqa: BLE001 -- no solution: this trajectory stops (NaN energies)
                kept.append(start)
                continue
            kept.append(labels.mo_coeff)
            if not labels.converged:
                continue
            energies[k] = torch.from_numpy(labels.energies / HARTREE)
            forces[k] = torch.from_numpy(labels.forces.reshape(s, -1) * BOHR / HARTREE)
            for p, pair in enumerate(self.pairs):
                if pair in labels.couplings:
                    h[k, p] = torch.from_numpy(labels.couplings[pair] * BOHR)  # 1/bohr
        couplings = None
        if self.has_couplings:
            positions = (x.detach().reshape(t, n, 3) * BOHR).to(torch.float64)
            d = without_rigid_motion(positions, h).reshape(t, len(self.pairs), 3 * n)
            if previous is not None and previous.shape == d.shape:  # the sign that agrees with the last step
                d = torch.where((d * previous).sum(-1, keepdim=True) < 0, -d, d)
            couplings = torch.zeros(t, s, s, 3 * n, dtype=torch.float64)
            for p, (i, j) in enumerate(self.pairs):
                couplings[:, i, j] = d[:, p]
                couplings[:, j, i] = -d[:, p]
            previous = d
        shapes = {o.shape for o in kept if o is not None}
        if len(shapes) == 1 and all(o is not None for o in kept):
            orbitals = torch.from_numpy(np.stack(kept))
        self.sign_memory = {"couplings": previous, "orbitals": orbitals}
        return SurfacePoint(energies, forces, couplings)
