"""The bridge: the Cartesian and spherical bases are one algebra up to a change of basis."""

import pytest
import torch

from tensorfuse import o3
from tensorfuse.testing import rotations_and_reflections

LMAX = o3.MAX_L
ALL_TRIPLES = [
    (l1, l2, l3)
    for l1 in range(LMAX + 1)
    for l2 in range(LMAX + 1)
    for l3 in range(abs(l1 - l2), min(l1 + l2, LMAX) + 1)
]


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_change_of_basis_is_orthogonal_and_maps_harmonics(l):
    Q = o3.change_of_basis(l)
    assert (Q @ Q.T - torch.eye(2 * l + 1)).abs().max() < 1e-12
    x = torch.randn(10, 3)
    cartesian = o3.cartesian_harmonics(l, x, normalization="component")
    assert (cartesian @ Q.T - o3.spherical_harmonics(l, x)).abs().max() < 1e-12


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_change_of_basis_intertwines_the_representations(l):
    Q = o3.change_of_basis(l)
    for R in rotations_and_reflections(4):
        for p in (1, -1):
            ir = o3.Irrep(l, p)
            D_cart = o3.CARTESIAN.irrep_matrix(ir, R)
            D_sph = o3.SPHERICAL.irrep_matrix(ir, R)
            assert (Q @ D_cart @ Q.T - D_sph).abs().max() < 1e-12


@pytest.mark.parametrize("l1,l2,l3", ALL_TRIPLES)
def test_every_cartesian_product_is_a_clebsch_gordan_product_times_one_scalar(l1, l2, l3):
    """Even and odd paths alike: one scalar per path and the change of basis relate them exactly."""
    C = o3.coupling_in_spherical("cartesian", l1, l2, l3)
    W = o3.wigner_3j(l1, l2, l3)
    scale = (C * W).sum() / (W * W).sum()
    assert scale.abs() > 1e-8
    assert (C - scale * W).abs().max() < 1e-12 * scale.abs().item()


@pytest.mark.parametrize("l1,l2,l3", ALL_TRIPLES[::2] + [(8, 8, 8), (8, 7, 8)])
def test_path_couplings_of_both_bases_are_equal_up_to_the_change_of_basis(l1, l2, l3):
    spherical = o3.SPHERICAL.path_coupling(l1, l2, l3)
    cartesian = o3.CARTESIAN.path_coupling(l1, l2, l3)
    Q1, Q2, Q3 = (o3.change_of_basis(l) for l in (l1, l2, l3))
    mapped = torch.einsum("ai,bj,ck,ijk->abc", Q1, Q2, Q3, cartesian)
    assert (mapped - spherical).abs().max() < 1e-12
    # the Cartesian products are normalized positively by construction: only a rescaling here
    native = o3.cartesian_coupling(l1, l2, l3)
    assert torch.allclose(native / native.norm(), cartesian, atol=1e-13)


def test_parity_of_pseudotensors_in_both_bases():
    inversion = -torch.eye(3)
    for basis in (o3.SPHERICAL, o3.CARTESIAN):
        for ir in o3.Irrep.iterator(4):
            assert torch.allclose(basis.irrep_matrix(ir, inversion), ir.p * torch.eye(ir.dim), atol=1e-12)


def test_irreps_representation_is_block_diagonal_and_a_homomorphism():
    irreps = o3.Irreps("2x0e + 1x1o + 1x1e + 2x2e + 3o")
    R1, R2 = rotations_and_reflections(4)[[0, 3]]
    for basis in ("spherical", "cartesian"):
        D1, D2 = irreps.D_from_matrix(R1, basis), irreps.D_from_matrix(R2, basis)
        assert D1.shape == (irreps.dim, irreps.dim)
        assert (irreps.D_from_matrix(R1 @ R2, basis) - D1 @ D2).abs().max() < 1e-12
        assert torch.equal(D1[:2, 2:], torch.zeros(2, irreps.dim - 2))
        assert torch.allclose(D1[2:5, 2:5], R1, atol=1e-13)  # a vector transforms with R itself
        assert torch.allclose(D1[5:8, 5:8], torch.linalg.det(R1) * R1, atol=1e-13)  # pseudovector


def test_change_of_basis_matrix_for_irreps():
    irreps = o3.Irreps("0e + 1o + 2e + 3o")
    M = o3.change_of_basis_matrix(irreps, "cartesian", "spherical")
    x = torch.randn(5, 3)
    cartesian = o3.cartesian_harmonics([0, 1, 2, 3], x, normalization="component")
    assert torch.allclose(cartesian @ M.T, o3.spherical_harmonics([0, 1, 2, 3], x))
    back = o3.change_of_basis_matrix(irreps, "spherical", "cartesian")
    assert torch.allclose(back @ M, torch.eye(irreps.dim), atol=1e-13)


def test_batched_group_elements():
    R = rotations_and_reflections(6)
    for basis in (o3.SPHERICAL, o3.CARTESIAN):
        D = basis.representation("0e+1o+2e+1e", R)
        assert D.shape == (6, 12, 12)
        for i in range(6):
            assert torch.allclose(D[i], basis.representation("0e+1o+2e+1e", R[i]), atol=1e-12)


def test_get_basis_rejects_unknown_names():
    assert o3.get_basis("Cartesian") is o3.CARTESIAN
    with pytest.raises(ValueError, match="'polar'"):
        o3.get_basis("polar")
