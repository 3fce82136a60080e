"""Ordered adiabatic states: every multi-state construction but the legacy one keeps E_S0 <= E_S1 <= ...
for any input, trained or not, and stays finite where two states meet."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tensorfuse import ModelConfig, build_model
from tensorfuse.data import AtomicGraph, batch_graphs
from tensorfuse.model._states import StateEnergies, symmetric_eigh
from tensorfuse.testing import random_molecule

SMALL = dict(species=(1, 6, 8), channels=4, l_max=1, l_max_edge=2, r_max=4.0, num_bessel=4, radial_mlp=(8, 8),
             readout_hidden=4)
ARCHITECTURES = {
    "symmetric": {},
    "full": {"mace": {"product_basis": "full"}},
    "latent": {"mace": {"product_basis": "latent", "latent_channels": 2}},
    "reduced": {"mace": {"product_basis": "reduced", "level_copies": 1}},
    "contraction": {"mace": {"product_basis": "contraction"}},
    "fusion": {"mace": {"product_basis": "fusion", "fusion_leaves": "distinct"}},
    "cormorant": {"architecture": "cormorant", "cormorant": {"fusion": True}},
}


def _random_geometries(count: int, seed: int, n_atoms: int = 5) -> AtomicGraph:
    """``count`` random clusters of ``n_atoms`` (H, C, O), 0.7-3 Å apart, as one batch."""
    rng = np.random.default_rng(seed)
    graphs = []
    for k in range(count):
        positions, numbers = random_molecule((1, 6, 8), n_atoms, seed=int(rng.integers(1 << 30)),
                                             spread=1.6, min_distance=0.7)
        graphs.append(AtomicGraph.from_arrays(positions, numbers, 4.0, dtype=torch.float64))
    return batch_graphs(graphs)


GEOMETRIES = {}


def _geometries() -> AtomicGraph:
    if "batch" not in GEOMETRIES:
        GEOMETRIES["batch"] = _random_geometries(2000, seed=0)
    return GEOMETRIES["batch"]


def _with_large_weights(model, scale: float = 3.0, seed: int = 1):
    """The random model with its weights scaled up and the states' shifts equal: nothing keeps the
    states apart but the construction itself."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale).add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return model


def _misordered(energy: torch.Tensor) -> int:
    return int((energy.diff(dim=1) < 0).any(1).sum())


@pytest.mark.parametrize("basis", ["cartesian", "spherical"])
@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("states", [("S0", "S1"), ("S0", "S1", "S2")], ids=["2states", "3states"])
def test_untrained_models_order_their_states_on_2000_random_geometries(basis, architecture, states):
    graph = _geometries()
    for kind in ("diabatic", "gaps"):
        config = ModelConfig(basis=basis, states=states, state_energies=kind, **SMALL, **ARCHITECTURES[architecture])
        model = _with_large_weights(build_model(config, dtype=torch.float64, seed=0))
        energy = model(graph, forces=False)["energy"].detach()
        assert energy.shape == (2000, len(states))
        assert torch.isfinite(energy).all()
        assert _misordered(energy) == 0, (kind, _misordered(energy))
        spread = energy.diff(dim=1).abs()
        assert float(spread.max()) > 1e-3, "the states must not all coincide (the check would be empty)"


def test_the_legacy_independent_readouts_misorder_states_on_the_same_geometries():
    """The check above fails for tensorfuse 0.1's construction: it is not vacuous."""
    config = ModelConfig(basis="cartesian", states=("S0", "S1", "S2"), state_energies="independent", **SMALL)
    model = _with_large_weights(build_model(config, dtype=torch.float64, seed=0))
    energy = model(_geometries(), forces=False)["energy"].detach()
    assert _misordered(energy) > 100


@pytest.mark.parametrize("kind", ["diabatic", "gaps"])
def test_trained_models_order_their_states(tmp_path, kind):
    """A model trained on ethylene's S0/S1 data (a few epochs), on 2000 geometries far and near the data."""
    from tensorfuse import TrainConfig, train
    from tensorfuse.datasets import path as dataset_path

    result = train(TrainConfig(
        data={"train_file": str(dataset_path("ethylene_casscf")), "states": ["S0", "S1"], "max_train_frames": 60,
              "valid_fraction": 0.2},
        model={**SMALL, "species": (1, 6), "state_energies": kind,
               "couplings": "diabatic" if kind == "diabatic" else "vector"},
        training={"max_epochs": 3, "batch_size": 10, "dtype": "float64"},
        output=str(tmp_path / kind)))
    model = result.model
    rng = np.random.default_rng(3)
    from ase.io import read

    start = read(dataset_path("ethylene_casscf"), index=0)
    graphs = [AtomicGraph.from_arrays(start.positions + rng.normal(scale=scale, size=start.positions.shape),
                                      start.numbers, model.r_max, dtype=torch.float64)
              for scale in np.linspace(0.0, 0.6, 2000)]
    energy = model(batch_graphs(graphs), forces=False)["energy"].detach()
    assert torch.isfinite(energy).all() and _misordered(energy) == 0


