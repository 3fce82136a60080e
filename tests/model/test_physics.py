"""The physics suite of tensorfuse.testing, on both bases and every product-basis variant."""

import pytest

from tensorfuse import ModelConfig, Statistics
from tensorfuse.testing import PotentialTests

SMALL = dict(species=(1, 6, 8), channels=4, l_max=1, l_max_edge=2, r_max=4.0,
             num_bessel=4, radial_mlp=(8, 8), readout_hidden=4)


class TestCartesianSymmetric(PotentialTests):
    config = ModelConfig(basis="cartesian", mace=dict(product_basis="symmetric"), **SMALL)


class TestSphericalSymmetric(PotentialTests):
    config = ModelConfig(basis="spherical", mace=dict(product_basis="symmetric"), **SMALL)


class TestCartesianFull(PotentialTests):
    config = ModelConfig(basis="cartesian", mace=dict(product_basis="full"), **SMALL)


class TestSphericalFull(PotentialTests):
    config = ModelConfig(basis="spherical", mace=dict(product_basis="full"), **SMALL)


class TestCartesianLatent(PotentialTests):
    config = ModelConfig(basis="cartesian", mace=dict(product_basis="latent", latent_channels=2), **SMALL)


class TestSphericalLatent(PotentialTests):
    config = ModelConfig(basis="spherical", mace=dict(product_basis="latent", latent_channels=2), **SMALL)


class TestCartesianReduced(PotentialTests):
    config = ModelConfig(basis="cartesian", mace=dict(product_basis="reduced", correlation=4, level_copies=1), **SMALL)


class TestSphericalReduced(PotentialTests):
    config = ModelConfig(basis="spherical", mace=dict(product_basis="reduced", correlation=4), **SMALL)


class TestCartesianContraction(PotentialTests):
    config = ModelConfig(basis="cartesian", mace=dict(product_basis="contraction"), **SMALL)


class TestSphericalContraction(PotentialTests):
    config = ModelConfig(basis="spherical", mace=dict(product_basis="contraction"), **SMALL)


class TestCartesianPseudotensors(PotentialTests):
    """Both parities in the hidden features: odd (Levi-Civita) products feed pseudotensor channels."""

    config = ModelConfig(basis="cartesian", parity="all", **SMALL)


class TestSphericalPseudotensors(PotentialTests):
    config = ModelConfig(basis="spherical", parity="all", **SMALL)


class TestCartesianHighCorrelation(PotentialTests):
    """Correlation 5 (6-body): iterated products, where MACE's coupling tensors run out of memory."""

    config = ModelConfig(**{**SMALL, "l_max_edge": 1, "l_max": 1}, basis="cartesian", mace=dict(correlation=5))


@pytest.mark.slow
class TestCartesianLarger(PotentialTests):
    config = ModelConfig(species=(1, 6, 8), basis="cartesian", channels=8, l_max=2, l_max_edge=3)


# -- fusion product bases (MACE-style) and the Cormorant-style model -------------------------------
class TestCartesianFusionDensity(PotentialTests):
    config = ModelConfig(basis="cartesian", mace=dict(product_basis="fusion", fusion_leaves="density"), **SMALL)


class TestSphericalFusionDensity(PotentialTests):
    config = ModelConfig(basis="spherical", mace=dict(product_basis="fusion", fusion_leaves="density"), **SMALL)


class TestCartesianFusionDistinct(PotentialTests):
    config = ModelConfig(basis="cartesian", mace=dict(product_basis="fusion", fusion_leaves="distinct"), **SMALL)


class TestSphericalFusionDistinct(PotentialTests):
    config = ModelConfig(basis="spherical", mace=dict(product_basis="fusion", fusion_leaves="distinct"), **SMALL)


class TestCartesianFusionPseudotensors(PotentialTests):
    config = ModelConfig(basis="cartesian", mace=dict(product_basis="fusion", fusion_leaves="distinct"), parity="all", **SMALL)


class TestCartesianCormorant(PotentialTests):
    config = ModelConfig(architecture="cormorant", basis="cartesian", **SMALL)


class TestSphericalCormorant(PotentialTests):
    config = ModelConfig(architecture="cormorant", basis="spherical", **SMALL)


