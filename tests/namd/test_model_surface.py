"""A learned multi-state model as a hopping surface: units, couplings, signs, batching, hops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from tensorfuse import ModelConfig, Statistics, build_model
from tensorfuse.calculator import Calculator
from tensorfuse.data import AtomicGraph
from tensorfuse.data._states import without_rigid_motion
from tensorfuse.namd import BOHR, FS, HARTREE, ModelSurface, SurfaceHopping

CONFIG = dict(species=(1, 6, 8), r_max=4.0, channels=4, l_max=1, l_max_edge=2, mace={"correlation": 2}, num_bessel=4,
              radial_mlp=(8, 8), readout_hidden=4, statistics=Statistics(energy_scale=0.01))


@pytest.fixture(scope="module")
def three_states():
    return build_model(ModelConfig(states=("S0", "S1", "S2"), couplings="vector", **CONFIG), dtype=torch.float64, seed=0)


@pytest.fixture(scope="module")
def diabatic_states():
    """Three untrained states a few tenths of an eV apart, couplings from the diabatic matrix."""
    config = {**CONFIG, "statistics": Statistics(energy_scale=0.1)}
    return build_model(ModelConfig(states=("S0", "S1", "S2"), couplings="diabatic", **config), dtype=torch.float64,
                       seed=0)


def displaced(atoms, count, scale=0.05):
    return np.stack([atoms.positions + scale * np.random.default_rng(k).normal(size=atoms.positions.shape)
                     for k in range(count)])


def test_the_surface_is_the_calculator_in_atomic_units(three_states):
    atoms = molecule("CH3CH2OH")
    xs = displaced(atoms, 3)
    point = ModelSurface(three_states, atoms.numbers)(torch.tensor(xs.reshape(3, -1) / BOHR))
    for k in range(3):
        a = atoms.copy()
        a.positions = xs[k]
        a.calc = Calculator(three_states)
        energies, forces = a.calc.get_property("state_energies", a), a.calc.get_property("state_forces", a)
        couplings = a.calc.get_property("couplings", a)  # ΔE·d, eV/Å, pairs (0,1), (0,2), (1,2)
        # the surface's vector-head couplings without their rigid-body part (momentum-conserving hops)
        couplings = without_rigid_motion(torch.tensor(xs[k:k + 1]), torch.tensor(couplings[None]))[0].numpy()
        assert np.allclose(point.energies[k].numpy() * HARTREE, energies, atol=1e-12, rtol=0)
        assert np.allclose(point.forces[k].numpy().reshape(3, -1, 3) * HARTREE / BOHR, forces, atol=1e-12, rtol=0)
        d = point.couplings[k]
        assert torch.allclose(d, -d.transpose(0, 1)) and float(d.diagonal().abs().max()) == 0.0
        for p, (i, j) in enumerate(((0, 1), (0, 2), (1, 2))):
            gap = float(point.energies[k, j] - point.energies[k, i])
            h = d[i, j].numpy().reshape(-1, 3) * gap * HARTREE / BOHR
            assert min(np.abs(h - couplings[p]).max(), np.abs(h + couplings[p]).max()) < 1e-12


def test_a_batch_is_the_structures_one_by_one_and_the_graph_is_the_neighbour_lists(three_states):
    atoms = molecule("CH3CH2OH")
    xs = displaced(atoms, 4, scale=0.3)
    surface = ModelSurface(three_states, atoms.numbers)
    batch = surface(torch.tensor(xs.reshape(4, -1) / BOHR))
    for k in range(4):
        surface.reset()
        single = surface(torch.tensor(xs[k].reshape(1, -1) / BOHR))
        assert torch.allclose(batch.energies[k], single.energies[0], atol=1e-13)
        assert torch.allclose(batch.forces[k], single.forces[0], atol=1e-13)
        reference = AtomicGraph.from_arrays(xs[k], atoms.numbers, surface.cutoff, dtype=torch.float64)
        graph = surface._graph(torch.tensor(xs[k:k + 1]))
        assert torch.equal(graph.edge_index, reference.edge_index)


def test_coupling_signs_stay_continuous_along_a_trajectory(three_states):
    """The model's sign of each coupling vector is arbitrary: the surface keeps the sign that
    agrees with the previous step's vector, per trajectory and pair."""
    atoms = molecule("CH3CH2OH")
    surface = ModelSurface(three_states, atoms.numbers)
    x = torch.tensor(displaced(atoms, 2).reshape(2, -1) / BOHR)
    first = surface(x).couplings
    surface.sign_memory = surface.sign_memory * torch.tensor([1.0, -1.0])[:, None, None]  # trajectory 1's signs flipped
    again = surface(x).couplings
    assert torch.allclose(again[0], first[0]) and torch.allclose(again[1], -first[1])


def test_fssh_on_a_learned_surface_conserves_energy_at_every_hop(diabatic_states):
    """Three untrained states close together: hops happen; each accepted one conserves the total
    energy to 1e-8 (relative), populations sum to one, and velocities of frustrated hops stay."""
    atoms = molecule("CH3CH2OH")
    surface = ModelSurface(diabatic_states, atoms.numbers)
    t = 12
    x = torch.tensor(displaced(atoms, t, scale=0.02).reshape(t, -1) / BOHR)
    thermal = (9.5e-4 / surface.masses).sqrt()  # 300 K
    v = thermal * torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    engine = SurfaceHopping(surface, surface.masses, method="fssh", dt=0.5 * FS, seed=1)
    ensemble = engine.run(x, v, 2, 80)
    accepted = [h for h in ensemble.hops if h.accepted]
    assert accepted, "no hop: the test does not test anything"
    for hop in accepted:
        assert abs(hop.energy_after - hop.energy_before) <= 1e-8 * abs(hop.energy_before)
    assert torch.allclose(ensemble.populations.sum(-1), torch.ones(()), atol=1e-10)


def test_a_single_state_model_is_no_surface():
    model = build_model(ModelConfig(**CONFIG), dtype=torch.float64, seed=0)
    with pytest.raises(ValueError, match="two or more electronic states"):
        ModelSurface(model, [6, 1])
