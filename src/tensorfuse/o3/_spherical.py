"""The spherical basis: real spherical harmonics, Clebsch–Gordan (Wigner 3j) coefficients, Wigner D.

Conventions are e3nn's, so that results can be compared one to one:

* the degree-1 harmonics are ``sqrt(3) * (x, y, z)`` and the degree-1 Wigner matrix is ``R`` itself;
* ``wigner_3j(l1, l2, l3)`` is the real Clebsch–Gordan tensor, obtained from the complex (Condon–
  Shortley) coefficients by the standard real/complex change of basis with a phase ``(-i)**l``
  that makes it real, normalized to unit Frobenius norm;
* ``Y_{l+1} = c_l * wigner_3j(l+1, l, 1)(Y_l, x)`` with ``c_l > 0``.

Everything is computed here from these definitions (exact rational arithmetic for the complex
coefficients) and cached; nothing is tabulated by hand.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from tensorfuse.o3._constants import cached_tensor
from tensorfuse.o3._irreps import check_l, parse_ls
from tensorfuse.o3._polynomials import (
    block_coefficient_matrix,
    evaluate_harmonic_polynomials,
    evaluate_monomials,
    monomial_offset,
    multiply_by_coordinate,
    num_monomials,
)


def check_triple(l1: int, l2: int, l3: int) -> None:
    """Raise a ``ValueError`` unless ``l3`` is in ``|l1 - l2| .. l1 + l2`` (all supported degrees)."""
    for name, value in (("l1", l1), ("l2", l2), ("l3", l3)):
        check_l(value, name)
    if not abs(l1 - l2) <= l3 <= l1 + l2:
        raise ValueError(
            f"inadmissible triple (l1, l2, l3) = ({l1}, {l2}, {l3}): l3 must lie in "
            f"|l1 - l2| .. l1 + l2 = {abs(l1 - l2)} .. {l1 + l2}"
        )


def _complex_clebsch_gordan(j1: int, m1: int, j2: int, m2: int, j: int, m: int) -> float:
    """<j1 m1 j2 m2 | j m> in the Condon–Shortley convention (Racah's closed formula).

    Evaluated in exact integer arithmetic and rounded once at the end.
    """
    if m != m1 + m2 or abs(m1) > j1 or abs(m2) > j2 or abs(m) > j:
        return 0.0
    f = math.factorial
    terms = []
    for k in range(0, j1 + j2 - j + 1):
        args = (k, j1 + j2 - j - k, j1 - m1 - k, j2 + m2 - k, j - j2 + m1 + k, j - j1 - m2 + k)
        if min(args) >= 0:
            terms.append(((-1) ** k, args))
    if not terms:
        return 0.0
    # sum_k (-1)^k / prod_i d_i(k)!  =  (sum_k (-1)^k D / prod_i d_i(k)!) / D,  D = prod_i max_k d_i(k)!
    D = math.prod(f(max(args[i] for _, args in terms)) for i in range(6))
    S = sum(sign * (D // math.prod(f(d) for d in args)) for sign, args in terms)
    num = (2 * j + 1) * f(j + j1 - j2) * f(j - j1 + j2) * f(j1 + j2 - j)
    num *= f(j + m) * f(j - m) * f(j1 - m1) * f(j1 + m1) * f(j2 - m2) * f(j2 + m2)
    den = f(j1 + j2 + j + 1)
    magnitude = math.sqrt((num * S * S) / (den * D * D))  # int / int is correctly rounded
    return math.copysign(magnitude, S)


@functools.lru_cache(maxsize=None)
def _real_to_complex(l: int) -> np.ndarray:
    """``U[m_complex, m_real]`` with ``Y^complex = U Y^real`` (Wikipedia's real form, times ``(-i)**l``)."""
    U = np.zeros((2 * l + 1, 2 * l + 1), dtype=np.complex128)
    s = 1 / math.sqrt(2)
    U[l, l] = 1.0
    for m in range(1, l + 1):
        # complex m < 0 from real (+m, -m);  complex m > 0 likewise with the Condon–Shortley sign
        U[l - m, l + m] = s
        U[l - m, l - m] = -1j * s
        U[l + m, l + m] = (-1) ** m * s
        U[l + m, l - m] = 1j * (-1) ** m * s
    return (-1j) ** l * U


@functools.lru_cache(maxsize=None)
def _wigner_3j_numpy(l1: int, l2: int, l3: int) -> np.ndarray:
    complex_cg = np.zeros((2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1))
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            if abs(m1 + m2) <= l3:
                complex_cg[l1 + m1, l2 + m2, l3 + m1 + m2] = _complex_clebsch_gordan(
                    l1, m1, l2, m2, l3, m1 + m2
                )
    U1, U2, U3 = _real_to_complex(l1), _real_to_complex(l2), _real_to_complex(l3)
    real = np.einsum("ai,bj,ck,abc->ijk", U1, U2, U3.conj(), complex_cg, optimize=True)
    assert np.abs(real.imag).max() < 1e-12, "real Clebsch-Gordan coefficients must be real"
    real = real.real
    real[np.abs(real) < 1e-15] = 0.0
    return real / np.linalg.norm(real)


def wigner_3j(
    l1: int, l2: int, l3: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Real Clebsch–Gordan tensor ``C[m1, m2, m3]`` (e3nn's ``wigner_3j``), unit Frobenius norm.

    ``C`` is invariant: ``C = D1(R) ⊗ D2(R) ⊗ D3(R) · C`` for every rotation. Raises ``ValueError``
    for an inadmissible triple or a degree outside ``0..MAX_L``.
    """
    check_triple(l1, l2, l3)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return torch.tensor(_wigner_3j_numpy(l1, l2, l3), dtype=dtype, device=device)


@functools.lru_cache(maxsize=None)
def spherical_harmonic_coefficients(l: int) -> np.ndarray:
    """Coefficients ``K[m, monomial]`` of the component-normalized real harmonics ``Y_l`` of degree ``l``.

    ``Y_l(x) = K @ monomials_l(x)`` is a harmonic homogeneous polynomial; on the unit sphere
    ``|Y_l|^2 = 2l+1``.
    """
    check_l(l)
    if l == 0:
        return np.ones((1, 1))
    previous = spherical_harmonic_coefficients(l - 1)
    C = _wigner_3j_numpy(l, l - 1, 1)  # [2l+1, 2l-1, 3]
    raw = np.zeros((2 * l + 1, num_monomials(l)))
    for k in range(3):
        raw += C[:, :, k] @ multiply_by_coordinate(previous, l - 1, k)
    # |Y_l| is constant on the sphere by equivariance: fix the positive scale at one point.
    point = torch.tensor([[0.36, 0.48, 0.8]], dtype=torch.float64)
    mono = evaluate_monomials(point, l)[0, monomial_offset(l) :].numpy()
    scale = math.sqrt(2 * l + 1) / np.linalg.norm(raw @ mono)
    return raw * scale


NORMALIZATIONS = ("component", "norm", "integral")


def _normalization_factor(l: int, normalization: str) -> float:
    if normalization == "component":
        return 1.0
    if normalization == "norm":
        return 1.0 / math.sqrt(2 * l + 1)
    if normalization == "integral":
        return 1.0 / math.sqrt(4 * math.pi)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def spherical_harmonics(
    ls, x: torch.Tensor, normalize: bool = True, normalization: str = "component"
) -> torch.Tensor:
    """Real spherical harmonics of the vectors ``x`` (``[..., 3]``), e3nn's convention.

    Parameters
    ----------
    ls : int, list of int, str or Irreps
        The degrees, concatenated in this order (e.g. ``3`` or ``[0, 1, 2]`` or ``"0e+1o+2e"``).
    normalize : bool
        Evaluate on ``x/|x|`` (the usual use); otherwise the harmonic polynomials of ``x`` itself.
    normalization : {"component", "norm", "integral"}
        ``|Y_l|^2 = 2l+1``, ``|Y_l| = 1``, or unit integral of ``Y_lm^2`` over the sphere.
    """
    ls = parse_ls(ls)
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")

    def build():
        return block_coefficient_matrix(
            ls, lambda l: spherical_harmonic_coefficients(l) * _normalization_factor(l, normalization)
        )

    matrix = cached_tensor(("spherical_harmonics", ls, normalization), build, x.dtype, x.device)
    return evaluate_harmonic_polynomials(x, ls, matrix, normalize)


def fibonacci_sphere(n: int) -> np.ndarray:
    """``n`` well-spread unit vectors (a deterministic quasi-uniform point set)."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@functools.lru_cache(maxsize=None)
def _wigner_D_probe(l: int) -> tuple[np.ndarray, np.ndarray]:
    points = fibonacci_sphere(4 * l + 4)
    Y = spherical_harmonics(l, torch.tensor(points), normalize=False).numpy().T  # [2l+1, P]
    return points, np.linalg.pinv(Y)  # [P, 3], [P, 2l+1]


def wigner_D(l: int, R: torch.Tensor) -> torch.Tensor:
    """Real Wigner matrices ``D_l(R)`` (``[..., 2l+1, 2l+1]``) with ``Y_l(R x) = D_l(R) Y_l(x)``.

    For a proper rotation this is e3nn's ``Irrep(l, p).D_from_matrix(R)``; for an improper ``R``
    it is the matrix of the natural-parity irrep ``(l, (-1)**l)``.
    """
    check_l(l)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"expected matrices of shape [..., 3, 3], got shape {tuple(R.shape)}")
    # Harmonics are polynomials of degree l, so evaluating them at 4l+4 fixed points and at the
    # rotated points determines D exactly (least squares on an exactly consistent system).
    key = ("wigner_D_probe", l)
    points = cached_tensor(key + ("points",), lambda: _wigner_D_probe(l)[0], R.dtype, R.device)
    pinv = cached_tensor(key + ("pinv",), lambda: _wigner_D_probe(l)[1], R.dtype, R.device)
    rotated = points @ R.transpose(-1, -2)  # [..., P, 3]
    Y = spherical_harmonics(l, rotated, normalize=False)  # [..., P, 2l+1]
    return Y.transpose(-1, -2) @ pinv