# -- a crossing ---------------------------------------------------------------------------------------
def _degenerate_diabatic_model():
    """Two states whose diabatic matrix is e(R)·I at every geometry: degenerate everywhere, with forces."""
    config = ModelConfig(basis="cartesian", states=("S0", "S1"), couplings="diabatic", **SMALL)
    model = build_model(config, dtype=torch.float64, seed=0)
    with torch.no_grad():
        for readout in model.energy_model.readouts:
            last = readout.weights[-1]  # columns: H_00, H_11, H_01
            last[:, 1] = last[:, 0]
            last[:, 2] = 0.0
    return model


def test_an_exact_crossing_gives_finite_forces_couplings_and_training_gradients():
    model = _degenerate_diabatic_model()
    positions, numbers = random_molecule((1, 6, 8), 6, seed=4)
    graph = AtomicGraph.from_arrays(positions, numbers, model.r_max, dtype=torch.float64)
    out = model(graph, forces=True)
    energy, forces = out["energy"].detach(), out["forces"].detach()
    assert float(energy[0, 1] - energy[0, 0]) == 0.0  # exactly degenerate
    assert torch.isfinite(forces).all() and torch.isfinite(out["couplings"]).all()
    assert float(forces.abs().max()) > 1e-3
    # both states' forces are -grad e (the average of the two, here equal): a finite-difference check
    h = 1e-5
    moved = positions.copy()
    moved[0, 0] += h
    e_plus = model(AtomicGraph.from_arrays(moved, numbers, model.r_max, dtype=torch.float64), forces=False)["energy"]
    moved[0, 0] -= 2 * h
    e_minus = model(AtomicGraph.from_arrays(moved, numbers, model.r_max, dtype=torch.float64), forces=False)["energy"]
    numeric = -(e_plus - e_minus).detach()[0] / (2 * h)
    assert torch.allclose(forces[0, :, 0], numeric, atol=1e-6)
    # training on forces differentiates through the eigenvectors: still finite
    out = model(graph, forces=True, create_graph=True)
    loss = out["energy"].sum() + (out["forces"] ** 2).sum() + (out["couplings"] ** 2).sum()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_forces_stay_bounded_as_two_states_approach_a_crossing():
    """Eigenvalue forces near a degeneracy: |F| bounded by the diabatic elements' gradients (no 1/gap)."""
    model = _degenerate_diabatic_model()
    positions, numbers = random_molecule((1, 6, 8), 6, seed=5)
    graph = AtomicGraph.from_arrays(positions, numbers, model.r_max, dtype=torch.float64)
    largest = []
    for off in (1e-1, 1e-4, 1e-8, 1e-12):  # an off-diagonal element of shrinking size: the gap with it
        with torch.no_grad():
            for readout in model.energy_model.readouts:
                readout.weights[-1][:, 2] = off
        out = model(graph, forces=True)
        assert torch.isfinite(out["forces"]).all() and torch.isfinite(out["couplings"]).all()
        largest.append(float(out["forces"].abs().max()))
    assert max(largest) < 10 * min(largest)


# -- the eigen-decomposition ---------------------------------------------------------------------------
def test_symmetric_eigh_gradients_equal_torch_away_from_crossings_and_stay_finite_at_one():
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(4, 3, 3, generator=generator, dtype=torch.float64)
    matrix = (matrix + matrix.mT).requires_grad_(True)
    weights = torch.randn(4, 3, 3, generator=generator, dtype=torch.float64)
    values, vectors = symmetric_eigh(matrix)
    ours = torch.autograd.grad((values**2).sum() + (weights * vectors * vectors[..., :1, :].sign()).sum(), matrix)[0]
    reference_values, reference_vectors = torch.linalg.eigh(matrix)
    signs = torch.where(reference_vectors.gather(-2, reference_vectors.abs().argmax(-2, keepdim=True)) < 0, -1.0, 1.0)
    reference_vectors = reference_vectors * signs
    reference = torch.autograd.grad((reference_values**2).sum()
                                    + (weights * reference_vectors * reference_vectors[..., :1, :].sign()).sum(),
                                    matrix)[0]
    assert torch.allclose(0.5 * (ours + ours.mT), 0.5 * (reference + reference.mT), atol=1e-9)
    degenerate = torch.eye(3, dtype=torch.float64).expand(2, 3, 3).clone().requires_grad_(True)
    values, vectors = symmetric_eigh(degenerate)
    grad = torch.autograd.grad(values.sum() + vectors.sum(), degenerate)[0]
    assert torch.isfinite(grad).all()


