"""One function, two bases: the Cartesian and spherical models agree with the same weights."""

import pytest
import torch

from tensorfuse import ModelConfig, build_model
from tensorfuse.data import AtomicGraph, batch_graphs
from tensorfuse.testing import random_crystal, random_molecule

BASE = dict(species=(1, 6, 8), channels=6, l_max=2, l_max_edge=3, r_max=4.0)


def _graphs():
    positions, numbers = random_molecule((1, 6, 8), 8, seed=11)
    crystal = random_crystal((1, 6, 8), seed=12)
    return batch_graphs([
        AtomicGraph.from_arrays(positions, numbers, 4.0, dtype=torch.float64),
        AtomicGraph.from_arrays(crystal[0], crystal[1], 4.0, crystal[2], True, dtype=torch.float64),
    ])


def assert_same_function(spherical, cartesian):
    """Energies, forces and stress agree (1e-8) once the Cartesian model has the spherical weights."""
    # built with different seeds: they only agree once the weights are shared
    cartesian.load_state_dict(spherical.state_dict())
    graph = _graphs()
    a = spherical(graph, forces=True, stress=True)
    b = cartesian(graph, forces=True, stress=True)
    for key in ("energy", "forces", "stress") + (("couplings",) if "couplings" in a else ()):
        scale = max(float(a[key].detach().abs().max()), 1.0)
        assert float((a[key] - b[key]).detach().abs().max()) < 1e-8 * scale, key


@pytest.mark.parametrize("variant", ["symmetric", "full", "latent", "reduced", "contraction"])
@pytest.mark.parametrize("parity", ["natural", "all"])
def test_cartesian_and_spherical_models_compute_the_same_function(variant, parity):
    if variant == "contraction" and parity == "all":
        pytest.skip("kept small: the contraction variant is covered with natural parity")
    spherical = build_model(ModelConfig(basis="spherical", mace=dict(product_basis=variant), parity=parity, **BASE),
                            dtype=torch.float64, seed=1)
    cartesian = build_model(ModelConfig(basis="cartesian", mace=dict(product_basis=variant), parity=parity, **BASE),
                            dtype=torch.float64, seed=2)
    assert_same_function(spherical, cartesian)


@pytest.mark.parametrize("settings", [
    dict(mace=dict(product_basis="fusion", fusion_leaves="density")),
    dict(mace=dict(product_basis="fusion", fusion_leaves="distinct", fusion_shape="balanced")),
    dict(architecture="cormorant"),
    dict(architecture="cormorant", cormorant=dict(fusion=True, second_message="distinct"), parity="all"),
], ids=["fusion-density", "fusion-distinct", "cormorant", "cormorant-fusion"])
def test_fusion_and_cormorant_models_compute_the_same_function_in_both_bases(settings):
    base = {**BASE, "l_max": 1, "channels": 4}
    spherical = build_model(ModelConfig(basis="spherical", **settings, **base), dtype=torch.float64, seed=1)
    cartesian = build_model(ModelConfig(basis="cartesian", **settings, **base), dtype=torch.float64, seed=2)
    assert_same_function(spherical, cartesian)


def test_state_dicts_have_the_same_layout_in_both_bases():
    s = build_model(ModelConfig(basis="spherical", **BASE)).state_dict()
    c = build_model(ModelConfig(basis="cartesian", **BASE)).state_dict()
    assert list(s) == list(c) and all(s[k].shape == c[k].shape for k in s)


@pytest.mark.parametrize("settings", [
    dict(states=("S0", "S1", "S2"), couplings="vector"),
    dict(states=("S0", "S1"), couplings="gradient", mace=dict(product_basis="fusion", fusion_leaves="distinct")),
    dict(states=("S0", "S1"), couplings="vector", architecture="cormorant", cormorant=dict(fusion=True)),
], ids=["states-vector", "states-fusion-gradient", "states-cormorant-vector"])
def test_multi_state_models_compute_the_same_function_in_both_bases(settings):
    """Every state's energy, forces and stress, and the couplings, agree between the bases."""
    base = {**BASE, "l_max": 1, "channels": 4}
    spherical = build_model(ModelConfig(basis="spherical", **settings, **base), dtype=torch.float64, seed=1)
    cartesian = build_model(ModelConfig(basis="cartesian", **settings, **base), dtype=torch.float64, seed=2)
    assert_same_function(spherical, cartesian)
