"""Forces, virials and stress as derivatives of an energy model (a wrapper, not inside it)."""

from __future__ import annotations

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

    def forward(
        self,
        graph: AtomicGraph,
        forces: bool = True,
        stress: bool = False,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Energies and (optionally) forces and stress. ``create_graph`` for training on forces."""
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
        if not inputs:
            energy, node_energy = self.energy_model(graph, positions=positions, cell=cell)
            return {"energy": energy, "node_energy": node_energy}
        with torch.enable_grad():  # derivatives are wanted even when called under no_grad (MD)
            energy, node_energy = self.energy_model(graph, positions=positions, cell=cell)
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
        # an input the energy does not depend on (isolated atoms: no edges) has zero gradient
        grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
        out = {"energy": energy, "node_energy": node_energy}
        if forces:
            out["forces"] = -grads[0]
        if stress:
            virial = -grads[-1]
            volume = torch.linalg.det(graph.cell).abs()
            out["virial"] = virial
            out["stress"] = -virial / volume.clamp_min(1e-30)[:, None, None]
        return out

    def predict(self, atoms, stress: bool | None = None) -> dict[str, np.ndarray]:
        """Energies, forces (and stress for periodic structures) of ASE ``Atoms`` or a list of them.

        Returns numpy arrays: ``energy`` (float or ``[B]``), ``forces`` ``[N, 3]`` (concatenated for a
        list), ``stress`` ``[B, 3, 3]`` when computed.
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
        if single:
            result["energy"] = float(result["energy"][0])
            if stress:
                result["stress"] = result["stress"][0]
                result["virial"] = result["virial"][0]
        return result