def test_diabatic_head_energies_are_the_eigenvalues_and_node_energies_add_up_to_them():
    head = StateEnergies("diabatic", 3, pairs=((0, 1), (0, 2), (1, 2)))
    generator = torch.Generator().manual_seed(2)
    excess = torch.randn(7, 6, generator=generator, dtype=torch.float64)
    reference = torch.randn(7, generator=generator, dtype=torch.float64)
    batch = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    out = head(excess, reference, batch, 2)
    for b, atoms in ((0, slice(0, 3)), (1, slice(3, 7))):
        h = excess[atoms].sum(0)
        matrix = torch.tensor([[h[0], h[3], h[4]], [h[3], h[1], h[5]], [h[4], h[5], h[2]]], dtype=torch.float64)
        expected = torch.linalg.eigvalsh(matrix) + reference[atoms].sum()
        assert torch.allclose(out["energy"][b], expected, atol=1e-12)
        assert torch.allclose(out["node_energy"][atoms].sum(0), expected, atol=1e-12)
    assert out["energy_coefficients"].shape == (2, 3, 6) and out["coupling_coefficients"].shape == (2, 3, 6)


def test_gaps_head_orders_states_and_keeps_well_separated_ones():
    head = StateEnergies("gaps", 3)
    excess = torch.tensor([[0.0, 5.0, 12.0], [0.0, -3.0, 1.0]], dtype=torch.float64)  # raw S1 below S0 in the second
    out = head(excess, torch.zeros(2, dtype=torch.float64), torch.tensor([0, 1]), 2)
    energy = out["energy"]
    assert torch.allclose(energy[0], torch.tensor([0.0, 5.0, 12.0], dtype=torch.float64), atol=1e-12)
    assert (energy[1].diff() >= 0).all() and float(energy[1, 1] - energy[1, 0]) < 1e-9
    assert torch.allclose(out["node_energy"].sum(0), energy.sum(0), atol=1e-12)


def test_model_files_of_tensorfuse_0_1_load_with_independent_state_readouts():
    legacy = ModelConfig(states=("S0", "S1"), couplings="vector", state_energies="independent", **SMALL).to_dict()
    legacy.pop("state_energies")
    assert ModelConfig.from_dict(legacy).state_energies == "independent"
    assert ModelConfig(states=("S0", "S1"), **SMALL).state_energies == "diabatic"
    assert "state_energies" not in ModelConfig(**SMALL).to_dict()


@pytest.mark.parametrize("config,match", [
    (dict(state_energies="sorted"), r"state_energies='sorted': expected one of"),
    (dict(states=("S0", "S1"), state_energies="gaps", couplings="diabatic"), r"need state_energies='diabatic'"),
    (dict(state_energies="gaps"), r"applies only to models of two or more states"),
], ids=["unknown", "diabatic-couplings-without-diabatic-energies", "single-state"])
def test_state_energy_settings_are_checked(config, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**SMALL, **config)


def test_diabatic_couplings_have_no_rigid_translation_or_rotation():
    """Derivatives of an invariant matrix: sum_A h_A = 0 and sum_A r_A x h_A = 0 (momentum-conserving hops)."""
    config = ModelConfig(basis="spherical", states=("S0", "S1", "S2"), couplings="diabatic", **SMALL)
    model = build_model(config, dtype=torch.float64, seed=0)
    positions, numbers = random_molecule((1, 6, 8), 7, seed=8)
    h = model(AtomicGraph.from_arrays(positions, numbers, model.r_max, dtype=torch.float64))["couplings"].detach()
    scale = float(h.abs().max())
    assert scale > 1e-6
    assert float(h.sum(0).abs().max()) < 1e-12 * scale
    torque = torch.linalg.cross(torch.tensor(positions).unsqueeze(1).expand_as(h), h).sum(0)
    assert float(torque.abs().max()) < 1e-12 * scale
