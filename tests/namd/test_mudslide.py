"""The mudslide adapter: mudslide's FSSH on a tensorfuse surface equals mudslide on its own model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from tensorfuse import ModelConfig, Statistics, build_model
from tensorfuse.namd import (
    BOHR,
    FS,
    ModelSurface,
    TullySimpleAvoidedCrossing,
    mudslide_model,
)


def fssh(mudslide, model, seed, k=15.0, mass=2000.0):
    v0 = k / mass
    trajectory = mudslide.SurfaceHoppingMD(model, np.array([-10.0]), np.array([v0]), 0, dt=1.0 / v0,
                                           bounds=[[-10.0], [10.0]], seed_sequence=seed, tracer="memory",
                                           max_steps=100000)
    return trajectory.simulate()


def test_mudslide_fssh_through_the_adapter_is_mudslide_fssh_on_its_own_tully_model():
    mudslide = pytest.importorskip("mudslide")
    from mudslide.models import TullySimpleAvoidedCrossing as MudslideTully

    hops = 0
    for seed in range(6):
        native = fssh(mudslide, MudslideTully(), seed)
        adapted = fssh(mudslide, mudslide_model(TullySimpleAvoidedCrossing(), [2000.0]), seed)
        assert len(native.data) == len(adapted.data) and len(native.hops) == len(adapted.hops)
        for a, b in zip(native.data, adapted.data):
            assert a["position"] == pytest.approx(b["position"], abs=1e-10)
            assert a["active"] == b["active"]
            assert np.allclose(a["density_matrix"], b["density_matrix"], atol=1e-10)
        hops += len(native.hops)
    assert hops > 0  # some of the trajectories hopped, so the couplings were used


def test_mudslide_sees_a_learned_model_in_atomic_units_and_runs_it():
    mudslide = pytest.importorskip("mudslide")
    config = ModelConfig(species=(1, 6, 8), r_max=4.0, channels=4, l_max=1, l_max_edge=2, num_bessel=4,
                         radial_mlp=(8,), readout_hidden=4, states=("S0", "S1"), couplings="vector",
                         statistics=Statistics(energy_scale=0.01))
    atoms = molecule("CH3OH")
    surface = ModelSurface(build_model(config, dtype=torch.float64, seed=0), atoms.numbers)
    model = mudslide_model(surface, surface.masses.numpy(), atom_types=atoms.get_chemical_symbols())
    x = atoms.positions.reshape(-1) / BOHR
    model.compute(x)
    surface.reset()
    point = surface(torch.tensor(x)[None])
    assert np.allclose(np.diag(model.hamiltonian), point.energies[0].numpy(), atol=1e-14)
    assert np.allclose(model.force(1), point.forces[0, 1].numpy(), atol=1e-14)
    assert np.allclose(np.abs(model.derivative_coupling(0, 1)), point.couplings[0, 0, 1].abs().numpy(), atol=1e-12)
    gap = point.energies[0, 1] - point.energies[0, 0]
    assert np.allclose(model.force_matrix[0, 1], -float(gap) * model.derivative_coupling(0, 1), atol=1e-14)
    thermal = np.sqrt(9.5e-4 / model.mass) * np.random.default_rng(0).normal(size=model.ndof)
    for method in (mudslide.SurfaceHoppingMD, mudslide.AugmentedFSSH, mudslide.Ehrenfest):
        trajectory = method(model, x, thermal, 1, dt=0.25 * FS, max_steps=40, seed_sequence=0, tracer="memory")
        trace = trajectory.simulate()
        energies = np.array([frame["energy"] for frame in trace.data])
        assert len(energies) > 10 and np.isfinite(energies).all()
        if method is not mudslide.Ehrenfest:  # (mudslide's Ehrenfest force leaves out the coupling term)
            assert np.ptp(energies) < 1e-5, method.__name__
