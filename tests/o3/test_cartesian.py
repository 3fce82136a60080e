"""The irreducible Cartesian basis, checked against brute-force dense constructions."""

import itertools
import math
from fractions import Fraction

import pytest
import torch

from tensorfuse import o3
from tensorfuse.o3._cartesian import harmonic_prefactor
from tensorfuse.testing import rotations_and_reflections

DENSE_LMAX = 6  # brute-force dense references are 3**l entries per tensor
LMAX = o3.MAX_L
ALL_TRIPLES = [
    (l1, l2, l3)
    for l1 in range(LMAX + 1)
    for l2 in range(LMAX + 1)
    for l3 in range(abs(l1 - l2), min(l1 + l2, LMAX) + 1)
]
DENSE_TRIPLES = [t for t in ALL_TRIPLES if max(t) <= DENSE_LMAX and t[0] + t[1] <= 8]


# --- brute-force references --------------------------------------------------------------------
def _double_factorial(n):
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def _pairings(indices):
    """All perfect matchings of a list of positions."""
    if not indices:
        yield []
        return
    first, rest = indices[0], indices[1:]
    for i, partner in enumerate(rest):
        for matching in _pairings(rest[:i] + rest[i + 1 :]):
            yield [(first, partner)] + matching


def placements_sum(n, l, m):
    """{n^(l-2m) δ^m}: the sum over the distinct placements of the indices (ictp.md 1.1)."""
    out = torch.zeros((3,) * l)
    eye = torch.eye(3)
    for delta_positions in itertools.combinations(range(l), 2 * m):
        vector_positions = [i for i in range(l) if i not in delta_positions]
        for matching in _pairings(list(delta_positions)):
            factors, subscripts = [], []
            letters = "abcdefghijkl"
            for i, j in matching:
                factors.append(eye)
                subscripts.append(letters[i] + letters[j])
            for i in vector_positions:
                factors.append(n)
                subscripts.append(letters[i])
            if not factors:
                return torch.ones(())
            out = out + torch.einsum(",".join(subscripts) + "->" + letters[:l], *factors)
    return out


