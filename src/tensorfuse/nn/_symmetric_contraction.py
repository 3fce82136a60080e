"""MACE's product basis: symmetric contraction with precomputed generalized coupling tensors.

For each output irrep and order ``nu`` a tensor ``U_nu[out, a_1, ..., a_nu, k]`` spans the
equivariant polynomials of degree ``nu`` in ``A`` (caterpillar couplings of every sequence of
irreps of ``A``, symmetrized over the ``nu`` slots and orthonormalized). The output is
``sum_nu sum_k w[species, k, c] U_nu[k](A_c, ..., A_c)``, evaluated Horner-style as MACE does.
The tensors have ``dim(A)**nu`` entries per output component, which is why this variant stops at
correlation 3: the iterated :class:`~tensorfuse.nn.ProductBasis` has no such limit.

The tensors are built in the spherical basis and mapped to the requested basis, so the two bases
compute the same function with the same weights. They define the parametrization; the computation is
the product paths' (the fused kernel on CPU), onto which they map exactly.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch

from tensorfuse.nn._product_paths import ProductPaths, weight_map
from tensorfuse.o3 import SPHERICAL, Irrep, Irreps, ManyBodySpec, change_of_basis_matrix, get_basis


@functools.lru_cache(maxsize=None)
def _symmetric_coupling_tensors(irreps_a: Irreps, ir_out: Irrep, nu: int, l_internal: int) -> np.ndarray:
    """Orthonormal basis ``[d_out, D_A, ..., D_A, K]`` of symmetric equivariant nu-linear maps (spherical)."""
    a_irreps = [ir for mul, ir in irreps_a for _ in range(mul)]
    slices = Irreps([(1, ir) for ir in a_irreps]).slices()
    D = irreps_a.dim

    def embed(a: int) -> np.ndarray:  # [D_A, d_a]
        E = np.zeros((D, a_irreps[a].dim))
        E[slices[a], :] = np.eye(a_irreps[a].dim)
        return E

    partial = [(ir, embed(a)) for a, ir in enumerate(a_irreps)]  # tensors [D_A^k..., d_ir]
    for step in range(2, nu + 1):
        last = step == nu
        grown = []
        for ir_k, T in partial:
            for a, ir_a in enumerate(a_irreps):
                for ir in ir_k * ir_a:
                    if (last and ir != ir_out) or (not last and ir.l > l_internal):
                        continue
                    C = SPHERICAL.path_coupling(ir_k.l, ir_a.l, ir.l, dtype=torch.float64).numpy()
                    grown.append((ir, np.einsum("...i,bj,ijo->...bo", T, embed(a), C)))
        partial = grown
    columns = [T for ir, T in partial if ir == ir_out]
    if not columns:
        return np.zeros((ir_out.dim,) + (D,) * nu + (0,))
    stack = np.stack(columns, axis=-1)  # [D_A^nu..., d_out, trees]
    symmetric = sum(np.transpose(stack, perm + (nu, nu + 1)) for perm in itertools.permutations(range(nu)))
    flat = symmetric.reshape(-1, symmetric.shape[-1])
    u, s, _ = np.linalg.svd(flat, full_matrices=False)
    rank = int((s > 1e-9 * s.max()).sum()) if s.size else 0
    basis = u[:, :rank].reshape(symmetric.shape[:-1] + (rank,))  # [D_A^nu..., d_out, K]
    return np.moveaxis(basis, nu, 0)  # [d_out, D_A^nu..., K]


def _symmetric_paths(irreps_a: Irreps, correlation: int) -> bool:
    """The symmetric paths (fewer; the same span for one density), except where the last product is
    the first and pairs copies of one irrep unevenly, which the plan bundles only in full."""
    return correlation != 2 or all(mul == 1 for mul, _ in irreps_a)


@functools.lru_cache(maxsize=64)
def _mace_basis(irreps_a: Irreps, irreps_out: Irreps, correlation: int, basis: str,
                l_internal: int) -> tuple[list[int], torch.Tensor]:
    """MACE's basis functions per output irrep and order (how many: ``counts``, in the weights'
    order) and the map ``M`` ``[K, paths]`` of their weights onto the product paths' (float64;
    cached: models of one shape are built many times)."""
    basis = get_basis(basis)
    to_basis_a = change_of_basis_matrix(irreps_a, "spherical", basis, dtype=torch.float64).numpy()
    tensors, counts = [], []  # (output slice, nu, U [d, D^nu, K] in the basis), in the weights' order
    for (_, ir), out_slice in zip(irreps_out, irreps_out.slices()):
        to_basis_out = change_of_basis_matrix(Irreps([(1, ir)]), "spherical", basis, dtype=torch.float64).numpy()
        ks = []
        for nu in range(1, correlation + 1):
            U = _symmetric_coupling_tensors(irreps_a, ir, nu, l_internal)
            # into the basis: the output transforms forward, every A slot with the inverse map
            U = np.einsum("po,o...k->p...k", to_basis_out, U)
            for axis in range(1, nu + 1):
                U = np.moveaxis(np.tensordot(U, to_basis_a, axes=([axis], [1])), -1, axis)
            tensors.append((out_slice, nu, torch.tensor(U)))
            ks.append(U.shape[-1])
        if sum(ks) == 0:
            raise ValueError(f"output irrep {ir} cannot be reached from A = {irreps_a} with correlation {correlation}")
        counts += ks
    spec = ManyBodySpec(irreps_a, irreps_out, correlation, _symmetric_paths(irreps_a, correlation), l_internal)
    paths = ProductPaths(spec, basis, dtype=torch.float64)
    num_columns = sum(counts)
    M = weight_map(paths, lambda A: _evaluate(tensors, A, irreps_out.dim, num_columns), num_columns)
    if M is None:
        raise RuntimeError(f"MACE's symmetric basis of {irreps_a} -> {irreps_out} is not in the span "
                           "of the product paths (a bug)")
    return counts, M


class SymmetricContraction(torch.nn.Module):
    """MACE-style symmetric contraction: ``A`` ``[N, C, irreps_a.dim]`` -> ``[N, C, irreps_out.dim]``.

    MACE's parametrization (one weight per species, basis function ``U_nu[k]`` and channel), run as
    the product paths of one density: every ``U_nu[k](A, ..., A)`` is a fixed combination of the
    symmetric product basis' paths (:func:`~tensorfuse.nn._product_paths.weight_map`, checked exact
    when built), so the weights map onto the paths' weights by one small matrix product per call and
    the contraction runs by the fused kernel like every other product basis.
    """

    def __init__(self, irreps_a, irreps_out, channels: int, correlation: int, num_species: int, basis="spherical",
                 l_internal: int | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.irreps_a, self.irreps_out = Irreps(irreps_a), Irreps(irreps_out)
        self.channels, self.correlation, self.num_species = channels, correlation, num_species
        self.basis = get_basis(basis)
        l_internal = self.irreps_a.lmax if l_internal is None else l_internal
        dtype = dtype or torch.get_default_dtype()
        for mul, _ in self.irreps_out:
            if mul != 1:
                raise ValueError(f"irreps_out must hold each irrep once per channel, got {self.irreps_out}")
        counts, M = _mace_basis(self.irreps_a, self.irreps_out, correlation, self.basis.name, l_internal)
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.randn(num_species, k, channels, dtype=dtype) / math.sqrt(max(k, 1)))
            for k in counts
        )
        symmetric = _symmetric_paths(self.irreps_a, correlation)
        self.paths = ProductPaths(ManyBodySpec(self.irreps_a, self.irreps_out, correlation, symmetric, l_internal),
                                  self.basis, dtype=dtype)
        self.register_buffer("weight_map", M.to(dtype, copy=True), persistent=False)  # [K, paths]

    def species_axes(self) -> dict[str, int]:
        """Species-indexed tensors (name -> species axis): see :mod:`tensorfuse.model._transfer`."""
        return {f"weights.{k}": 0 for k in range(len(self.weights))}

    def forward(self, A: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        n, c, D = A.shape
        if (c, D) != (self.channels, self.irreps_a.dim):
            raise ValueError(f"A must have shape [N, {self.channels}, {self.irreps_a.dim}], got {tuple(A.shape)}")
        w = torch.cat(list(self.weights), dim=1)  # [Z, K, C]
        W = torch.matmul(w.transpose(1, 2), self.weight_map)  # [Z, C, paths]
        return self.paths(A, species, W)

    def extra_repr(self) -> str:
        return f"A={self.channels}x({self.irreps_a}) -> {self.irreps_out}, correlation={self.correlation}"


def _evaluate(tensors, A: torch.Tensor, dim_out: int, num_columns: int) -> torch.Tensor:
    """``[S, K, dim_out]``: every basis function ``U_nu[k](A, ..., A)`` at ``A`` ``[S, D]`` (float64)."""
    out = A.new_zeros(A.shape[0], num_columns, dim_out)
    k = 0
    for out_slice, nu, U in tensors:
        value = U.unsqueeze(0).expand((A.shape[0],) + U.shape)  # [S, d, D^nu, K]
        for _ in range(nu):
            value = torch.einsum("sd...ak,sa->sd...k", value, A)
        out[:, k : k + U.shape[-1], out_slice] = value.transpose(1, 2)
        k += U.shape[-1]
    return out
