"""``Potential.compile``: torch.compile (inductor) gives the eager results, for any graph size."""

import numpy as np
import pytest
import torch

from tensorfuse import ModelConfig, build_model
from tensorfuse.data import AtomicGraph, batch_graphs
from tensorfuse.testing import random_crystal, random_molecule

SMALL = dict(species=(1, 6, 8), channels=4, l_max=1, l_max_edge=2, r_max=4.0, num_layers=2,
             num_bessel=4, radial_mlp=(8, 8), readout_hidden=4)
# one layer keeps the compilation of the default suite's case near a minute
ONE_LAYER = ModelConfig(basis="cartesian", **{**SMALL, "num_layers": 1})
CONFIGS = {
    "cartesian": ModelConfig(basis="cartesian", **SMALL),
    "spherical-states": ModelConfig(basis="spherical", states=("S0", "S1"), couplings="vector", **SMALL),
}


def _molecules(r_max: float) -> list[AtomicGraph]:
    # (below ~6 atoms inductor specialises its small matrix products: a second compilation)
    molecules = [random_molecule((1, 6, 8), n, seed) for n, seed in ((8, 0), (12, 1))]
    return [AtomicGraph.from_arrays(p, z, r_max, dtype=torch.float64) for p, z in molecules]


def _crystal_and_batch(r_max: float) -> list[AtomicGraph]:
    positions, numbers, cell = random_crystal((1, 6, 8), 0)
    crystal = AtomicGraph.from_arrays(positions, numbers, r_max, cell, True, dtype=torch.float64)
    return [crystal, batch_graphs(_molecules(r_max) + [crystal])]


def _assert_compiled_equals_eager(config, graphs):
    eager = build_model(config, dtype=torch.float64, seed=0)
    compiled = build_model(config, dtype=torch.float64, seed=0).compile(dynamic=True)
    assert compiled.compiled and not eager.compiled
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # the compiled copy is not saved
    for graph in graphs:
        stress = bool(graph.pbc.all())
        expected = eager(graph, forces=True, stress=stress)
        actual = compiled(graph, forces=True, stress=stress)
        assert actual.keys() == expected.keys()
        for key, value in expected.items():
            value = value.detach()
            scale = max(float(value.abs().max()), 1e-3)
            assert float((actual[key] - value).abs().max()) <= 1e-10 * scale, key


def test_compiled_potential_equals_eager_for_molecules_of_two_sizes():
    """Molecules of 8 and 12 atoms: one compilation (dynamic shapes), the eager numbers to 1e-10."""
    _assert_compiled_equals_eager(ONE_LAYER, _molecules(4.0))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_compiled_potential_equals_eager_with_stress_batches_and_states(name):
    _assert_compiled_equals_eager(CONFIGS[name], _molecules(4.0) + _crystal_and_batch(4.0))


def test_compiled_potential_names_unknown_elements_and_gives_the_eager_training_gradient():
    potential = build_model(ONE_LAYER, dtype=torch.float64, seed=0).compile()
    positions, _ = random_molecule((1, 6, 8), 4, 3)
    with pytest.raises(ValueError, match=r"atomic number \[9\]"):
        potential(AtomicGraph.from_arrays(positions, np.array([1, 6, 9, 8]), 4.0, dtype=torch.float64))
    # a loss on forces: energy and forces traced into one compiled graph, whose first-order backward
    # gives the eager model's parameter gradient
    eager = build_model(ONE_LAYER, dtype=torch.float64, seed=0)
    graph = _molecules(4.0)[0]
    gradients = []
    for model in (potential, eager):
        loss = (model(graph, forces=True, create_graph=True)["forces"] ** 2).sum()
        gradients.append(torch.autograd.grad(loss, list(model.parameters())))
    for a, b in zip(*gradients):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_calculator_compile_option_gives_the_eager_results():
    from ase import Atoms

    from tensorfuse.calculator import Calculator

    positions, numbers = random_molecule((1, 6, 8), 9, 4)
    results = []
    for compile in (False, True):
        atoms = Atoms(numbers=numbers, positions=positions)
        atoms.calc = Calculator(build_model(ONE_LAYER, dtype=torch.float64, seed=0), compile=compile)
        results.append((atoms.get_potential_energy(), atoms.get_forces()))
        assert atoms.calc.models[0].compiled == compile
    assert abs(results[1][0] - results[0][0]) <= 1e-10 * max(1.0, abs(results[0][0]))
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=0, atol=1e-10)


def test_a_copy_of_a_compiled_potential_runs_its_own_weights():
    """The EMA's deep copy: compiled again around the copy's parameters, not the original's."""
    import copy

    potential = build_model(ONE_LAYER, dtype=torch.float64, seed=0).compile()
    duplicate = copy.deepcopy(potential)
    assert duplicate.compiled
    with torch.no_grad():
        for p in duplicate.parameters():
            p.mul_(1.1)
    graph = _molecules(4.0)[0]
    eager = build_model(ONE_LAYER, dtype=torch.float64, seed=0)
    eager.load_state_dict(duplicate.state_dict())
    expected = eager(graph)
    for create_graph in (False, True):
        actual = duplicate(graph, create_graph=create_graph)
        for key in ("energy", "forces"):
            torch.testing.assert_close(actual[key].detach(), expected[key].detach(), rtol=0, atol=1e-10)
    assert not torch.allclose(potential(graph)["energy"], expected["energy"])
