"""MACE's product basis: symmetric contraction with precomputed generalized coupling tensors.

For each output irrep and order ``nu`` a tensor ``U_nu[out, a_1, ..., a_nu, k]`` spans the
equivariant polynomials of degree ``nu`` in ``A`` (caterpillar couplings of every sequence of
irreps of ``A``, symmetrized over the ``nu`` slots and orthonormalized). The output is
``sum_nu sum_k w[species, k, c] U_nu[k](A_c, ..., A_c)``, evaluated Horner-style as MACE does.
The tensors have ``dim(A)**nu`` entries per output component, which is why this variant stops at
correlation 3: the iterated :class:`~tensorfuse.nn.ProductBasis` has no such limit.

The tensors are built in the spherical basis and mapped to the requested basis, so the two bases
compute the same function with the same weights.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import torch

from tensorfuse.o3 import SPHERICAL, Irrep, Irreps, change_of_basis_matrix, get_basis


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


class SymmetricContraction(torch.nn.Module):
    """MACE-style symmetric contraction: ``A`` ``[N, C, irreps_a.dim]`` -> ``[N, C, irreps_out.dim]``."""

    def __init__(self, irreps_a, irreps_out, channels: int, correlation: int, num_species: int, basis="spherical",
                 l_internal: int | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.irreps_a, self.irreps_out = Irreps(irreps_a), Irreps(irreps_out)
        self.channels, self.correlation, self.num_species = channels, correlation, num_species
        self.basis = get_basis(basis)
        l_internal = self.irreps_a.lmax if l_internal is None else l_internal
        dtype = dtype or torch.get_default_dtype()
        to_basis_a = change_of_basis_matrix(self.irreps_a, "spherical", self.basis, dtype=torch.float64).numpy()
        self.weights = torch.nn.ParameterList()
        self._plan: list[tuple[int, list[int]]] = []  # per output irrep: (dim, K per nu)
        for mul, ir in self.irreps_out:
            if mul != 1:
                raise ValueError(f"irreps_out must hold each irrep once per channel, got {self.irreps_out}")
            to_basis_out = change_of_basis_matrix(Irreps([(1, ir)]), "spherical", self.basis,
                                                  dtype=torch.float64).numpy()
            ks = []
            for nu in range(1, correlation + 1):
                U = _symmetric_coupling_tensors(self.irreps_a, ir, nu, l_internal)
                # into the basis: the output transforms forward, every A slot with the inverse map
                U = np.einsum("po,o...k->p...k", to_basis_out, U)
                for axis in range(1, nu + 1):
                    U = np.moveaxis(np.tensordot(U, to_basis_a, axes=([axis], [1])), -1, axis)
                self.register_buffer(f"U_{len(self._plan)}_{nu}", torch.tensor(U, dtype=dtype), persistent=False)
                ks.append(U.shape[-1])
                self.weights.append(torch.nn.Parameter(torch.randn(num_species, U.shape[-1], channels, dtype=dtype)
                                                       / math.sqrt(max(U.shape[-1], 1))))
            if sum(ks) == 0:
                raise ValueError(f"output irrep {ir} cannot be reached from A = {self.irreps_a} "
                                 f"with correlation {correlation}")
            self._plan.append((ir.dim, ks))

    def species_axes(self) -> dict[str, int]:
        """Species-indexed tensors (name -> species axis): see :mod:`tensorfuse.model._transfer`."""
        return {f"weights.{k}": 0 for k in range(len(self.weights))}

    def forward(self, A: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        n, c, D = A.shape
        if (c, D) != (self.channels, self.irreps_a.dim):
            raise ValueError(f"A must have shape [N, {self.channels}, {self.irreps_a.dim}], got {tuple(A.shape)}")
        outputs = []
        for i, (d, ks) in enumerate(self._plan):
            out = A.new_zeros(n, c, d)
            weights = [self.weights[i * self.correlation + nu] for nu in range(self.correlation)]
            for z in range(self.num_species):  # MACE's weights depend on the centre's species
                mask = species == z
                if not bool(mask.any()):
                    continue
                x = A[mask]  # [n_z, C, D]
                acc = None
                for nu in range(self.correlation, 0, -1):  # Horner: highest order first
                    U = getattr(self, f"U_{i}_{nu}")  # [d, D^nu, K]
                    T = torch.einsum("...k,kc->c...", U, weights[nu - 1][z])  # [C, d, D^nu]
                    if acc is None:
                        acc = T.unsqueeze(0).expand((x.shape[0],) + T.shape)
                    else:
                        acc = acc + T.unsqueeze(0)
                    acc = torch.einsum("nc...a,nca->nc...", acc, x)  # contract the last slot
                out = out.index_put((mask.nonzero().squeeze(-1),), acc)
            outputs.append(out)
        return torch.cat(outputs, dim=-1)

    def extra_repr(self) -> str:
        return f"A={self.channels}x({self.irreps_a}) -> {self.irreps_out}, correlation={self.correlation}"
