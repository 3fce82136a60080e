"""A committee of potentials: means, spreads, couplings brought to one sign, limits."""

from __future__ import annotations

import pytest
import torch

from tensorfuse import ModelConfig, build_model
from tensorfuse.data import AtomicGraph, batch_graphs
from tensorfuse.model import Committee, UncertaintyLimits
from tensorfuse.model._committee import _aligned
from tensorfuse.testing import random_molecule

SMALL = dict(species=(1, 6, 8), channels=4, l_max=1, l_max_edge=2, r_max=4.0, num_bessel=4, radial_mlp=(8, 8),
             readout_hidden=4)


def _graph() -> AtomicGraph:
    graphs = [AtomicGraph.from_arrays(*random_molecule((1, 6, 8), n, seed=n), cutoff=4.0, dtype=torch.float64)
              for n in (5, 7)]
    return batch_graphs(graphs)


def test_the_committee_is_the_mean_and_its_spreads_are_the_members_deviations():
    config = ModelConfig(states=("S0", "S1", "S2"), couplings="vector", **SMALL)
    members = [build_model(config, dtype=torch.float64, seed=s) for s in range(3)]
    graph = _graph()
    out = Committee(members)(graph)
    single = [m(graph) for m in members]
    energies = torch.stack([o["energy"] for o in single]).detach()  # [M, B, S]
    assert torch.allclose(out["energy"], energies.mean(0))
    forces = torch.stack([o["forces"] for o in single]).detach()
    assert torch.allclose(out["forces"], forces.mean(0))
    expected_energy = energies.std(0, unbiased=False).amax(-1)
    expected_gap = energies.diff(dim=-1).std(0, unbiased=False).amax(-1)
    per_atom = forces.std(0, unbiased=False).norm(dim=-1).amax(-1)  # [N]
    expected_forces = torch.stack([per_atom[graph.batch == b].max() for b in range(2)])
    assert torch.allclose(out["spreads"], torch.stack([expected_energy, expected_gap, expected_forces], 1))
    # one model twice: no spread at all
    twice = Committee([members[0], members[0]])(graph)
    assert float(twice["spreads"].abs().max()) == 0.0
    assert torch.allclose(twice["energy"], single[0]["energy"].detach())


def test_couplings_of_the_members_are_brought_to_one_sign_per_structure_and_pair():
    graph = _graph()
    reference = torch.randn(graph.num_atoms, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    flips = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)  # per structure and pair
    flipped = reference * flips[graph.batch].unsqueeze(-1)
    assert torch.equal(_aligned(flipped, reference, graph), reference)


def test_uncertainty_limits_flag_spreads_beyond_them_and_nan():
    limits = UncertaintyLimits(energy=0.1, gap=None, forces=1.0)
    spreads = torch.tensor([[0.05, 5.0, 0.5], [0.2, 0.0, 0.0], [0.0, 0.0, 2.0], [float("nan"), 0.0, 0.0]])
    assert limits.exceeded(spreads).tolist() == [False, True, True, True]
    with pytest.raises(ValueError, match="energy spread limit must be a positive number"):
        UncertaintyLimits(energy=-1.0)


def test_committee_members_must_agree_on_elements_and_states():
    one = build_model(ModelConfig(states=("S0", "S1"), **SMALL), dtype=torch.float64, seed=0)
    other = build_model(ModelConfig(states=("S0", "S1", "S2"), **SMALL), dtype=torch.float64, seed=0)
    with pytest.raises(ValueError, match="same states and couplings"):
        Committee([one, other])
    with pytest.raises(ValueError, match="two or more models"):
        Committee([one])
