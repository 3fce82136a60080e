"""What training minimizes and what it reports, for one potential energy surface or several states.

An objective turns model outputs and labels into a loss (normalized by counts of the whole global
batch, so that data-parallel ranks add up to the loss of the batch) and into sums of errors that
add up over batches and ranks to MAE/RMSE metrics. :class:`EnergyObjective` is the single-state
one (energy per atom, forces, stress); :class:`StatesObjective` weights every electronic state's
energy and forces and the couplings between states.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from tensorfuse.data import AtomicGraph
from tensorfuse.data._dataset import Targets
from tensorfuse.train._loss import SUM_KEYS, LossWeights, batch_counts, error_sums, loss_terms, metrics_from_sums
from tensorfuse.train._statistics import graph_composition, per_element_fit


class EnergyObjective:
    """One potential energy surface: weighted MSE of energy per atom, forces and stress.

    Its metrics include ``e_rmse_shifted``: the energy RMSE left after the best per-element shift
    (least squares over the evaluated frames). Training learns the constant part of the energy
    slowly and a shift refit at the end removes it, so during training the plain energy error
    mostly measures that constant; the shifted one is what the refit will leave. It adds up from
    sums (the compositions' Gram matrix and residual projections), like every other metric."""

    def __init__(self, weights: LossWeights, species: tuple[int, ...] = ()):
        self.weights = weights
        self.species = tuple(species)
        size = len(self.species)
        self.composition_keys = (tuple(f"comp.{i}.{j}" for i in range(size) for j in range(size))
                                 + tuple(f"comp.{i}.e" for i in range(size)))
        self.sum_keys = SUM_KEYS + self.composition_keys

    def counts(self, graph: AtomicGraph, targets: Targets) -> torch.Tensor:
        return batch_counts(graph, targets)

    def loss(self, out, graph, targets, counts) -> torch.Tensor:
        return loss_terms(out, graph, targets, self.weights, counts)

    def error_sums(self, out, graph, targets) -> dict[str, float]:
        sums = error_sums(out, graph, targets)
        if self.species:
            mask = targets.has_energy.cpu().numpy()
            residual = (targets.energy - out["energy"].detach()).double().cpu().numpy()[mask]
            counts = graph_composition(graph, self.species)[mask]
            gram, projection = counts.T @ counts, counts.T @ residual
            size = len(self.species)
            sums.update({f"comp.{i}.{j}": float(gram[i, j]) for i in range(size) for j in range(size)})
            sums.update({f"comp.{i}.e": float(projection[i]) for i in range(size)})
        return sums

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        metrics = metrics_from_sums(sums)
        if self.species and sums.get("n_energy", 0) > 0:
            size = len(self.species)
            gram = np.array([[sums[f"comp.{i}.{j}"] for j in range(size)] for i in range(size)])
            projection = np.array([sums[f"comp.{i}.e"] for i in range(size)])
            shift, _ = per_element_fit(gram, projection)
            explained = float(projection @ shift)  # what the best shift removes from the sum of squares
            metrics["e_rmse_shifted"] = 1000.0 * math.sqrt(max(sums["e_sq"] - explained, 0.0) / sums["n_energy"])
        return metrics


class StatesObjective:
    """Several electronic states: per-state weighted MSE of energy per atom and of forces, and the
    couplings ``ΔE_ij d_ij`` with the better of both signs per frame and pair (the phase of the
    electronic wavefunctions, hence the sign of a coupling, is arbitrary in the reference data)."""

    def __init__(self, states: tuple[str, ...], pairs: tuple[tuple[int, int], ...], energy_weights, forces_weights,
                 couplings_weight: float):
        self.states, self.pairs = tuple(states), tuple(pairs)
        self.energy_weights = torch.tensor(energy_weights, dtype=torch.float64)
        self.forces_weights = torch.tensor(forces_weights, dtype=torch.float64)
        self.couplings_weight = couplings_weight
        self.pair_names = [f"{states[i]}_{states[j]}" for i, j in self.pairs]
        per_state = ("n_e", "e_abs", "e_sq", "e_atom_abs", "e_atom_sq", "n_f", "f_abs", "f_sq")
        per_pair = ("n_c", "c_abs", "c_sq", "n_c_frames", "c_cos")
        gaps = [f"{a}_{b}" for a, b in zip(states, states[1:])]
        self.gap_names = gaps
        self.sum_keys = (tuple(f"{s}.{k}" for s in states for k in per_state)
                         + tuple(f"{p}.{k}" for p in self.pair_names for k in per_pair)
                         + tuple(f"gap_{g}.{k}" for g in gaps for k in ("n", "abs")) + ("loss",))

    def counts(self, graph: AtomicGraph, targets: Targets) -> torch.Tensor:
        """``[frames with energy, force components (per state); coupling components (per pair)]``."""
        t = targets.states
        atoms = graph.atoms_per_graph().to(torch.float64)
        return torch.cat([t.has_energy.sum(0).to(torch.float64), 3 * (t.has_forces.to(torch.float64) * atoms[:, None]).sum(0),
                          3 * (t.has_couplings.to(torch.float64) * atoms[:, None]).sum(0)])

    def loss(self, out, graph, targets, counts) -> torch.Tensor:
        t, s = targets.states, len(self.states)
        dtype = out["energy"].dtype
        atoms = graph.atoms_per_graph().to(dtype)
        loss = out["energy"].new_zeros(())
        e_counts, f_counts, c_counts = counts[:s], counts[s: 2 * s], counts[2 * s:]
        de = (out["energy"] - t.energy) / atoms[:, None]
        e_terms = (targets.weight[:, None] * t.has_energy * de**2).sum(0)  # [S]
        loss = loss + (self.energy_weights.to(e_terms) * e_terms / e_counts.to(e_terms).clamp_min(1)).sum()
        if "forces" in out:
            mask = (t.has_forces * targets.weight[:, None])[graph.batch].unsqueeze(-1)  # [N, S, 1]
            f_terms = ((out["forces"] - t.forces) ** 2 * mask).sum((0, 2))  # [S]
            loss = loss + (self.forces_weights.to(f_terms) * f_terms / f_counts.to(f_terms).clamp_min(1)).sum()
        if self.pairs and self.couplings_weight and "couplings" in out:
            best = _signed_squares(out["couplings"], t.couplings, graph)  # [B, P]
            c_terms = (best * t.has_couplings * targets.weight[:, None]).sum(0)
            loss = loss + self.couplings_weight * (c_terms / c_counts.to(c_terms).clamp_min(1)).sum()
        return loss

    @torch.no_grad()
    def error_sums(self, out, graph, targets) -> dict[str, float]:
        t = targets.states
        atoms = graph.atoms_per_graph().to(out["energy"].dtype)
        sums: dict[str, float] = {}
        de = (out["energy"].detach() - t.energy)
        for k, name in enumerate(self.states):
            mask = t.has_energy[:, k]
            e = de[mask, k]
            sums.update({f"{name}.n_e": float(mask.sum()), f"{name}.e_abs": float(e.abs().sum()),
                         f"{name}.e_sq": float((e**2).sum()),
                         f"{name}.e_atom_abs": float((e / atoms[mask]).abs().sum()),
                         f"{name}.e_atom_sq": float(((e / atoms[mask]) ** 2).sum())})
            if "forces" in out:
                f_mask = t.has_forces[graph.batch, k]
                df = (out["forces"].detach()[:, k] - t.forces[:, k])[f_mask]
            else:
                df = torch.zeros(0)
            sums.update({f"{name}.n_f": float(df.numel()), f"{name}.f_abs": float(df.abs().sum()),
                         f"{name}.f_sq": float((df**2).sum())})
        for k, gap in enumerate(self.gap_names):
            both = t.has_energy[:, k] & t.has_energy[:, k + 1]
            error = (de[:, k + 1] - de[:, k])[both]
            sums.update({f"gap_{gap}.n": float(both.sum()), f"gap_{gap}.abs": float(error.abs().sum())})
        if self.pairs:
            keys = ("n_c", "c_abs", "c_sq", "n_c_frames", "c_cos")
            sums.update({f"{name}.{key}": 0.0 for name in self.pair_names for key in keys})
            if "couplings" in out:
                per_pair = _coupling_error_sums(out["couplings"].detach(), t.couplings, t.has_couplings, graph)
                for p, name in enumerate(self.pair_names):
                    sums.update({f"{name}.{key}": float(per_pair[k, p]) for k, key in enumerate(keys)})
        return sums

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Per state ``e_mae_S0`` (meV), ``e_atom_mae_S0``, ``f_mae_S0`` (meV/Å) and RMSEs; per
        neighbouring pair the gap MAE ``gap_mae_S0_S1``; per coupled pair ``c_mae_S0_S1`` (meV/Å)
        and the mean cosine ``c_cos_S0_S1`` after the sign choice. ``e_mae``/``f_mae`` without a
        state are over all states."""
        def ratio(a, n, root=False):
            value = sums[a] / sums[n] if sums.get(n, 0) > 0 else math.nan
            return math.sqrt(value) if root else value

        milli, out = 1000.0, {}
        for name in self.states:
            out[f"e_mae_{name}"] = milli * ratio(f"{name}.e_abs", f"{name}.n_e")
            out[f"e_rmse_{name}"] = milli * ratio(f"{name}.e_sq", f"{name}.n_e", root=True)
            out[f"e_atom_mae_{name}"] = milli * ratio(f"{name}.e_atom_abs", f"{name}.n_e")
            out[f"f_mae_{name}"] = milli * ratio(f"{name}.f_abs", f"{name}.n_f")
            out[f"f_rmse_{name}"] = milli * ratio(f"{name}.f_sq", f"{name}.n_f", root=True)
        for gap in self.gap_names:
            out[f"gap_mae_{gap}"] = milli * ratio(f"gap_{gap}.abs", f"gap_{gap}.n")
        for name in self.pair_names:
            out[f"c_mae_{name}"] = milli * ratio(f"{name}.c_abs", f"{name}.n_c")
            out[f"c_rmse_{name}"] = milli * ratio(f"{name}.c_sq", f"{name}.n_c", root=True)
            out[f"c_cos_{name}"] = ratio(f"{name}.c_cos", f"{name}.n_c_frames")
        total = {key: sum(sums.get(f"{s}.{key}", 0.0) for s in self.states) for key in ("e_abs", "n_e", "f_abs", "n_f")}
        out["e_mae"] = milli * total["e_abs"] / total["n_e"] if total["n_e"] else math.nan
        out["f_mae"] = milli * total["f_abs"] / total["n_f"] if total["n_f"] else math.nan
        return out


def _coupling_error_sums(predicted, reference, has, graph) -> torch.Tensor:
    """``[5, P]``: components, sum |error|, sum error^2, frames, sum of cosines over the frames with
    a coupling, each frame with its better sign (the one with the smaller squared error)."""
    b, p = graph.num_graphs, predicted.shape[1]

    def per_frame(x):  # [N, P] -> [B, P]
        return x.new_zeros(b, p).index_add_(0, graph.batch, x)

    plus, minus = predicted - reference, predicted + reference
    squares = per_frame((plus**2).sum(-1)), per_frame((minus**2).sum(-1))
    sign = torch.where(squares[0] <= squares[1], 1.0, -1.0)
    absolute = torch.where(sign > 0, per_frame(plus.abs().sum(-1)), per_frame(minus.abs().sum(-1)))
    cosine = sign * per_frame((predicted * reference).sum(-1)) / (
        per_frame((predicted**2).sum(-1)).sqrt() * per_frame((reference**2).sum(-1)).sqrt()).clamp_min(1e-30)
    mask = has.to(predicted.dtype)
    components = 3 * graph.atoms_per_graph().to(predicted.dtype)[:, None] * mask
    return torch.stack([components.sum(0), (absolute * mask).sum(0), (torch.minimum(*squares) * mask).sum(0),
                        mask.sum(0), (cosine * mask).sum(0)])


def _signed_squares(predicted: torch.Tensor, reference: torch.Tensor, graph: AtomicGraph) -> torch.Tensor:
    """``min(|c - r|^2, |c + r|^2)`` summed over each frame's atoms: ``[B, P]`` (phase-free)."""
    plus = ((predicted - reference) ** 2).sum(-1)  # [N, P]
    minus = ((predicted + reference) ** 2).sum(-1)
    b, p = graph.num_graphs, predicted.shape[1]
    per_frame = [x.new_zeros(b, p).index_add_(0, graph.batch, x) for x in (plus, minus)]
    return torch.minimum(*per_frame)


def objective_for(model_config, options) -> EnergyObjective | StatesObjective:
    """The objective of a model with these training options (per-state weights checked here)."""
    if model_config.num_states == 1:
        return EnergyObjective(LossWeights(options.energy_weight, options.forces_weight, options.stress_weight),
                               tuple(model_config.species))
    s = model_config.num_states
    weights = []
    for name, given, default in (("state_energy_weights", options.state_energy_weights, options.energy_weight),
                                 ("state_forces_weights", options.state_forces_weights, options.forces_weight)):
        if given is not None and len(given) != s:
            raise ValueError(f"invalid training configuration: training.{name}={list(given)}: expected {s} weights, "
                             f"one per state {list(model_config.states)}")
        weights.append(list(given) if given is not None else [default] * s)
    return StatesObjective(model_config.states, model_config.state_pairs, *weights, options.couplings_weight)
