"""Loss and error metrics (sums over a batch, normalized by global counts so that data-parallel
ranks add up to exactly the loss of the whole batch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tensorfuse.data import AtomicGraph
from tensorfuse.data._dataset import Targets

SUM_KEYS = (
    "n_energy", "n_atoms_energy", "n_force_components", "n_stress",
    "e_abs", "e_sq", "e_atom_abs", "e_atom_sq", "f_abs", "f_sq", "s_abs", "s_sq", "loss",
)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms (defaults live in :class:`~tensorfuse.train.OptimConfig`)."""

    energy: float
    forces: float
    stress: float


def batch_counts(graph: AtomicGraph, targets: Targets) -> torch.Tensor:
    """``[structures with energy, force components, structures with stress]`` of a batch."""
    atoms_with_forces = targets.has_forces[graph.batch].sum()
    return torch.stack([targets.has_energy.sum(), 3 * atoms_with_forces, targets.has_stress.sum()]).to(torch.float64)


def loss_terms(out: dict, graph: AtomicGraph, targets: Targets, weights: LossWeights, counts: torch.Tensor):
    """Weighted MSE of energy per atom, force components and stress, each divided by ``counts``.
    A frame's ``config_weight`` (``targets.weight``) scales all three of its terms, as in MACE."""
    atoms = graph.atoms_per_graph().to(out["energy"].dtype)
    loss = out["energy"].new_zeros(())
    if weights.energy and counts[0] > 0:
        de = (out["energy"] - targets.energy) / atoms
        loss = loss + weights.energy * (targets.weight * targets.has_energy * de**2).sum() / counts[0]
    if weights.forces and counts[1] > 0 and "forces" in out:
        mask = (targets.has_forces * targets.weight)[graph.batch].unsqueeze(-1)
        loss = loss + weights.forces * ((out["forces"] - targets.forces) ** 2 * mask).sum() / counts[1]
    if weights.stress and counts[2] > 0 and "stress" in out:
        mask = (targets.has_stress * targets.weight).view(-1, 1, 1)
        loss = loss + weights.stress * ((out["stress"] - targets.stress) ** 2 * mask).sum() / (9 * counts[2])
    return loss


@torch.no_grad()
def error_sums(out: dict, graph: AtomicGraph, targets: Targets) -> dict[str, float]:
    """Sums of absolute and squared errors, and their counts, for MAE/RMSE over many batches."""
    atoms = graph.atoms_per_graph().to(out["energy"].dtype)
    e_mask = targets.has_energy
    de = (out["energy"].detach() - targets.energy)[e_mask]
    de_atom = de / atoms[e_mask]
    sums = {
        "n_energy": float(e_mask.sum()),
        "n_atoms_energy": float(atoms[e_mask].sum()),
        "e_abs": float(de.abs().sum()), "e_sq": float((de**2).sum()),
        "e_atom_abs": float(de_atom.abs().sum()), "e_atom_sq": float((de_atom**2).sum()),
    }
    f_mask = targets.has_forces[graph.batch]
    df = (out["forces"].detach() - targets.forces)[f_mask] if "forces" in out else torch.zeros(0)
    sums.update(n_force_components=float(df.numel()), f_abs=float(df.abs().sum()), f_sq=float((df**2).sum()))
    s_mask = targets.has_stress
    ds = (out["stress"].detach() - targets.stress)[s_mask] if "stress" in out else torch.zeros(0)
    sums.update(n_stress=float(s_mask.sum()) if "stress" in out else 0.0,
                s_abs=float(ds.abs().sum()), s_sq=float((ds**2).sum()))
    return sums


def metrics_from_sums(sums: dict[str, float]) -> dict[str, float]:
    """MAE/RMSE in meV, meV/atom, meV/Å and meV/Å^3 (NaN where a label is absent)."""
    def ratio(a, n):
        return sums[a] / sums[n] if sums.get(n, 0) > 0 else float("nan")

    milli = 1000.0
    return {
        "e_mae": milli * ratio("e_abs", "n_energy"),
        "e_rmse": milli * ratio("e_sq", "n_energy") ** 0.5,
        "e_atom_mae": milli * ratio("e_atom_abs", "n_energy"),
        "e_atom_rmse": milli * ratio("e_atom_sq", "n_energy") ** 0.5,
        "f_mae": milli * ratio("f_abs", "n_force_components"),
        "f_rmse": milli * ratio("f_sq", "n_force_components") ** 0.5,
        "s_mae": milli * sums["s_abs"] / (9 * sums["n_stress"]) if sums.get("n_stress", 0) > 0 else float("nan"),
        "s_rmse": milli * (sums["s_sq"] / (9 * sums["n_stress"])) ** 0.5 if sums.get("n_stress", 0) > 0 else float("nan"),
    }
