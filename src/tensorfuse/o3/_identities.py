"""The identities that fix the scale and sign of a product path, in any basis.

For a bilinear map ``C`` of degrees ``l1 ⊗ l2 -> l3`` and harmonics ``H_l`` of a basis:

* even paths (``l1 + l2 - l3`` even): ``C(H_l1(n), H_l2(n)) = c · H_l3(n)``;
* odd paths: ``C(H_l1(n), d_v H_l2(n)) = c · d_{n×v} H_l3(n)`` for ``v ⟂ n``
  (the zeroth order vanishes for odd paths, so the first order is used).

Equivariance makes both sides proportional; :func:`harmonic_identity_constant` returns ``c``.
"""

from __future__ import annotations

from typing import Callable

import torch

_N = torch.tensor([0.48, 0.36, 0.8], dtype=torch.float64)  # a generic unit vector
_V = torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64)  # orthogonal to it


def harmonic_identity_constant(
    coupling: torch.Tensor,
    harmonic: Callable[[int, torch.Tensor], torch.Tensor],
    l1: int,
    l2: int,
    l3: int,
) -> float:
    """The constant ``c`` of the path identity for ``coupling`` (``[2l1+1, 2l2+1, 2l3+1]``, float64).

    ``harmonic(l, x)`` evaluates the basis' degree-``l`` harmonic polynomial at ``x`` (no
    normalization of ``x``). Raises ``RuntimeError`` if the two sides are not proportional, which
    would mean ``coupling`` is not an equivariant product.
    """

    def derivative(l, direction):
        return torch.autograd.functional.jacobian(lambda x: harmonic(l, x), _N) @ direction

    if (l1 + l2 - l3) % 2 == 0:
        got = torch.einsum("i,j,ijm->m", harmonic(l1, _N), harmonic(l2, _N), coupling)
        expected = harmonic(l3, _N)
    else:
        got = torch.einsum("i,j,ijm->m", harmonic(l1, _N), derivative(l2, _V), coupling)
        expected = derivative(l3, torch.linalg.cross(_N, _V))
    constant = float(got @ expected / (expected @ expected))
    residual = float((got - constant * expected).norm() / got.norm())
    if not residual < 1e-9:
        raise RuntimeError(f"path ({l1}, {l2}, {l3}) does not satisfy its harmonic identity ({residual:.1e})")
    return constant
