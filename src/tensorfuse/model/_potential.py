"""Forces, virials and stress as derivatives of an energy model (a wrapper, not inside it)."""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from tensorfuse.data import AtomicGraph, batch_graphs


class Potential(torch.nn.Module):
    """Adds ``forces = -dE/dx`` and ``virial = -dE/dε``, ``stress = -virial/V`` to an energy model.

    The strain ``ε`` is symmetric and applied to positions and cell (hence to the periodic shifts)
    at once, so stress is defined for any structure with a cell. Results, per structure ``B`` and
    atom ``N``: ``energy [B]``, ``node_energy [N]``, ``forces [N, 3]``, ``virial [B, 3, 3]``,
    ``stress [B, 3, 3]`` (eV/Å^3, ASE's sign: positive under tension).

    A model of ``S`` electronic states has a state axis after the structure or atom axis:
    ``energy [B, S]``, ``node_energy [N, S]``, ``forces [N, S, 3]``, ``virial``/``stress
    [B, S, 3, 3]``, and with couplings ``couplings [N, P, 3]`` (``ΔE_ij d_ij`` of each pair of
    ``config.state_pairs``, eV/Å). The derivatives of all states (and of the coupling scalars of a
    ``"gradient"`` coupling head) come from one backward pass over a batch of cotangents
    (``torch.autograd.grad(..., is_grads_batched=True)``) when no graph of the derivatives is kept;
    when it is (training on forces), from one backward pass per state.
    """

    def __init__(self, energy_model: torch.nn.Module):
        super().__init__()
        self.energy_model = energy_model

    @property
    def config(self):
        return self.energy_model.config

    @property
    def r_max(self) -> float:
        return float(self.energy_model.r_max)

    @property
    def num_states(self) -> int:
        return self.config.num_states

    def forward(
        self,
        graph: AtomicGraph,
        forces: bool = True,
        stress: bool = False,
        create_graph: bool = False,
        batched_derivatives: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Energies and (optionally) forces and stress. ``create_graph`` for training on forces;
        ``batched_derivatives=False`` takes one backward pass per state even without it."""
        positions, cell = graph.positions, graph.cell
        inputs: list[torch.Tensor] = []
        if forces or stress:
            positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        strain = None
        if stress:
            strain = torch.zeros_like(cell, requires_grad=True)
            inputs.append(strain)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            positions = positions + torch.einsum("ni,nij->nj", positions, symmetric[graph.batch])
            cell = cell + cell @ symmetric
        gradient_couplings = self.config.couplings == "gradient"
        needs_grad = bool(inputs) or gradient_couplings
        if gradient_couplings and not inputs:
            positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        with torch.enable_grad() if needs_grad else contextlib.nullcontext():
            outputs = self.energy_model(graph, positions=positions, cell=cell)
            # the quantities whose derivatives are wanted, as columns: every state's energy, then the
            # coupling scalars of a "gradient" head (built here: under no_grad a reshape has no graph)
            columns = outputs[0].reshape(outputs[0].shape[0], -1)
            if gradient_couplings:
                columns = torch.cat([columns, outputs[2]], dim=1)
        energy, node_energy = outputs[0], outputs[1]
        out = {"energy": energy, "node_energy": node_energy}
        if len(outputs) > 2 and not gradient_couplings:
            out["couplings"] = outputs[2]
        if not needs_grad:
            return out
        grads = _derivatives(columns, inputs, create_graph, batched_derivatives)  # each [K, *input.shape]
        states = energy.shape[1] if energy.dim() == 2 else None

        def per_state(g: torch.Tensor) -> torch.Tensor:  # [K, X, ...] -> [X, S, ...] or [X, ...]
            g = g[: states or 1]
            return g[0] if states is None else g.movedim(0, 1)

        if gradient_couplings:
            out["couplings"] = grads[0][states:].movedim(0, 1)  # [N, P, 3]
        if forces:
            out["forces"] = -per_state(grads[0])
        if stress:
            virial = -per_state(grads[-1])
            volume = torch.linalg.det(graph.cell).abs().clamp_min(1e-30)
            out["virial"] = virial
            out["stress"] = -virial / (volume[:, None, None] if states is None else volume[:, None, None, None])
        return out

    def predict(self, atoms, stress: bool | None = None) -> dict[str, np.ndarray]:
        """Energies, forces (and stress for periodic structures) of ASE ``Atoms`` or a list of them.

        Returns numpy arrays: ``energy`` (float or ``[B]``), ``forces`` ``[N, 3]`` (concatenated for a
        list), ``stress`` ``[B, 3, 3]`` when computed; with several states the state axis is kept
        (``energy [S]`` or ``[B, S]``, ``forces [N, S, 3]``) and ``couplings [N, P, 3]`` added.
        """
        single = not isinstance(atoms, Sequence)
        structures = [atoms] if single else list(atoms)
        param = next(self.parameters())
        graph = batch_graphs(
            [AtomicGraph.from_atoms(a, self.r_max, dtype=param.dtype) for a in structures]
        ).to(param.device)
        if stress is None:
            stress = all(bool(np.all(a.pbc)) for a in structures)
        out = self(graph, forces=True, stress=stress)
        result = {k: v.detach().cpu().numpy() for k, v in out.items()}
        if single:  # a float, or per state ``[S]``
            result["energy"] = float(result["energy"][0]) if result["energy"].ndim == 1 else result["energy"][0]
            if stress:
                result["stress"] = result["stress"][0]
                result["virial"] = result["virial"][0]
        return result


def _derivatives(columns: torch.Tensor, inputs: list[torch.Tensor], create_graph: bool,
                 batched: bool = True) -> list[torch.Tensor]:
    """``d columns[:, k].sum() / d input`` for every column ``k``: a list (per input) of ``[K, *input.shape]``.

    Without ``create_graph``, one backward pass over a batch of ``K`` one-hot cotangents; with it
    (a loss on forces will be differentiated again), one pass per column. An input a column does
    not depend on (isolated atoms: no edges) gets zeros."""
    k = columns.shape[1]
    with torch.enable_grad():
        if k == 1 or create_graph or not batched:
            per_column = [torch.autograd.grad(columns[:, c].sum(), inputs, create_graph=create_graph,
                                              retain_graph=create_graph or c < k - 1, allow_unused=True)
                          for c in range(k)]
            grads = [[g if g is not None else torch.zeros_like(x) for g, x in zip(gs, inputs)] for gs in per_column]
            return [torch.stack([grads[c][i] for c in range(k)]) for i in range(len(inputs))]
        cotangents = torch.eye(k, dtype=columns.dtype, device=columns.device)[:, None, :].expand(k, columns.shape[0], k)
        grads = torch.autograd.grad(columns, inputs, grad_outputs=cotangents, is_grads_batched=True, allow_unused=True)
    return [g if g is not None else torch.zeros((k,) + x.shape, dtype=x.dtype, device=x.device)
            for g, x in zip(grads, inputs)]