class TestCartesianCormorantFusion(PotentialTests):
    config = ModelConfig(architecture="cormorant", basis="cartesian",
                         cormorant=dict(fusion=True, second_message="distinct"), **SMALL)


class TestSphericalCormorantFusion(PotentialTests):
    config = ModelConfig(architecture="cormorant", basis="spherical",
                         cormorant=dict(fusion=True, second_message="distinct"), **SMALL)


class TestSphericalCormorantFusionDensity(PotentialTests):
    config = ModelConfig(architecture="cormorant", basis="spherical", cormorant=dict(fusion=True),
                         parity="all", **SMALL)


# -- several electronic states: every check holds for every state, and for the couplings --------------
STATES = dict(states=("S0", "S1", "S2"), couplings="vector")


class TestCartesianStates(PotentialTests):
    config = ModelConfig(basis="cartesian", **STATES, **SMALL)


class TestSphericalStates(PotentialTests):
    config = ModelConfig(basis="spherical", **STATES, **SMALL)


class TestCartesianStatesGradientCouplings(PotentialTests):
    """SchNarc's couplings: the gradient of a learned scalar per pair of states."""

    config = ModelConfig(basis="cartesian", states=("S0", "S1"), couplings="gradient",
                         mace=dict(product_basis="latent", latent_channels=2), **SMALL)


class TestSphericalStatesFull(PotentialTests):
    config = ModelConfig(basis="spherical", states=("S0", "S1"), mace=dict(product_basis="full"), **SMALL)


class TestCartesianStatesContraction(PotentialTests):
    config = ModelConfig(basis="cartesian", states=("S0", "S1"), couplings="vector",
                         mace=dict(product_basis="contraction"), **SMALL)


class TestSphericalStatesFusion(PotentialTests):
    config = ModelConfig(basis="spherical", **STATES, mace=dict(product_basis="fusion", fusion_leaves="distinct"),
                         **SMALL)


class TestCartesianStatesCormorantFusion(PotentialTests):
    config = ModelConfig(architecture="cormorant", basis="cartesian", states=("S0", "S1"), couplings="vector",
                         cormorant=dict(fusion=True, second_message="distinct"), **SMALL)


class TestSphericalStatesCormorant(PotentialTests):
    config = ModelConfig(architecture="cormorant", basis="spherical", states=("S0", "S1"), couplings="gradient",
                         **SMALL)


# -- how the states are ordered: a diabatic matrix (the default, above), soft gaps, or none ------------
class TestCartesianStatesDiabaticCouplings(PotentialTests):
    """Couplings U_i^T ∇H U_j from the eigenvectors of the diabatic matrix (Hellmann–Feynman)."""

    config = ModelConfig(basis="cartesian", states=("S0", "S1", "S2"), couplings="diabatic", **SMALL)


class TestSphericalStatesDiabaticCouplingsFusion(PotentialTests):
    config = ModelConfig(basis="spherical", states=("S0", "S1"), couplings="diabatic",
                         mace=dict(product_basis="fusion", fusion_leaves="distinct"), **SMALL)


class TestCartesianStatesDiabaticCouplingsCormorant(PotentialTests):
    config = ModelConfig(architecture="cormorant", basis="cartesian", states=("S0", "S1", "S2"), couplings="diabatic",
                         cormorant=dict(fusion=True), **SMALL)


# the gaps' soft ordering is exact (to rounding) for states more than ~2 eV apart, as isolated atoms' are here
_SEPARATED = Statistics(energy_shift={z: [3.0 * s + 0.1 * k for s in range(3)] for k, z in enumerate(SMALL["species"])})


class TestCartesianStatesGaps(PotentialTests):
    config = ModelConfig(basis="cartesian", states=("S0", "S1", "S2"), state_energies="gaps", couplings="vector",
                         statistics=_SEPARATED, **SMALL)


class TestSphericalStatesGapsCormorant(PotentialTests):
    config = ModelConfig(architecture="cormorant", basis="spherical", states=("S0", "S1", "S2"),
                         state_energies="gaps", couplings="gradient", statistics=_SEPARATED, **SMALL)


class TestCartesianStatesIndependent(PotentialTests):
    """tensorfuse 0.1's construction (one readout per state, unordered), kept for its model files."""

    config = ModelConfig(basis="cartesian", states=("S0", "S1"), state_energies="independent", couplings="vector",
                         **SMALL)
