"""ASE calculator: energies, forces, stress and per-atom energies of one model or a committee."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator as _ASECalculator
from ase.calculators.calculator import all_changes

from tensorfuse.data import AtomicGraph
from tensorfuse.model import Committee, Potential, load_potential
from tensorfuse.utils import resolve_device


class Calculator(_ASECalculator):
    """``tensorfuse.Calculator(model_or_path, device="cpu", dtype=None, skin=0.5, compile=False)``.

    Results: ``energy``, ``free_energy``, ``forces``, ``energies`` (per atom) and, for structures
    periodic along all three axes, ``stress`` (Voigt, eV/Å^3). With a list of models (a
    committee) the results are the committee means (see :class:`~tensorfuse.model.Committee`), and
    ``energy_std``, ``forces_std`` (per atom and component), ``energy_committee`` and
    ``forces_committee`` are added, and ``committee_spreads`` ``[3]``: the largest deviation of a
    state's energy, of a gap and of an atom's force (eV, eV, eV/Å; what
    :class:`~tensorfuse.model.UncertaintyLimits` checks).

    A model of several electronic states adds ``state_energies`` ``[S]``, ``state_forces``
    ``[S, N, 3]`` and, with a coupling head, ``couplings`` ``[P, N, 3]`` (``ΔE_ij d_ij`` in eV/Å for
    the pairs ``model.config.state_pairs``; the sign of each is arbitrary); ``energy``, ``forces``
    and ``energies`` are those of ``active_state`` (an index or a state name, settable: a surface
    hop sets it). A committee adds ``state_energies_std`` and ``state_forces_std``.

    The neighbour list is built for ``r_max + skin`` and reused until some atom has moved (or the
    cell has changed) enough that a pair could have crossed ``r_max``; the extra pairs contribute
    exactly zero thanks to the smooth cutoff, so MD steps stay cheap and the results exact.

    ``compile=True`` runs the models through ``torch.compile`` (:meth:`Potential.compile`): the
    first call compiles (a minute or more on a CPU), later calls are several times faster for
    small molecules, with the same results to rounding.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", "state_energies",
                              "state_forces", "couplings"]

    def __init__(self, model, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
                 skin: float = 0.5, active_state: int | str = 0, compile: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(dtype, str):
            if dtype not in ("float32", "float64"):
                raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
            dtype = getattr(torch, dtype)
        if skin < 0:
            raise ValueError(f"skin must be >= 0, got {skin}")
        models = list(model) if isinstance(model, Sequence) and not isinstance(model, str) else [model]
        if not models:
            raise ValueError("an empty committee: give at least one model")
        self.device = resolve_device(device)
        self.models = [load_potential(m, self.device, dtype) for m in models]
        for m in self.models:
            m.eval()
            if compile and not m.compiled:
                m.compile()
        self.dtype = next(self.models[0].parameters()).dtype
        self.species = set(self.models[0].config.species)
        self.committee = Committee(self.models) if len(self.models) > 1 else None  # checks the members agree
        self.states = self.models[0].config.states if self.models[0].config.num_states > 1 else ()
        self._active = 0
        self.active_state = active_state
        self.skin = float(skin)
        self.cutoff = max(m.r_max for m in self.models) + self.skin
        self._graph: AtomicGraph | None = None
        self._reference = None  # positions, cell, numbers, pbc at the last neighbour-list build
        self._max_shift = 0.0
        self.neighbor_list_builds = 0
        from tensorfuse.utils import tune_malloc

        tune_malloc()  # keep freed memory in the process: MD calls reuse it (see utils._malloc)

    @property
    def active_state(self) -> int:
        """The state whose energy and forces are ``energy`` and ``forces`` (an index)."""
        return self._active

    @active_state.setter
    def active_state(self, state: int | str) -> None:
        if isinstance(state, str):
            if state not in self.states:
                raise ValueError(f"unknown state {state!r}: the model has the states {list(self.states) or ['(one)']}")
            state = self.states.index(state)
        if not 0 <= int(state) < max(1, len(self.states)):
            raise ValueError(f"state index {state} out of range: the model has {max(1, len(self.states))} state(s)")
        if int(state) != getattr(self, "_active", 0):
            self.reset()  # the results belong to another surface now
        self._active = int(state)

    # -- neighbour list with a skin ---------------------------------------------------------------
    def _needs_rebuild(self, positions, cell, numbers, pbc) -> bool:
        if self._reference is None:
            return True
        ref_positions, ref_cell, ref_numbers, ref_pbc = self._reference
        if len(numbers) != len(ref_numbers) or not np.array_equal(numbers, ref_numbers) or not np.array_equal(pbc, ref_pbc):
            return True
        moved = np.sqrt(((positions - ref_positions) ** 2).sum(1).max()) if len(positions) else 0.0
        strain = np.linalg.norm(cell - ref_cell, 2) * self._max_shift
        return 2 * moved + strain > self.skin

    def _graph_for(self, atoms) -> AtomicGraph:
        positions = atoms.get_positions()
        cell, numbers, pbc = atoms.cell.array.copy(), atoms.get_atomic_numbers(), atoms.pbc.copy()
        unknown = sorted(set(numbers.tolist()) - self.species)
        if unknown:
            raise ValueError(f"element(s) with atomic number {unknown} are not in the model's species {sorted(self.species)}")
        if self._needs_rebuild(positions, cell, numbers, pbc):
            self._graph = AtomicGraph.from_arrays(positions, numbers, self.cutoff, cell, pbc, dtype=self.dtype).to(self.device)
            self._reference = (positions.copy(), cell, numbers.copy(), pbc)
            shifts = self._graph.unit_shifts
            self._max_shift = float(shifts.abs().sum(1).max()) if shifts.numel() else 0.0
            self.neighbor_list_builds += 1
            return self._graph
        return AtomicGraph(
            positions=torch.tensor(positions, dtype=self.dtype, device=self.device),
            numbers=self._graph.numbers,
            edge_index=self._graph.edge_index,
            unit_shifts=self._graph.unit_shifts,
            cell=torch.tensor(cell, dtype=self.dtype, device=self.device).unsqueeze(0),
            pbc=self._graph.pbc,
            batch=self._graph.batch,
        )

    # -- ASE interface ------------------------------------------------------------------------
    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        graph = self._graph_for(self.atoms)
        stress = bool(np.all(self.atoms.pbc))
        if self.committee is not None:  # the members, their couplings brought to one sign
            committee = self.committee(graph, forces=True, stress=stress, return_members=True)
            members = committee["members"]
            outputs = [{key: value[m] for key, value in members.items()} for m in range(len(self.models))]
            self.results["committee_spreads"] = committee["spreads"][0].detach().cpu().numpy()
        else:
            outputs = [self.models[0](graph, forces=True, stress=stress)]
        if self.states:
            outputs = [self._state_results(o) for o in outputs]
        energies = np.array([float(o["energy"][0].detach()) for o in outputs])
        forces = np.stack([o["forces"].detach().cpu().numpy() for o in outputs])
        node = np.stack([o["node_energy"].detach().cpu().numpy() for o in outputs])
        self.results["energy"] = self.results["free_energy"] = float(energies.mean())
        self.results["forces"] = forces.mean(0)
        self.results["energies"] = node.mean(0)
        if stress:
            s = np.stack([o["stress"][0].detach().cpu().numpy() for o in outputs]).mean(0)
            self.results["stress"] = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
        if len(self.models) > 1:
            self.results["energy_std"] = float(energies.std())
            self.results["forces_std"] = forces.std(0)
            self.results["energy_committee"] = energies
            self.results["forces_committee"] = forces
        if self.states:
            state_energies = np.stack([o["state_energies"] for o in outputs])  # [M, S]
            state_forces = np.stack([o["state_forces"] for o in outputs])  # [M, S, N, 3]
            self.results["state_energies"] = state_energies.mean(0)
            self.results["state_forces"] = state_forces.mean(0)
            if "couplings" in outputs[0]:
                self.results["couplings"] = np.stack([o["couplings"] for o in outputs]).mean(0)
            if len(self.models) > 1:
                self.results["state_energies_std"] = state_energies.std(0)
                self.results["state_forces_std"] = state_forces.std(0)

    def _state_results(self, out: dict) -> dict:
        """A multi-state model's outputs, with the active state's as ``energy``/``forces``."""
        k = self._active
        result = {"energy": out["energy"][:, k], "forces": out["forces"][:, k], "node_energy": out["node_energy"][:, k],
                  "state_energies": out["energy"][0].detach().cpu().numpy(),
                  "state_forces": out["forces"].detach().cpu().numpy().transpose(1, 0, 2)}
        if "stress" in out:
            result["stress"] = out["stress"][:, k]
        if "couplings" in out:
            result["couplings"] = out["couplings"].detach().cpu().numpy().transpose(1, 0, 2)
        return result