def coope_snider_harmonic(n, l):
    """T_l(n) from the explicit expansion of ictp.md 1.1, written out index by index."""
    total = torch.zeros((3,) * l) if l else torch.zeros(())
    for m in range(l // 2 + 1):
        coeff = (-1) ** m * _double_factorial(2 * l - 2 * m - 1) / _double_factorial(2 * l - 1)
        total = total + coeff * placements_sum(n, l, m)
    return _double_factorial(2 * l - 1) / math.factorial(l) * total


def random_stf(l, batch=()):
    return o3.to_dense(torch.randn(*batch, 2 * l + 1), l)


def rotate_dense(T, R, l):
    """R^{⊗l} T by explicit einsum on every index."""
    for axis in range(l):
        T = torch.movedim(torch.tensordot(T, R, dims=([axis], [1])), -1, axis)
    return T


def assert_symmetric_traceless(T, l, tol=1e-12):
    lead = T.dim() - l
    for i in range(l - 1):  # adjacent transpositions generate all permutations
        assert (T - T.transpose(lead + i, lead + i + 1)).abs().max() < tol
    if l >= 2:
        assert torch.diagonal(T, dim1=lead, dim2=lead + 1).sum(-1).abs().max() < tol


# --- the basis ---------------------------------------------------------------------------------
@pytest.mark.parametrize("l", range(LMAX + 1))
def test_stf_basis_is_orthonormal_symmetric_and_traceless(l):
    B = o3.stf_basis(l)
    assert B.shape == (3**l, 2 * l + 1)
    assert (B.T @ B - torch.eye(2 * l + 1)).abs().max() < 1e-12
    assert_symmetric_traceless(B.T.reshape((2 * l + 1,) + (3,) * l), l)


def test_stf_basis_of_rank_one_is_xyz():
    assert torch.equal(o3.stf_basis(1), torch.eye(3))


@pytest.mark.parametrize("l", range(DENSE_LMAX + 1))
def test_from_dense_projects_onto_stf(l):
    T = torch.randn((4,) + (3,) * l)
    P = o3.stf_part(T, l)
    assert_symmetric_traceless(P, l)
    assert torch.allclose(o3.stf_part(P, l), P)  # idempotent
    assert torch.allclose(((T - P) * P).reshape(4, -1).sum(1), torch.zeros(4), atol=1e-12)  # orthogonal
    S = random_stf(l, (4,))
    assert torch.allclose(o3.to_dense(o3.from_dense(S, l), l), S)


# --- harmonics ---------------------------------------------------------------------------------
@pytest.mark.parametrize("l", range(DENSE_LMAX + 1))
def test_harmonics_match_the_coope_snider_expansion(l):
    n = torch.nn.functional.normalize(torch.randn(3, 3), dim=-1)
    ours = o3.to_dense(o3.cartesian_harmonics(l, n), l)
    for i in range(3):
        assert (ours[i] - coope_snider_harmonic(n[i], l)).abs().max() < 1e-12


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_harmonic_normalization_identities(l):
    n = torch.nn.functional.normalize(torch.randn(5, 3), dim=-1)
    T = o3.to_dense(o3.cartesian_harmonics(l, n), l)
    assert_symmetric_traceless(T, l)
    contracted = T
    for _ in range(l):  # contract with n, l times
        contracted = torch.einsum("b...i,bi->b...", contracted, n)
    assert torch.allclose(contracted, torch.ones(5), atol=1e-12)
    self_contraction = (T * T).reshape(5, -1).sum(1)
    assert torch.allclose(self_contraction, torch.full((5,), _double_factorial(2 * l - 1) / math.factorial(l)))
    assert math.isclose(harmonic_prefactor(l), _double_factorial(2 * l - 1) / math.factorial(l))


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_harmonics_are_equivariant_under_rotations_and_reflections(l):
    x = torch.randn(4, 3)
    T = o3.to_dense(o3.cartesian_harmonics(l, x), l)
    for R in rotations_and_reflections(4):
        rotated = o3.to_dense(o3.cartesian_harmonics(l, x @ R.T), l)
        expected = torch.stack([rotate_dense(t, R, l) for t in T])
        assert (rotated - expected).abs().max() < 1e-12


@pytest.mark.parametrize("l", range(LMAX + 1))
def test_representation_matrix_is_the_tensor_power(l):
    x = torch.randn(2 * l + 1)
    for R in rotations_and_reflections(2):
        D = o3.cartesian_representation(l, R)
        assert torch.allclose(o3.to_dense(D @ x, l), rotate_dense(o3.to_dense(x, l), R, l), atol=1e-12)
        assert (D @ D.T - torch.eye(2 * l + 1)).abs().max() < 1e-12


def test_harmonic_normalization_options():
    x = torch.randn(6, 3)
    for l in range(LMAX + 1):
        assert torch.allclose(o3.cartesian_harmonics(l, x, normalization="component").norm(dim=-1) ** 2,
                              torch.full((6,), 2.0 * l + 1))
        assert torch.allclose(o3.cartesian_harmonics(l, x, normalization="norm").norm(dim=-1), torch.ones(6))
    with pytest.raises(ValueError, match="normalization"):
        o3.cartesian_harmonics(1, x, normalization="bogus")
    with pytest.raises(ValueError, match="-1"):
        o3.cartesian_harmonics(-1, x)


# --- products ----------------------------------------------------------------------------------
def test_every_admissible_triple_has_a_product_of_the_right_kind():
    for l1, l2, l3 in ALL_TRIPLES:
        k, odd = o3.product_kind(l1, l2, l3)
        assert l1 + l2 - 2 * k - int(odd) == l3 and odd == ((l1 + l2 - l3) % 2 == 1)
        C = o3.cartesian_coupling(l1, l2, l3)
        assert C.shape == (2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1) and C.abs().max() > 1e-6


@pytest.mark.parametrize("l1,l2,l3", DENSE_TRIPLES)
def test_dense_product_is_symmetric_traceless_and_equals_the_compact_coupling(l1, l2, l3):
    x1, x2 = torch.randn(3, 2 * l1 + 1), torch.randn(3, 2 * l2 + 1)
    dense = o3.dense_product(o3.to_dense(x1, l1), l1, o3.to_dense(x2, l2), l2, l3)
    assert_symmetric_traceless(dense, l3)
    compact = torch.einsum("bi,bj,ijm->bm", x1, x2, o3.cartesian_coupling(l1, l2, l3))
    assert (o3.to_dense(compact, l3) - dense).abs().max() < 1e-12 * max(1.0, dense.abs().max().item())


@pytest.mark.parametrize("l1,l2,l3", DENSE_TRIPLES)
def test_dense_product_is_equivariant_under_rotations_and_reflections(l1, l2, l3):
    x1, x2 = random_stf(l1), random_stf(l2)
    out = o3.dense_product(x1, l1, x2, l2, l3)
    odd = (l1 + l2 - l3) % 2
    for R in rotations_and_reflections(2):
        rotated = o3.dense_product(rotate_dense(x1, R, l1), l1, rotate_dense(x2, R, l2), l2, l3)
        expected = torch.linalg.det(R) ** odd * rotate_dense(out, R, l3)  # odd: a pseudotensor
        assert (rotated - expected).abs().max() < 1e-12 * max(1.0, out.abs().max().item())


@pytest.mark.parametrize("l1,l2,l3", ALL_TRIPLES[::3] + [(8, 8, 8), (8, 7, 8), (5, 8, 4)])
def test_compact_coupling_is_equivariant_for_every_triple(l1, l2, l3):
    C = o3.cartesian_coupling(l1, l2, l3)
    odd = (l1 + l2 - l3) % 2
    for R in rotations_and_reflections(2):
        D1, D2, D3 = (o3.cartesian_representation(l, R) for l in (l1, l2, l3))
        rotated = torch.einsum("ai,bj,ck,ijk->abc", D1, D2, D3, C)
        assert (rotated - torch.linalg.det(R) ** odd * C).abs().max() < 1e-11 * C.abs().max()


ICTP_TABLE = {  # ictp.md 1.2, summing convention
    (1, 1, 0): Fraction(1), (1, 1, 2): Fraction(3, 4), (2, 2, 0): Fraction(2, 3),
    (1, 2, 1): Fraction(1), (2, 1, 1): Fraction(1), (2, 2, 2): Fraction(1),
    (1, 2, 3): Fraction(5, 9), (2, 1, 3): Fraction(5, 9), (3, 3, 0): Fraction(2, 5),
    (1, 3, 2): Fraction(1), (3, 1, 2): Fraction(1), (2, 3, 1): Fraction(2, 3),
    (3, 2, 1): Fraction(2, 3), (2, 3, 3): Fraction(5, 6), (3, 2, 3): Fraction(5, 6),
    (3, 3, 2): Fraction(3, 4),
}


def test_even_normalization_reproduces_the_ictp_table():
    for triple, value in ICTP_TABLE.items():
        assert math.isclose(o3.product_normalization(*triple, convention="summing"), value, rel_tol=1e-14)
    for l in range(4):
        assert o3.product_normalization(l, 0, l, convention="summing") == 1.0
        assert o3.product_normalization(0, l, l, convention="summing") == 1.0


@pytest.mark.parametrize("l1,l2,l3", [t for t in ALL_TRIPLES if (t[0] + t[1] - t[2]) % 2 == 0])
def test_even_products_of_one_direction_reproduce_the_harmonic(l1, l2, l3):
    n = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    T1, T2, T3 = (o3.cartesian_harmonics(l, n) for l in (l1, l2, l3))
    product = torch.einsum("bi,bj,ijm->bm", T1, T2, o3.cartesian_coupling(l1, l2, l3))
    assert (product - T3).abs().max() < 1e-11


@pytest.mark.parametrize("l1,l2,l3", [t for t in ALL_TRIPLES if (t[0] + t[1] - t[2]) % 2 == 1])
def test_odd_products_satisfy_their_first_order_identity(l1, l2, l3):
    n = torch.nn.functional.normalize(torch.randn(3), dim=0)
    v = torch.linalg.cross(n, torch.randn(3))
    C = o3.cartesian_coupling(l1, l2, l3)

    def derivative(l, direction):
        harmonic = lambda x: o3.cartesian_harmonics(l, x, normalize=False)  # noqa: E731
        return torch.autograd.functional.jacobian(harmonic, n) @ direction

    d2 = derivative(l2, v)
    expected = derivative(l3, torch.linalg.cross(n, v))
    got = torch.einsum("i,j,ijm->m", o3.cartesian_harmonics(l1, n), d2, C)
    assert (got - expected).abs().max() < 1e-11 * max(1.0, expected.abs().max().item())
    # ... and the zeroth order vanishes: the odd product of one direction with itself is zero
    same = torch.einsum("i,j,ijm->m", o3.cartesian_harmonics(l1, n), o3.cartesian_harmonics(l2, n), C)
    assert same.abs().max() < 1e-11


def test_odd_product_of_vectors_is_the_cross_product():
    a, b = torch.randn(3), torch.randn(3)
    assert torch.allclose(o3.dense_product(a, 1, b, 1, 1), torch.linalg.cross(a, b), atol=1e-14)
    assert o3.product_normalization(1, 1, 1, convention="summing") == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("l", range(1, LMAX + 1))
def test_odd_product_with_a_vector_is_the_infinitesimal_rotation(l):
    x, omega = torch.randn(2 * l + 1), torch.randn(3)
    product = torch.einsum("i,j,ijm->m", omega, x, o3.cartesian_coupling(1, l, l))
    generator = torch.autograd.functional.jacobian(
        lambda t: o3.cartesian_representation(l, o3.axis_angle_to_matrix(omega, t)) @ x, torch.tensor(0.0)
    )
    assert torch.allclose(product, generator * omega.norm(), atol=1e-11)
    assert o3.product_normalization(1, l, l, convention="summing") == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("args", [(1, 1, 3), (2, 0, 1), (0, 0, 1), (-1, 1, 0), (9, 1, 8)])
def test_inadmissible_or_unsupported_triples_raise_naming_them(args):
    with pytest.raises(ValueError) as info:
        o3.cartesian_coupling(*args)
    assert str(args[0]) in str(info.value)
