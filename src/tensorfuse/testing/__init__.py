"""Reusable checks for anything built on tensorfuse (and for the library's own tests).

>>> import torch
>>> from tensorfuse import o3
>>> from tensorfuse.testing import assert_equivariant
>>> f = lambda x: o3.spherical_harmonics(2, x)
>>> assert_equivariant(f, irreps_in=["1o"], irreps_out="2e")  # doctest: +ELLIPSIS
EquivarianceReport(...)
"""

from tensorfuse.testing._equivariance import (
    EquivarianceReport,
    apply_representation,
    assert_equivariant,
    equivariance_error,
    rotations_and_reflections,
)
from tensorfuse.testing._physics import PotentialTests, random_crystal, random_molecule

__all__ = [
    "EquivarianceReport",
    "PotentialTests",
    "apply_representation",
    "assert_equivariant",
    "equivariance_error",
    "random_crystal",
    "random_molecule",
    "rotations_and_reflections",
]
