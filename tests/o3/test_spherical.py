import pytest
import torch

from tensorfuse import o3
from tensorfuse.o3._polynomials import block_coefficient_matrix
from tensorfuse.o3._spherical import spherical_harmonic_coefficients
from tensorfuse.testing import assert_equivariant, rotations_and_reflections

from ._sphere import gram_on_sphere

LMAX = o3.MAX_L
TRIPLES = [
    (l1, l2, l3)
    for l1 in range(LMAX + 1)
    for l2 in range(LMAX + 1)
    for l3 in range(abs(l1 - l2), min(l1 + l2, LMAX) + 1)
]


def test_supports_every_degree_up_to_eight():
    assert LMAX >= 8


@pytest.mark.parametrize("l1,l2,l3", TRIPLES[::7] + [(8, 8, 8), (8, 8, 0), (1, 1, 1)])
def test_wigner_3j_is_invariant_and_unit_norm(l1, l2, l3):
    C = o3.wigner_3j(l1, l2, l3)
    assert torch.allclose(C.norm(), torch.tensor(1.0), atol=1e-13)
    for R in rotations_and_reflections(2):
        R = R * torch.linalg.det(R)  # CG tensors intertwine proper rotations
        D1, D2, D3 = (o3.wigner_D(l, R) for l in (l1, l2, l3))
        rotated = torch.einsum("ai,bj,ck,ijk->abc", D1, D2, D3, C)
        assert (rotated - C).abs().max() < 1e-12


def test_wigner_3j_odd_path_is_the_cross_product():
    C = o3.wigner_3j(1, 1, 1) * 6**0.5
    a, b = torch.randn(3), torch.randn(3)
    assert torch.allclose(torch.einsum("i,j,ijk->k", a, b, C), torch.linalg.cross(a, b), atol=1e-14)


@pytest.mark.parametrize("args", [(1, 1, 3), (0, 2, 1), (4, 1, 2), (-1, 1, 1), (9, 9, 0), (1.0, 1, 1)])
def test_wigner_3j_rejects_bad_triples_naming_them(args):
    with pytest.raises(ValueError) as info:
        o3.wigner_3j(*args)
    assert any(str(a) in str(info.value) for a in args)


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_harmonics_are_equivariant_under_rotations_and_reflections(l):
    ir = o3.Irrep(l, (-1) ** l)
    assert_equivariant(lambda x: o3.spherical_harmonics(l, x), irreps_in=["1o"], irreps_out=ir)


def test_harmonics_normalizations():
    x = torch.randn(20, 3)
    for l in range(LMAX + 1):
        Y = o3.spherical_harmonics(l, x)
        assert torch.allclose(Y.norm(dim=-1) ** 2, torch.full((20,), 2.0 * l + 1))
        assert torch.allclose(o3.spherical_harmonics(l, x, normalization="norm").norm(dim=-1), torch.ones(20))
    # 'integral': orthonormal over the sphere, computed exactly from monomial moments.
    K = torch.tensor(
        block_coefficient_matrix(tuple(range(LMAX + 1)), spherical_harmonic_coefficients)
    ) / (4 * torch.pi) ** 0.5
    gram = gram_on_sphere(K, LMAX)
    assert (gram - torch.eye(gram.shape[0])).abs().max() < 1e-12


def test_harmonics_are_homogeneous_polynomials_without_normalize():
    x = torch.randn(7, 3)
    for l in range(LMAX + 1):
        scaled = o3.spherical_harmonics(l, 2.5 * x, normalize=False)
        assert torch.allclose(scaled, 2.5**l * o3.spherical_harmonics(l, x, normalize=False))


def test_harmonics_accept_lists_and_irreps():
    x = torch.randn(4, 3)
    full = o3.spherical_harmonics([0, 1, 2], x)
    assert torch.allclose(full, o3.spherical_harmonics("0e+1o+2e", x))
    assert torch.allclose(full[:, 4:], o3.spherical_harmonics(2, x))
    with pytest.raises(ValueError, match="9"):
        o3.spherical_harmonics(9, x)
    with pytest.raises(ValueError, match="normalization"):
        o3.spherical_harmonics(1, x, normalization="bogus")


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_wigner_D_is_an_orthogonal_representation(l):
    R1, R2 = o3.rand_rotation(2)
    D1, D2, D12 = o3.wigner_D(l, R1), o3.wigner_D(l, R2), o3.wigner_D(l, R1 @ R2)
    assert (D12 - D1 @ D2).abs().max() < 1e-12
    assert (D1 @ D1.T - torch.eye(2 * l + 1)).abs().max() < 1e-12
    assert torch.allclose(o3.wigner_D(l, -torch.eye(3)), (-1.0) ** l * torch.eye(2 * l + 1), atol=1e-13)
    assert torch.allclose(o3.wigner_D(1, R1), R1, atol=1e-14)


class TestAgainstE3nn:
    """Same conventions as e3nn, checked wherever e3nn is installed."""

    @pytest.fixture
    def e3nn_o3(self):
        """e3nn's o3, or a skip of just the test that asks for it (not of the whole file)."""
        return pytest.importorskip("e3nn.o3")

    @pytest.mark.parametrize("l1,l2,l3", TRIPLES[::3] + [(8, 8, 8), (7, 8, 3)])
    def test_wigner_3j(self, e3nn_o3, l1, l2, l3):
        expected = e3nn_o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
        assert (o3.wigner_3j(l1, l2, l3) - expected).abs().max() < 1e-12

    @pytest.mark.parametrize("normalization", ["component", "norm", "integral"])
    def test_spherical_harmonics(self, e3nn_o3, normalization):
        x = torch.randn(30, 3)
        for normalize in (True, False):
            ours = o3.spherical_harmonics(list(range(LMAX + 1)), x, normalize, normalization)
            theirs = e3nn_o3.spherical_harmonics(list(range(LMAX + 1)), x, normalize, normalization)
            assert (ours - theirs).abs().max() < 1e-11 * theirs.abs().max()

    def test_wigner_D(self, e3nn_o3):
        R = o3.rand_rotation(3)
        for l in range(LMAX + 1):
            theirs = e3nn_o3.Irrep(l, 1).D_from_matrix(R)
            assert (o3.wigner_D(l, R) - theirs).abs().max() < 1e-11
