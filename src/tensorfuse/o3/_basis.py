"""The two faces of one algebra: a ``Basis`` is everything that differs between them.

A basis fixes, for every irrep ``(l, p)``, how its ``2l+1`` stored numbers are to be read: the
coordinates of a real spherical-harmonic vector (``"spherical"``) or of an irreducible Cartesian
tensor in the orthonormal STF basis of :mod:`tensorfuse.o3._cartesian` (``"cartesian"``). From
that follow its harmonics, its product coefficients and its representation matrices. Layers take a
basis and otherwise run the same code, and :func:`change_of_basis` maps one onto the other:

    spherical coordinates = Q_l @ Cartesian coordinates,    Q_l orthogonal,

with ``Q_l`` mapping the component-normalized Cartesian harmonics onto the spherical ones.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from tensorfuse.o3._cartesian import (
    cartesian_coupling,
    cartesian_harmonic_coefficients,
    cartesian_harmonics,
    cartesian_representation,
)
from tensorfuse.o3._constants import cached_tensor
from tensorfuse.o3._identities import harmonic_identity_constant
from tensorfuse.o3._irreps import Irrep, Irreps, check_l
from tensorfuse.o3._spherical import (
    check_triple,
    spherical_harmonic_coefficients,
    spherical_harmonics,
    wigner_3j,
    wigner_D,
)


class Basis:
    """How the ``2l+1`` numbers of each irrep are read. Use :data:`SPHERICAL` or :data:`CARTESIAN`."""

    name: str = ""

    def harmonics(self, ls, x: torch.Tensor, normalize: bool = True, normalization: str = "component"):
        """Harmonics of degrees ``ls`` of vectors ``x`` ``[..., 3]`` in this basis."""
        raise NotImplementedError

    def coupling(self, l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
        """This basis' own product ``l1 ⊗ l2 -> l3``, ``[2l1+1, 2l2+1, 2l3+1]``.

        Spherical: the real Clebsch–Gordan tensor (unit norm). Cartesian: the irreducible
        Cartesian tensor product with ICTP's normalization (odd triples use Levi-Civita).
        """
        raise NotImplementedError

    def path_coupling(self, l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
        """The product ``l1 ⊗ l2 -> l3`` scaled to unit Frobenius norm, with a basis-free sign.

        The sign makes the harmonic identity of the path (:mod:`tensorfuse.o3._identities`) hold
        with a positive constant. Both facts are statements about harmonics, not coordinates, so
        the path couplings of the two bases are *equal* up to the change of basis: layers built
        on them compute the same function with the same weights in either basis.
        """
        check_triple(l1, l2, l3)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return cached_tensor(
            ("path_coupling", self.name, l1, l2, l3), lambda: self._path_coupling(l1, l2, l3), dtype, device
        )

    def unit_variance_coupling(self, l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
        """:meth:`path_coupling` times ``sqrt(2 l3 + 1)``: unit-variance outputs for unit-variance
        inputs. Every layer that couples two irreps (tensor products, product paths, fusion trees)
        uses this one normalization."""
        return self.path_coupling(l1, l2, l3, dtype, device) * math.sqrt(2 * l3 + 1)

    def _path_coupling(self, l1: int, l2: int, l3: int) -> np.ndarray:
        C = self.coupling(l1, l2, l3, dtype=torch.float64)

        def harmonic(l, x):
            return self.harmonics(l, x, normalize=False, normalization="component")

        sign = 1.0 if harmonic_identity_constant(C, harmonic, l1, l2, l3) > 0 else -1.0
        return (sign * C / C.norm()).numpy()

    def _natural_matrix(self, l: int, R: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def irrep_matrix(self, ir, R: torch.Tensor) -> torch.Tensor:
        """Representation matrices ``[..., 2l+1, 2l+1]`` of the irrep ``ir`` at ``R`` in O(3)."""
        ir = Irrep(ir)
        check_l(ir.l, "l")
        D = self._natural_matrix(ir.l, R)
        if not ir.is_natural:  # a pseudotensor picks up det(R) on top of the tensor's transformation
            D = D * torch.linalg.det(R)[..., None, None]
        return D

    def representation(self, irreps, R: torch.Tensor) -> torch.Tensor:
        """Block-diagonal representation matrix ``[..., dim, dim]`` of ``irreps`` at ``R``."""
        irreps = Irreps(irreps)
        blocks = []
        for mul, ir in irreps:
            D = self.irrep_matrix(ir, R)
            blocks.extend([D] * mul)
        return _block_diag(blocks, R)

    def to_spherical(self, l: int, dtype=None, device=None) -> torch.Tensor:
        """Orthogonal ``Q_l`` with spherical coordinates = ``Q_l @`` coordinates in this basis."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Basis({self.name!r})"

    def __reduce__(self):
        return (get_basis, (self.name,))


