"""Homogeneous polynomials in (x, y, z) and symmetric tensors: the common ground of both bases.

A symmetric rank-l tensor ``T`` and the homogeneous polynomial ``p(x) = T_{i1..il} x_i1 ... x_il``
determine each other. Its entries depend only on how many indices are x, y and z, so it is stored
as one number ``t_a`` per monomial exponent ``a = (ax, ay, az)``, ``ax + ay + az = l``; ``p`` then has
the coefficient ``w_a t_a`` with the multinomial weight ``w_a = l!/(ax! ay! az!)`` (the number of
index tuples with those counts), and the Frobenius inner product is ``<S, T> = sum_a w_a s_a t_a``.
Traceless tensors are the harmonic polynomials. Both bases evaluate their harmonics as a fixed
matrix times the monomials of the edge vector, so one fast evaluator serves both.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch


@functools.lru_cache(maxsize=None)
def monomial_exponents(l: int) -> tuple[tuple[int, int, int], ...]:
    """Exponents ``(ax, ay, az)`` of the degree-``l`` monomials, ``x`` powers descending, then ``y``."""
    return tuple((ax, ay, l - ax - ay) for ax in range(l, -1, -1) for ay in range(l - ax, -1, -1))


def num_monomials(l: int) -> int:
    return (l + 1) * (l + 2) // 2


@functools.lru_cache(maxsize=None)
def monomial_weights(l: int) -> np.ndarray:
    """Multinomial weights ``l!/(ax! ay! az!)``: index tuples per monomial."""
    f = math.factorial
    return np.array([f(l) // (f(a) * f(b) * f(c)) for a, b, c in monomial_exponents(l)], dtype=np.float64)


@functools.lru_cache(maxsize=None)
def monomial_index(l: int) -> dict[tuple[int, int, int], int]:
    return {e: i for i, e in enumerate(monomial_exponents(l))}


@functools.lru_cache(maxsize=None)
def dense_to_monomial(l: int) -> np.ndarray:
    """For each of the ``3**l`` index tuples (row-major), the monomial its index counts give."""
    if l == 0:
        return np.zeros(1, dtype=np.int64)
    digits = np.array(np.unravel_index(np.arange(3**l), (3,) * l)).T  # [3^l, l]
    counts = np.stack([(digits == axis).sum(1) for axis in range(3)], axis=1)
    index = monomial_index(l)
    return np.array([index[tuple(c)] for c in counts.tolist()], dtype=np.int64)


@functools.lru_cache(maxsize=None)
def trace_matrix(l: int) -> np.ndarray:
    """The trace over one index pair of a symmetric rank-``l`` tensor, in monomial coordinates.

    ``tr(t)_a = t_{a+2x} + t_{a+2y} + t_{a+2z}``: shape ``[num_monomials(l-2), num_monomials(l)]``.
    """
    index = monomial_index(l)
    out = np.zeros((num_monomials(l - 2), num_monomials(l)))
    for row, (a, b, c) in enumerate(monomial_exponents(l - 2)):
        for shift in ((2, 0, 0), (0, 2, 0), (0, 0, 2)):
            out[row, index[(a + shift[0], b + shift[1], c + shift[2])]] += 1.0
    return out


def _exponent_table(lmax: int, device) -> torch.Tensor:
    from tensorfuse.o3._constants import cached_tensor

    def build():
        return np.array([e for l in range(lmax + 1) for e in monomial_exponents(l)], dtype=np.int64)

    return cached_tensor(("monomial_exponents", lmax), build, torch.long, device)


def evaluate_monomials(x: torch.Tensor, lmax: int) -> torch.Tensor:
    """All monomials of degree ``0..lmax`` of ``x`` (``[..., 3]``), concatenated degree by degree.

    Shape ``[..., sum_l num_monomials(l)]``; degree ``l`` starts at ``l(l+1)(l+2)/6``.
    """
    ex, ey, ez = _exponent_table(lmax, x.device).unbind(1)
    powers = [torch.ones_like(x)]
    for _ in range(lmax):
        powers.append(powers[-1] * x)
    powers = torch.stack(powers, dim=-1)  # [..., 3, lmax+1]
    return powers[..., 0, ex] * powers[..., 1, ey] * powers[..., 2, ez]


def monomial_offset(l: int) -> int:
    return l * (l + 1) * (l + 2) // 6


def multiply_by_coordinate(coeffs: np.ndarray, l: int, axis: int) -> np.ndarray:
    """Coefficients ``[..., num_monomials(l)]`` of ``p`` -> of ``x_axis * p`` (degree ``l+1``)."""
    index = monomial_index(l + 1)
    out = np.zeros(coeffs.shape[:-1] + (num_monomials(l + 1),))
    for col, exps in enumerate(monomial_exponents(l)):
        shifted = list(exps)
        shifted[axis] += 1
        out[..., index[tuple(shifted)]] += coeffs[..., col]
    return out


def block_coefficient_matrix(ls: tuple[int, ...], coefficients) -> np.ndarray:
    """Stack ``coefficients(l)`` (``[2l+1, num_monomials(l)]``) into one matrix for degrees ``ls``.

    The result maps all monomials of degree ``0..max(ls)`` (see :func:`evaluate_monomials`) to the
    concatenated harmonics: ``[monomial_offset(max(ls)+1), sum(2l+1)]``.
    """
    out = np.zeros((monomial_offset(max(ls) + 1), sum(2 * l + 1 for l in ls)))
    col = 0
    for l in ls:
        out[monomial_offset(l) : monomial_offset(l + 1), col : col + 2 * l + 1] = coefficients(l).T
        col += 2 * l + 1
    return out


def evaluate_harmonic_polynomials(
    x: torch.Tensor, ls: tuple[int, ...], matrix: torch.Tensor, normalize: bool
) -> torch.Tensor:
    """``monomials(x) @ matrix`` for vectors ``x`` ``[..., 3]`` (normalized first if asked)."""
    if x.shape[-1:] != (3,):
        raise ValueError(f"harmonics need vectors of shape [..., 3], got shape {tuple(x.shape)}")
    if normalize:
        x = torch.nn.functional.normalize(x, dim=-1)
    return evaluate_monomials(x, max(ls)) @ matrix
