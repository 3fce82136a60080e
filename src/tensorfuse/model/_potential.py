"""Forces, virials and stress as derivatives of an energy model (a wrapper, not inside it)."""

from __future__ import annotations

import contextlib
import copy
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
        object.__setattr__(self, "_compiled", None)  # not a submodule: no second copy in state_dict

    def compile(self, dynamic: bool | None = True, **options) -> "Potential":
        """Run the energy model through ``torch.compile`` (inductor) from now on; returns ``self``.

        Forces and stress stay derivatives of the compiled energy, taken by its compiled backward,
        so the results equal the eager ones to rounding. ``dynamic=True`` (default) compiles once
        for any number of atoms and edges (MD, batches of other sizes); ``False`` specialises to
        each shape (a little faster, a recompilation per new shape). The first call compiles (tens
        of seconds on a CPU). Calls that keep the graph of the derivatives (``create_graph``,
        training on forces) are a second compiled function, energy and derivatives in one graph
        (``torch._dynamo.config.trace_autograd_ops``), compiled at their first call: the loss's
        backward is then a first-order backward of it. The states of a multi-state model are
        differentiated one backward pass each (not batched). The fused CPU kernels stay in the
        compiled graph as operators (``tensorfuse::product_basis``, ``tensorfuse::message_passing``,
        their backward and double-backward operators); on CPU, with them, eager calls are already
        about as fast (measured: 64 ethanols 1.05x, one aspirin 0.6x; training steps 1.03-1.2x),
        so compilation pays mainly where the kernels do not apply.
        """
        # one eager call first: the basis constants (coupling tensors, harmonic coefficients) are then
        # cached tensors the compiler takes as they are, instead of tracing the numpy that builds them
        parameter = next(self.energy_model.parameters())
        z = self.config.species[0]
        self.energy_model(AtomicGraph.from_arrays(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), np.array([z, z]),
                                                  self.r_max, dtype=parameter.dtype).to(parameter.device))
        object.__setattr__(self, "_compiled", torch.compile(self.energy_model, dynamic=dynamic, **options))
        object.__setattr__(self, "_compiled_derivatives",
                           torch.compile(self._derivatives_in_graph, dynamic=dynamic, **options))
        object.__setattr__(self, "_compile_options", {"dynamic": dynamic, **options})
        return self

    def __deepcopy__(self, memo):
        """A copy (e.g. the EMA's) compiled around its own weights, never calling this one's."""
        duplicate = self.__class__.__new__(self.__class__)
        memo[id(self)] = duplicate
        for key, value in self.__dict__.items():
            if key not in ("_compiled", "_compiled_derivatives", "_compile_options"):
                object.__setattr__(duplicate, key, copy.deepcopy(value, memo))
        object.__setattr__(duplicate, "_compiled", None)
        if self._compiled is not None:  # torch.compile's caches make this cheap for the same architecture
            duplicate.compile(**self._compile_options)
        return duplicate

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

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
        if self._compiled is None:
            return self._forward(graph, forces, stress, create_graph, batched_derivatives, self.energy_model)
        table = getattr(self.energy_model, "species_table", None)  # (an exported program has none)
        if table is not None:
            table.check(graph.numbers)  # skipped inside the compiled graph
        if create_graph:
            # training on forces: energy and derivatives traced into one graph (autograd.grad inside
            # it), so that the loss's backward is a first-order backward of that compiled graph
            with torch._dynamo.config.patch(trace_autograd_ops=True):
                return self._compiled_derivatives(graph, forces, stress)
        # one backward pass per state retains the graph, which a backward compiled with donated
        # (freed while it runs) buffers refuses: every compiled call runs without them, so that
        # one setting (and one cached compilation) serves single- and multi-state models; a
        # compiled backward cannot run under vmap either (batched cotangents)
        with torch._functorch.config.patch(donated_buffer=False):
            return self._forward(graph, forces, stress, False, False, self._compiled)

    def _derivatives_in_graph(self, graph: AtomicGraph, forces: bool, stress: bool) -> dict[str, torch.Tensor]:
        return self._forward(graph, forces, stress, True, False, self.energy_model)

    def _forward(self, graph: AtomicGraph, forces: bool, stress: bool, create_graph: bool,
                 batched_derivatives: bool, energy_model: torch.nn.Module) -> dict[str, torch.Tensor]:
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
        needs_grad = bool(inputs) or self.config.couplings in ("gradient", "diabatic")  # couplings are derivatives
        if needs_grad and not inputs:
            positions = positions.detach().requires_grad_(True)
            inputs.append(positions)
        with torch.enable_grad() if needs_grad else contextlib.nullcontext():
            outputs = energy_model(graph, positions=positions, cell=cell)
            energy = outputs["energy"]
            # the quantities whose derivatives are wanted, as columns: every state's energy, or the
            # elements of a diabatic matrix (Hellmann–Feynman: the states' derivatives are linear in
            # theirs), then the coupling scalars of a "gradient" head (built here: under no_grad a
            # reshape has no graph)
            columns = outputs.get("derivative_columns", energy.reshape(energy.shape[0], -1))
            if gradient_couplings:
                columns = torch.cat([columns, outputs["coupling_scalars"]], dim=1)
        out = {"energy": energy, "node_energy": outputs["node_energy"]}
        if "couplings" in outputs:
            out["couplings"] = outputs["couplings"]
        if not needs_grad:
            return out
        grads = _derivatives(columns, inputs, create_graph, batched_derivatives)  # each [K, *input.shape]
        states = energy.shape[1] if energy.dim() == 2 else None
        coefficients = outputs.get("energy_coefficients")  # [B, S, K] of a diabatic head
        k = coefficients.shape[-1] if coefficients is not None else states or 1

        def per_state(g: torch.Tensor, atoms: bool) -> torch.Tensor:  # [K, X, ...] -> [X, S, ...] or [X, ...]
            if coefficients is not None:  # dE_s = sum_k A[b, s, k] dH_k, b the structure (of the atom)
                a = coefficients[graph.batch] if atoms else coefficients
                return torch.einsum("xsk,kx...->xs...", a, g[:k])
            g = g[:k]
            return g[0] if states is None else g.movedim(0, 1)

        if gradient_couplings:
            out["couplings"] = grads[0][k:].movedim(0, 1)  # [N, P, 3]
        elif "coupling_coefficients" in outputs:  # U_i^T dH U_j of a diabatic head
            out["couplings"] = torch.einsum("npk,knd->npd", outputs["coupling_coefficients"][graph.batch], grads[0][:k])
        if forces:
            out["forces"] = -per_state(grads[0], atoms=True)
        if stress:
            virial = -per_state(grads[-1], atoms=False)
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
