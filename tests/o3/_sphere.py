"""Exact integrals of polynomials over the unit sphere (for orthonormality checks)."""

import math

import torch

from tensorfuse.o3._polynomials import monomial_exponents, monomial_offset


def sphere_moment(a: int, b: int, c: int) -> float:
    """Integral of x^a y^b z^c over the unit sphere (zero unless all exponents are even)."""
    if a % 2 or b % 2 or c % 2:
        return 0.0
    g = math.gamma
    return 2 * g((a + 1) / 2) * g((b + 1) / 2) * g((c + 1) / 2) / g((a + b + c + 3) / 2)


def gram_on_sphere(coefficients: torch.Tensor, lmax: int) -> torch.Tensor:
    """Gram matrix of functions f_i = coefficients[:, i] . monomials (degrees 0..lmax) over S^2."""
    exps = [e for l in range(lmax + 1) for e in monomial_exponents(l)]
    assert len(exps) == monomial_offset(lmax + 1)
    M = torch.tensor(
        [[sphere_moment(p[0] + q[0], p[1] + q[1], p[2] + q[2]) for q in exps] for p in exps]
    )
    return coefficients.T @ M @ coefficients
