"""A committee of potentials: the mean as the surface, the spread as its uncertainty.

Models trained apart (other seeds, other data splits) agree where their data were and disagree
where they extrapolate; the spread of their predictions is the cheapest uncertainty there is, and
what adaptive sampling labels next. :class:`Committee` evaluates its members on one graph and
returns the means (couplings first brought to one sign: each member's phase is arbitrary) and the
standard deviations; :class:`UncertaintyLimits` says when a structure is uncertain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

SPREADS = ("energy", "gap", "forces")


@dataclass(frozen=True)
class UncertaintyLimits:
    """When a committee's spread makes a structure uncertain (``None``: that spread is not checked).

    ``energy`` (eV): the standard deviation over the members of any state's energy; ``gap`` (eV):
    of any gap between neighbouring states (what decides hops); ``forces`` (eV/Å): of the force on
    any atom (the norm of the per-component deviations), on any state. ``stop``: an uncertain
    trajectory is stopped (and reported) instead of only flagged. The defaults flag what is far
    outside a trained model's errors on its test data (tenths of an eV, about 1 eV/Å).
    """

    energy: float | None = 0.2
    gap: float | None = 0.2
    forces: float | None = 1.0
    stop: bool = False

    def __post_init__(self):
        for name in SPREADS:
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"the {name} spread limit must be a positive number or none, got {value!r}")

    def exceeded(self, spreads: torch.Tensor) -> torch.Tensor:
        """``[T]``: which structures' ``spreads [T, 3]`` (energy, gap, forces) cross a limit (NaN does)."""
        over = torch.zeros(spreads.shape[0], dtype=torch.bool, device=spreads.device)
        for k, name in enumerate(SPREADS):
            limit = getattr(self, name)
            if limit is not None:
                over |= ~(spreads[:, k] <= limit)
        return over


class Committee(torch.nn.Module):
    """``Committee([potential, ...])``: called like a :class:`~tensorfuse.model.Potential`, returns
    the members' mean of every output and, per structure, ``spreads [B, 3]``: the largest standard
    deviation of a state's energy (eV), of a gap between neighbouring states (eV; 0 for one state)
    and of an atom's force (eV/Å). The members must know the same elements, states and couplings."""

    def __init__(self, members: Sequence[torch.nn.Module]):
        super().__init__()
        members = list(members)
        if len(members) < 2:
            raise ValueError("a committee needs two or more models")
        first = members[0].config
        for member in members[1:]:
            config = member.config
            if set(config.species) != set(first.species):
                raise ValueError("committee models must know the same elements")
            if config.states != first.states or config.couplings != first.couplings:
                raise ValueError("committee models must have the same states and couplings")
        self.members = torch.nn.ModuleList(members)

    @property
    def config(self):
        return self.members[0].config

    @property
    def r_max(self) -> float:
        return max(float(m.r_max) for m in self.members)

    @property
    def num_states(self) -> int:
        return self.config.num_states

    def forward(self, graph, forces: bool = True, stress: bool = False, create_graph: bool = False,
                batched_derivatives: bool = True, return_members: bool = False) -> dict:
        """The means and ``spreads``; with ``return_members`` also ``members``: every output stacked
        over the members ``[M, ...]`` (couplings aligned)."""
        outputs = [m(graph, forces=forces, stress=stress, create_graph=create_graph,
                     batched_derivatives=batched_derivatives) for m in self.members]
        if "couplings" in outputs[0]:
            aligned = [outputs[0]["couplings"]] + [_aligned(o["couplings"], outputs[0]["couplings"], graph)
                                                   for o in outputs[1:]]
            for o, c in zip(outputs, aligned):
                o["couplings"] = c
        stacked = {key: torch.stack([o[key] for o in outputs]) for key in outputs[0]}
        out = {key: value.mean(0) for key, value in stacked.items()}
        out["spreads"] = committee_spreads(stacked, graph)
        if return_members:
            out["members"] = stacked
        return out


def committee_spreads(stacked: dict[str, torch.Tensor], graph) -> torch.Tensor:
    """``[B, 3]``: the largest deviation of a state's energy, a gap and an atom's force, per structure,
    from the members' outputs stacked on a first axis ``[M, ...]``."""
    energy = stacked["energy"]  # [M, B] or [M, B, S]
    if energy.dim() == 2:
        energy = energy.unsqueeze(-1)
    energy_spread = energy.std(0, unbiased=False).amax(-1)
    gaps = energy.diff(dim=-1)
    gap_spread = gaps.std(0, unbiased=False).amax(-1) if gaps.shape[-1] else torch.zeros_like(energy_spread)
    force_spread = torch.zeros_like(energy_spread)
    if "forces" in stacked:
        forces = stacked["forces"]  # [M, N, (S,) 3]
        per_atom = forces.std(0, unbiased=False).norm(dim=-1)  # [N] or [N, S]
        if per_atom.dim() == 2:
            per_atom = per_atom.amax(-1)
        force_spread = force_spread.scatter_reduce(0, graph.batch, per_atom, reduce="amax", include_self=True)
    return torch.stack([energy_spread, gap_spread, force_spread], dim=1)


def _aligned(couplings: torch.Tensor, reference: torch.Tensor, graph) -> torch.Tensor:
    """``couplings [N, P, 3]`` with each structure's and pair's sign chosen to agree with ``reference``."""
    overlap = (couplings * reference).sum(-1)  # [N, P]
    per_structure = overlap.new_zeros(graph.num_graphs, overlap.shape[1]).index_add_(0, graph.batch, overlap)
    sign = torch.where(per_structure < 0, -1.0, 1.0).to(couplings.dtype)
    return couplings * sign[graph.batch].unsqueeze(-1)
