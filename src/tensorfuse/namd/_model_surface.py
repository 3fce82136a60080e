"""A learned multi-state model as a surface for the hopping engine (eV/Å outside, atomic units inside)."""

from __future__ import annotations

import numpy as np
import torch

from tensorfuse.data import AtomicGraph, batch_graphs
from tensorfuse.data._states import without_rigid_motion
from tensorfuse.namd._surfaces import AMU, BOHR, HARTREE, SurfacePoint

MIN_GAP = 1e-6  # hartree: d_ij = h_ij / ΔE_ij is capped where two learned states touch


class ModelSurface:
    """``ModelSurface(model, numbers, cell=None, pbc=False)``: ``surface(x [T, 3N] bohr) -> SurfacePoint``.

    ``model``: a multi-state :class:`~tensorfuse.model.Potential`, or a
    :class:`~tensorfuse.model.Committee` of them (the mean is the surface; its spreads come along).

    All ``T`` configurations are copies of one structure (``numbers``) and go through the model as
    one batched graph. A model with a ``"vector"`` or ``"gradient"`` coupling head learns
    ``h_ij = ΔE_ij d_ij`` (eV/Å, arbitrary sign per pair); the derivative couplings are
    ``d_ij = h_ij / (E_j - E_i)``, with each trajectory's sign kept continuous from step to step
    (the sign that agrees with the previous step's vector), as the electronic phase must be.
    A vector head's couplings lose their components along rigid translations and rotations (as
    the training labels did; a hop along them would change the total momentum).
    Without a coupling head the point has ``couplings=None`` (Landau–Zener or Baeck–An hopping).
    ``batched_derivatives``: see :class:`~tensorfuse.model.Potential` (``None``: chosen by batch size).
    ``chunk``: at most so many trajectories per model call (``None``: all at once).
    """

    def __init__(self, model, numbers, cell=None, pbc=False, batched_derivatives: bool | None = None,
                 chunk: int | None = None):
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be a number of trajectories >= 1, got {chunk}")
        self.model = model
        self.chunk = chunk
        self.numbers = np.asarray(numbers, dtype=np.int64)
        self.cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        self.pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
        param = next(model.parameters())
        self.dtype, self.device = param.dtype, param.device
        self.num_states = model.config.num_states
        if self.num_states < 2:
            raise ValueError("surface hopping needs a model of two or more electronic states; this model has one")
        self.pairs = model.config.state_pairs
        self.has_couplings = bool(self.pairs)
        # couplings from derivatives of invariants have no rigid-body part; a vector head's may
        self.project_rigid = model.config.couplings == "vector"
        self.cutoff = float(model.r_max)
        # all states' forces in one backward pass (vmap) or one pass per state; None: one pass for a single
        # structure, one per state for an ensemble (measured faster from 10 trajectories on: benchmarks/namd.py speed)
        self.batched_derivatives = batched_derivatives
        self.sign_memory: torch.Tensor | None = None  # [T, P, D] the last step's coupling vectors

    @property
    def masses(self) -> torch.Tensor:
        """``[3N]`` nuclear masses in electron masses, one per Cartesian degree of freedom."""
        from ase.data import atomic_masses

        return torch.tensor(np.repeat(atomic_masses[self.numbers], 3) * AMU, dtype=torch.float64)

    def reset(self) -> None:
        """Forget the coupling signs of the previous step (before an unrelated batch)."""
        self.sign_memory = None

    def __call__(self, x: torch.Tensor) -> SurfacePoint:
        """The surface at ``x [T, 3N]``: one model call, or one per ``chunk`` trajectories (a batch's
        rounding depends on its size: the same chunks give the same numbers bit for bit, however
        the ensemble is shared out over processes)."""
        if self.chunk is None or x.shape[0] <= self.chunk:
            return self._point(x)
        memory, points = self.sign_memory, []
        for start in range(0, x.shape[0], self.chunk):
            part = slice(start, start + self.chunk)
            self.sign_memory = memory[part] if memory is not None and memory.shape[0] == x.shape[0] else None
            points.append((self._point(x[part]), self.sign_memory))
        self.sign_memory = torch.cat([m for _, m in points]) if points[0][1] is not None else None
        first = points[0][0]
        return SurfacePoint(*(torch.cat([getattr(p, name) for p, _ in points])
                              if getattr(first, name) is not None else None
                              for name in ("energies", "forces", "couplings", "spreads")))

    def _point(self, x: torch.Tensor) -> SurfacePoint:
        t, n = x.shape[0], len(self.numbers)
        positions = (x.reshape(t, n, 3) * BOHR).to(self.dtype)  # Å
        batched = t == 1 if self.batched_derivatives is None else self.batched_derivatives
        out = self.model(self._graph(positions), forces=True, batched_derivatives=batched)
        energies = out["energy"].detach().to(torch.float64) / HARTREE  # [T, S]
        to_au = BOHR / HARTREE  # eV/Å -> hartree/bohr
        forces = out["forces"].detach().to(torch.float64).reshape(t, n, self.num_states, 3)
        forces = forces.permute(0, 2, 1, 3).reshape(t, self.num_states, 3 * n) * to_au
        couplings = None
        if self.has_couplings:
            h = out["couplings"].detach().to(torch.float64).reshape(t, n, len(self.pairs), 3).permute(0, 2, 1, 3)
            if self.project_rigid:  # a hop along the couplings keeps the total linear and angular momentum
                h = without_rigid_motion(positions.detach().to(torch.float64), h, rotations=not self.pbc.any())
            h = h.reshape(t, len(self.pairs), 3 * n) * to_au  # [T, P, D]
            if self.sign_memory is not None and self.sign_memory.shape == h.shape:
                agree = (h * self.sign_memory).sum(-1, keepdim=True)
                h = torch.where(agree < 0, -h, h)
            self.sign_memory = h
            couplings = torch.zeros(t, self.num_states, self.num_states, 3 * n, dtype=torch.float64)
            for p, (i, j) in enumerate(self.pairs):  # a handful of pairs: the loop is not hot
                gap = energies[:, j] - energies[:, i]
                gap = torch.where(gap >= 0, gap.clamp_min(MIN_GAP), gap.clamp_max(-MIN_GAP))
                couplings[:, i, j] = h[:, p] / gap[:, None]
                couplings[:, j, i] = -couplings[:, i, j]
        spreads = out["spreads"].detach().to(torch.float64) if "spreads" in out else None
        return SurfacePoint(energies, forces, couplings, spreads)

    def _graph(self, positions: torch.Tensor) -> AtomicGraph:
        """One graph of the ``T`` structures ``positions [T, N, 3]`` (Å), neighbours within the cutoff."""
        t, n = positions.shape[:2]
        if self.pbc.any():  # periodic images: the general neighbour search, structure by structure
            array = positions.detach().cpu().double().numpy()
            return batch_graphs([AtomicGraph.from_arrays(p, self.numbers, self.cutoff, self.cell, self.pbc, self.dtype)
                                 for p in array]).to(self.device)
        # molecules: all pairs of each structure at once, ordered by receiver as the neighbour list is
        distances = torch.cdist(positions, positions)  # [T, N, N]
        close = (distances < self.cutoff) & ~torch.eye(n, dtype=torch.bool, device=positions.device)
        structure, receiver, sender = torch.nonzero(close, as_tuple=True)
        offset = structure * n
        numbers = torch.as_tensor(self.numbers, device=self.device)
        return AtomicGraph(
            positions=positions.reshape(t * n, 3),
            numbers=numbers.repeat(t),
            edge_index=torch.stack([sender + offset, receiver + offset]),
            unit_shifts=torch.zeros(len(sender), 3, dtype=self.dtype, device=self.device),
            cell=torch.zeros(t, 3, 3, dtype=self.dtype, device=self.device),
            pbc=torch.zeros(t, 3, dtype=torch.bool, device=self.device),
            batch=torch.arange(t, device=self.device).repeat_interleave(n),
        )
