r"""The irreducible Cartesian basis: symmetric traceless (STF) tensors of any rank.

Mathematics (Zaverkin et al., NeurIPS 2024, and Coope–Snider/Applequist for the harmonics):

* The **Cartesian harmonic** of a unit vector is ``T_l(n) = C_l * STF(n ⊗ ... ⊗ n)`` with
  ``C_l = (2l-1)!!/l!``. It is the Coope–Snider expansion of ``ictp.md`` 1.1: contracting
  ``T_l(n)`` with ``l`` copies of ``n`` gives 1, and ``T_l : T_l = (2l-1)!!/l!``.
* The **product** ``l1 ⊗ l2 -> l3`` of STF tensors contracts ``k`` index pairs with ``δ`` and, when
  ``l1 + l2 - l3`` is odd, one index of each factor with the Levi-Civita symbol (whose third index
  is free), then takes the STF part of the remaining ``l3`` indices::

      even:  (x ⊗ y)_{l3} = N · STF[ x_{A c} y_{c B} ]                   k = (l1 + l2 - l3) / 2
      odd:   (x ⊗ y)_{l3} = N · STF[ ε_{r p q} x_{p c A} y_{q c B} ]      k = (l1 + l2 - l3 - 1) / 2

  ``STF`` is the orthogonal projector (average over index permutations, then remove traces).
  An odd product of true tensors is a pseudotensor: the parity of the output irrep is always
  ``p1 * p2``, so O(3), reflections included, is respected.
* **Normalization.** Even products use ICTP's ``N`` (``ictp.md`` 1.2), so that products of the
  harmonics of one direction reproduce the harmonic: ``N (T_l1(n) ⊗ T_l2(n))_{l3} = T_l3(n)``.
  ICTP states ``N`` for a symmetrization that *sums* the ``l3!/(a! b!)`` distinct placements of the
  ``a = l1-k`` and ``b = l2-k`` free indices; with the projector used here the factor is
  ``N · l3!/(a! b!)`` (:func:`product_normalization` returns both). Odd products vanish for one
  direction, so they are normalized at first order instead: for a unit ``n`` and ``v ⟂ n``,

      ``N_odd · d/dt (T_l1(n) ⊗ T_l2(n + t v))_{l3} = d/dt T_l3(n + t n × v)``   at ``t = 0``,

  which makes ``1 ⊗ 1 -> 1`` the cross product and ``1 ⊗ l -> l`` the infinitesimal rotation
  (``N_odd = 1`` in the summing convention). The left side is the only pseudotensor-valued
  equivariant linear function of ``v`` at ``n`` (up to scale), so ``N_odd`` is well defined; it is
  computed once per triple and the identity is checked to machine precision.

Storage (the decision, measured by ``benchmarks/tensor_products.py``)
---------------------------------------------------------------------
A rank-``l`` STF tensor has ``2l+1`` degrees of freedom but ``3**l`` entries: 27 against 7 at
``l = 3``, 81 against 9 at ``l = 4`` (ICTP stores all of them). Features are therefore stored as
their ``2l+1`` coordinates in a fixed orthonormal basis ``B_l`` of the STF space (orthonormal for
the Frobenius product ``T : T``), built here from Cartesian data alone: the STF parts of the
entries with at most one ``z`` index (which determine an STF tensor through the trace condition),
Löwdin-orthonormalized. Every Cartesian operation is linear in each factor, so each product is
evaluated exactly as a precomputed ``(2l1+1) x (2l2+1) x (2l3+1)`` coupling tensor
``C[i, j, m] = <B_m, (B_i ⊗ B_j)_{l3}>``, derived once from the dense contractions above. Compared
with dense storage this uses ``(2l+1)/3**l`` of the memory for activations (the dominant cost of
force training, which keeps them for the double backward), replaces the per-path contraction +
projection by one batched contraction for all paths, and makes both bases run the same
execution engine: only the coupling tensors and harmonics differ. :func:`to_dense` and
:func:`from_dense` convert to and from the ``3**l`` entries whenever a full tensor is wanted.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from tensorfuse.o3._constants import cached_tensor
from tensorfuse.o3._identities import harmonic_identity_constant
from tensorfuse.o3._irreps import check_l, parse_ls
from tensorfuse.o3._polynomials import (
    block_coefficient_matrix,
    dense_to_monomial,
    evaluate_harmonic_polynomials,
    monomial_exponents,
    monomial_weights,
    trace_matrix,
)
from tensorfuse.o3._spherical import check_triple

_LEVI_CIVITA = np.zeros((3, 3, 3))
for _i, _j, _k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
    _LEVI_CIVITA[_i, _j, _k], _LEVI_CIVITA[_i, _k, _j] = 1.0, -1.0


def double_factorial(n: int) -> int:
    """``n!!`` with ``(-1)!! = 0!! = 1``."""
    return math.prod(range(n, 0, -2)) if n > 0 else 1


def harmonic_prefactor(l: int) -> float:
    """``C_l = (2l-1)!!/l!``, also the squared Frobenius norm of ``T_l(n)``."""
    return double_factorial(2 * l - 1) / math.factorial(l)


# ---------------------------------------------------------------------------------------------
# The orthonormal STF basis
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def stf_monomial_basis(l: int) -> np.ndarray:
    """Entry values ``t[monomial, m]`` of the orthonormal STF basis tensors ``B_l[:, m]``."""
    check_l(l)
    sqrt_w = np.sqrt(monomial_weights(l))
    n = len(sqrt_w)
    if l >= 2:
        # Work in coordinates u = sqrt(w) t, where the Frobenius product is the Euclidean one.
        trace = trace_matrix(l) / sqrt_w[None, :]
        projector = np.eye(n) - np.linalg.pinv(trace) @ trace
    else:
        projector = np.eye(n)
    keep = [i for i, (_, _, az) in enumerate(monomial_exponents(l)) if az <= 1]
    V = projector[:, keep]
    eigenvalues, eigenvectors = np.linalg.eigh(V.T @ V)
    U = V @ (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T  # Löwdin: V (V^T V)^(-1/2)
    U[np.abs(U) < 1e-15] = 0.0
    return U / sqrt_w[:, None]


@functools.lru_cache(maxsize=None)
def _stf_basis_numpy(l: int) -> np.ndarray:
    return stf_monomial_basis(l)[dense_to_monomial(l)]


def stf_basis(l: int, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """Orthonormal basis of rank-``l`` STF tensors, ``[3**l, 2l+1]`` (entries in row-major order)."""
    check_l(l)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return cached_tensor(("stf_basis", l), lambda: _stf_basis_numpy(l), dtype, device)


def to_dense(x: torch.Tensor, l: int) -> torch.Tensor:
    """Coordinates ``[..., 2l+1]`` -> the STF tensor ``[..., 3, ..., 3]`` (``l`` axes of size 3)."""
    B = stf_basis(l, x.dtype, x.device)
    if x.shape[-1] != 2 * l + 1:
        raise ValueError(f"expected {2 * l + 1} coordinates for rank {l}, got shape {tuple(x.shape)}")
    return (x @ B.T).reshape(x.shape[:-1] + (3,) * l)


def from_dense(T: torch.Tensor, l: int) -> torch.Tensor:
    """Rank-``l`` tensor ``[..., 3, ..., 3]`` -> coordinates ``[..., 2l+1]`` of its STF part.

    For an STF tensor this inverts :func:`to_dense`; for any other tensor it gives the
    orthogonal projection onto the STF space (symmetrize and remove traces).
    """
    B = stf_basis(l, T.dtype, T.device)
    if T.shape[T.dim() - l :] != (3,) * l:
        raise ValueError(f"expected a tensor with {l} trailing axes of size 3, got shape {tuple(T.shape)}")
    return T.reshape(T.shape[: T.dim() - l] + (3**l,)) @ B


def stf_part(T: torch.Tensor, l: int) -> torch.Tensor:
    """The symmetric traceless part of a rank-``l`` tensor, as a dense tensor of the same shape."""
    return to_dense(from_dense(T, l), l)


# ---------------------------------------------------------------------------------------------
# Cartesian harmonics
# ---------------------------------------------------------------------------------------------
NORMALIZATIONS = ("ictp", "component", "norm", "integral")


def _cartesian_scale(l: int, normalization: str) -> float:
    norm = math.sqrt(harmonic_prefactor(l))  # |T_l(n)| with ICTP's normalization
    if normalization == "ictp":
        return 1.0
    if normalization == "norm":
        return 1.0 / norm
    if normalization == "component":
        return math.sqrt(2 * l + 1) / norm
    if normalization == "integral":
        return math.sqrt(2 * l + 1) / norm / math.sqrt(4 * math.pi)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


@functools.lru_cache(maxsize=None)
def cartesian_harmonic_coefficients(l: int, normalization: str = "ictp") -> np.ndarray:
    """``K[m, monomial]`` with coordinates of ``T_l(x)`` = ``K @ monomials_l(x)``.

    ``<B_m, T_l(x)> = C_l <B_m, x^{⊗l}> = C_l sum_a w_a t_a^{(m)} x^a`` because ``B_m`` is STF.
    """
    t = stf_monomial_basis(l)
    return (harmonic_prefactor(l) * _cartesian_scale(l, normalization)) * (monomial_weights(l)[:, None] * t).T


def cartesian_harmonics(
    ls, x: torch.Tensor, normalize: bool = True, normalization: str = "ictp"
) -> torch.Tensor:
    """Coordinates of the Cartesian harmonics ``T_l(x)`` of vectors ``x`` (``[..., 3]``).

    ``ls`` is an int, a list of ints or an Irreps string (degrees concatenated in order).
    ``normalization="ictp"`` gives ICTP's ``T_l`` (``T_l(n)`` contracted with ``n`` l times is 1);
    ``"component"``, ``"norm"`` and ``"integral"`` rescale as for the spherical harmonics, so that
    the component-normalized Cartesian and spherical harmonics differ by an orthogonal matrix.
    Use :func:`to_dense` to get the ``3**l`` tensor entries.
    """
    ls = parse_ls(ls)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")

    def build():
        return block_coefficient_matrix(ls, lambda l: cartesian_harmonic_coefficients(l, normalization))

    matrix = cached_tensor(("cartesian_harmonics", ls, normalization), build, x.dtype, x.device)
    return evaluate_harmonic_polynomials(x, ls, matrix, normalize)


def cartesian_representation(l: int, R: torch.Tensor) -> torch.Tensor:
    """``B_l^T R^{⊗l} B_l``: how the coordinates of a rank-``l`` true tensor transform under ``R``."""
    check_l(l)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"expected matrices of shape [..., 3, 3], got shape {tuple(R.shape)}")
    B = stf_basis(l, R.dtype, R.device)
    batch = R.shape[:-2]
    X = B.expand(batch + B.shape)
    for _ in range(l):  # rotate the leading index, then cycle it to the back
        X = X.reshape(batch + (3, 3 ** (l - 1), 2 * l + 1))
        X = torch.einsum("...ij,...jkm->...kim", R, X)
    X = X.reshape(batch + (3**l, 2 * l + 1))
    return B.T @ X


# ---------------------------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------------------------
def product_kind(l1: int, l2: int, l3: int) -> tuple[int, bool]:
    """``(k, odd)``: number of ``δ`` contractions and whether a Levi-Civita contraction is used."""
    check_triple(l1, l2, l3)
    odd = (l1 + l2 - l3) % 2 == 1
    return (l1 + l2 - l3 - int(odd)) // 2, odd


def _contract(x1: torch.Tensor, x2: torch.Tensor, l1: int, l2: int, l3: int) -> torch.Tensor:
    """The raw contraction (before symmetrization) of flattened rank-l1 and rank-l2 tensors.

    ``x1``: ``[..., 3**l1]``, ``x2``: ``[..., 3**l2]`` (broadcast) -> ``[..., 3**l3]``.
    """
    k, odd = product_kind(l1, l2, l3)
    a, b = l1 - k - int(odd), l2 - k - int(odd)
    lead1, lead2 = x1.shape[:-1], x2.shape[:-1]
    if not odd:
        y = torch.einsum(
            "...ac,...cb->...ab", x1.reshape(lead1 + (3**a, 3**k)), x2.reshape(lead2 + (3**k, 3**b))
        )
    else:
        eps = torch.tensor(_LEVI_CIVITA, dtype=x1.dtype, device=x1.device)
        pair = torch.einsum(
            "...pca,...qcb->...pqab",
            x1.reshape(lead1 + (3, 3**k, 3**a)),
            x2.reshape(lead2 + (3, 3**k, 3**b)),
        )
        y = torch.einsum("rpq,...pqab->...rab", eps, pair)
    return y.reshape(y.shape[: y.dim() - (2 if not odd else 3)] + (3**l3,))


@functools.lru_cache(maxsize=None)
def _raw_coupling(l1: int, l2: int, l3: int) -> np.ndarray:
    B1 = torch.tensor(_stf_basis_numpy(l1)).T  # [2l1+1, 3^l1]
    B2 = torch.tensor(_stf_basis_numpy(l2)).T
    B3 = torch.tensor(_stf_basis_numpy(l3))
    raw = _contract(B1[:, None, :], B2[None, :, :], l1, l2, l3) @ B3  # STF projection + coordinates
    return raw.numpy()


def ictp_even_normalization(l1: int, l2: int, l3: int) -> float:
    """ICTP's ``N(l1, l2, l3)`` for even products, summing convention (``ictp.md`` 1.2)."""
    k, odd = product_kind(l1, l2, l3)
    if odd:
        raise ValueError(f"({l1}, {l2}, {l3}) is an odd product; ICTP's formula covers even ones")
    f, df = math.factorial, double_factorial
    J = l1 + l2 + l3
    numerator = f(l1) * f(l2) * df(2 * l3 - 1) * f((l2 + l3 - l1) // 2) * f((l1 + l3 - l2) // 2)
    denominator = (
        f(l3) * df(l2 + l3 - l1 - 1) * df(l1 + l3 - l2 - 1) * df(l1 + l2 - l3 - 1) * f(J // 2)
    )
    return numerator / denominator


def _placements(l1: int, l2: int, l3: int) -> int:
    """Distinct placements of the free indices: ``l3!/(a! b!)`` (the Levi-Civita index counts 1!)."""
    k, odd = product_kind(l1, l2, l3)
    a, b = l1 - k - int(odd), l2 - k - int(odd)
    return math.factorial(l3) // (math.factorial(a) * math.factorial(b))


@functools.lru_cache(maxsize=None)
def _odd_normalization(l1: int, l2: int, l3: int) -> float:
    def harmonic(l, x):
        return cartesian_harmonics(l, x, normalize=False, normalization="ictp")

    raw = torch.tensor(_raw_coupling(l1, l2, l3))
    return 1.0 / harmonic_identity_constant(raw, harmonic, l1, l2, l3)


def product_normalization(l1: int, l2: int, l3: int, convention: str = "projector") -> float:
    """The factor ``N`` of the product ``l1 ⊗ l2 -> l3``.

    ``convention="projector"`` multiplies ``STF[...]`` (the orthogonal projector, as used here);
    ``"summing"`` multiplies ICTP's sum over distinct index placements, so for even products it
    is exactly the table of ``ictp.md`` 1.2 (e.g. ``N(1, 1, 2) = 3/4``).
    """
    k, odd = product_kind(l1, l2, l3)
    if convention not in ("projector", "summing"):
        raise ValueError(f"convention must be 'projector' or 'summing', got {convention!r}")
    if odd:
        projector = _odd_normalization(l1, l2, l3)
        return projector if convention == "projector" else projector / _placements(l1, l2, l3)
    summing = ictp_even_normalization(l1, l2, l3)
    return summing * _placements(l1, l2, l3) if convention == "projector" else summing


@functools.lru_cache(maxsize=None)
def _cartesian_coupling_numpy(l1: int, l2: int, l3: int) -> np.ndarray:
    return product_normalization(l1, l2, l3) * _raw_coupling(l1, l2, l3)


def cartesian_coupling(
    l1: int, l2: int, l3: int, dtype: torch.dtype | None = None, device=None
) -> torch.Tensor:
    """The normalized product ``l1 ⊗ l2 -> l3`` in STF coordinates: ``C[i, j, m]``.

    ``(x ⊗ y)_{l3} = einsum("i,j,ijm->m", x, y, C)`` for coordinates ``x``, ``y`` (see
    :func:`to_dense`). Raises ``ValueError`` for an inadmissible triple or degree.
    """
    check_triple(l1, l2, l3)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return cached_tensor(
        ("cartesian_coupling", l1, l2, l3), lambda: _cartesian_coupling_numpy(l1, l2, l3), dtype, device
    )


def dense_product(x1: torch.Tensor, l1: int, x2: torch.Tensor, l2: int, l3: int) -> torch.Tensor:
    """Product of dense STF tensors ``x1`` (rank ``l1``) and ``x2`` (rank ``l2``) -> rank ``l3``.

    ``x1``: ``[..., 3 x l1]``, ``x2``: ``[..., 3 x l2]`` with broadcastable leading axes.
    """
    check_triple(l1, l2, l3)
    lead1, lead2 = x1.shape[: x1.dim() - l1], x2.shape[: x2.dim() - l2]
    if x1.shape[x1.dim() - l1 :] != (3,) * l1 or x2.shape[x2.dim() - l2 :] != (3,) * l2:
        raise ValueError(
            f"shapes {tuple(x1.shape)} and {tuple(x2.shape)} do not end in {l1} and {l2} axes of size 3"
        )
    raw = _contract(x1.reshape(lead1 + (3**l1,)), x2.reshape(lead2 + (3**l2,)), l1, l2, l3)
    coords = raw @ stf_basis(l3, raw.dtype, raw.device)
    return to_dense(product_normalization(l1, l2, l3) * coords, l3)