class _SphericalBasis(Basis):
    name = "spherical"

    def harmonics(self, ls, x, normalize=True, normalization="component"):
        return spherical_harmonics(ls, x, normalize, normalization)

    def coupling(self, l1, l2, l3, dtype=None, device=None):
        return wigner_3j(l1, l2, l3, dtype, device)

    def _natural_matrix(self, l, R):
        return wigner_D(l, R)

    def to_spherical(self, l, dtype=None, device=None):
        check_l(l)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        return torch.eye(2 * l + 1, dtype=dtype, device=device)


class _CartesianBasis(Basis):
    name = "cartesian"

    def harmonics(self, ls, x, normalize=True, normalization="component"):
        return cartesian_harmonics(ls, x, normalize, normalization)

    def coupling(self, l1, l2, l3, dtype=None, device=None):
        return cartesian_coupling(l1, l2, l3, dtype, device)

    def _natural_matrix(self, l, R):
        return cartesian_representation(l, R)

    def to_spherical(self, l, dtype=None, device=None):
        return change_of_basis(l, dtype, device)


SPHERICAL: Basis = _SphericalBasis()
CARTESIAN: Basis = _CartesianBasis()
BASES = {"spherical": SPHERICAL, "cartesian": CARTESIAN}


def get_basis(basis) -> Basis:
    """``"spherical"`` / ``"cartesian"`` (or a :class:`Basis`) -> the basis; ``ValueError`` otherwise."""
    if isinstance(basis, Basis):
        return basis
    if isinstance(basis, str) and basis.lower() in BASES:
        return BASES[basis.lower()]
    raise ValueError(f"unknown basis {basis!r}: expected one of {sorted(BASES)}")


@functools.lru_cache(maxsize=None)
def _change_of_basis_numpy(l: int) -> np.ndarray:
    # Both harmonics are homogeneous polynomials of degree l with |H(n)|^2 = 2l+1 on the sphere,
    # so their coefficient matrices differ by an orthogonal factor: K_sph = Q K_cart.
    K_sph = spherical_harmonic_coefficients(l)
    K_cart = cartesian_harmonic_coefficients(l, "component")
    return K_sph @ np.linalg.pinv(K_cart)


def change_of_basis(l: int, dtype=None, device=None) -> torch.Tensor:
    """``Q_l`` (orthogonal, ``[2l+1, 2l+1]``): spherical coordinates = ``Q_l @`` Cartesian coordinates.

    Maps the Cartesian harmonics onto the spherical harmonics of the same normalization, and
    intertwines the representations: ``Q D_cart(R) Q^T = D_sph(R)``.
    """
    check_l(l)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return cached_tensor(("change_of_basis", l), lambda: _change_of_basis_numpy(l), dtype, device)


def change_of_basis_matrix(irreps, source="cartesian", target="spherical", dtype=None, device=None):
    """Block-diagonal matrix mapping coordinates of ``irreps`` from ``source`` to ``target`` basis."""
    source, target = get_basis(source), get_basis(target)
    blocks = []
    for mul, ir in Irreps(irreps):
        Q = target.to_spherical(ir.l, dtype, device).T @ source.to_spherical(ir.l, dtype, device)
        blocks.extend([Q] * mul)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    ref = torch.zeros((), dtype=dtype, device=device)
    return _block_diag(blocks, ref)


def coupling_in_spherical(basis, l1: int, l2: int, l3: int, dtype=None) -> torch.Tensor:
    """The basis' product ``l1 ⊗ l2 -> l3`` rewritten in spherical coordinates."""
    check_triple(l1, l2, l3)
    basis = get_basis(basis)
    C = basis.coupling(l1, l2, l3, dtype=dtype)
    Q1, Q2, Q3 = (basis.to_spherical(l, dtype=C.dtype) for l in (l1, l2, l3))
    return torch.einsum("ai,bj,ck,ijk->abc", Q1, Q2, Q3, C)


def _block_diag(blocks: list[torch.Tensor], ref: torch.Tensor) -> torch.Tensor:
    batch = torch.broadcast_shapes(*(b.shape[:-2] for b in blocks)) if blocks else ref.shape[:-2]
    dim = sum(b.shape[-1] for b in blocks)
    out = torch.zeros(batch + (dim, dim), dtype=ref.dtype, device=ref.device)
    i = 0
    for b in blocks:
        n = b.shape[-1]
        out[..., i : i + n, i : i + n] = b
        i += n
    return out
