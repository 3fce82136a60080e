"""What a bilinear equivariant map computes, separate from how it is executed.

A :class:`TensorProductSpec` lists the paths ``(ir1, ir2) -> ir_out`` of a product of two
per-channel feature vectors. From it and a basis follows one stacked coupling tensor
``U[D1, D2, D_out]`` holding every path, which the layers of :mod:`tensorfuse.nn` contract in
one go. Changing the basis changes ``U`` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch

from tensorfuse.o3._basis import get_basis
from tensorfuse.o3._constants import cached_tensor
from tensorfuse.o3._irreps import Irrep, Irreps, check_l


@dataclass(frozen=True)
class ProductPath:
    """Irrep ``i1`` of the first input times irrep ``i2`` of the second, projected on ``ir_out``."""

    i1: int
    i2: int
    ir_out: Irrep


def _expand(irreps: Irreps) -> list[Irrep]:
    return [ir for mul, ir in irreps for _ in range(mul)]


class TensorProductSpec:
    """The paths of a channel-wise product of ``irreps1`` and ``irreps2`` (per-channel irreps).

    Parameters
    ----------
    irreps1, irreps2 : Irreps or str
        The irreps of one channel of each input, e.g. ``"0e+1o+2e"``. Multiplicities are
        expanded, so ``"2x0e"`` is two separate irreps.
    filter_out : Irreps, str, int or None
        Which outputs to keep: an Irreps (only those irreps), an int ``lmax`` (all with
        ``l <= lmax``) or ``None`` (every admissible output).
    paths : iterable of (i1, i2, ir_out), optional
        An explicit list; each is checked for the triangle and parity rules.

    Notes
    -----
    Paths are ordered by output irrep (``l``, then even before odd parity), then by inputs, and
    each path has its own output block: ``irreps_out`` has one irrep per path, so the outputs of
    one degree form a contiguous ``[num_paths_l, 2l+1]`` block (see :meth:`degree_blocks`).
    """

    def __init__(self, irreps1, irreps2, filter_out=None, paths: Iterable | None = None):
        self.irreps1, self.irreps2 = Irreps(irreps1), Irreps(irreps2)
        self._ir1, self._ir2 = _expand(self.irreps1), _expand(self.irreps2)
        for ir in self._ir1 + self._ir2:
            check_l(ir.l, "l of an input irrep")
        if paths is None:
            paths = [
                ProductPath(i1, i2, ir_out)
                for i1, ir1 in enumerate(self._ir1)
                for i2, ir2 in enumerate(self._ir2)
                for ir_out in ir1 * ir2
                if _keep(ir_out, filter_out)
            ]
        else:
            paths = [self._check_path(*p) for p in paths]
        if not paths:
            raise ValueError(
                f"no admissible path from {self.irreps1} x {self.irreps2} to outputs {filter_out!r}"
            )
        self.paths: tuple[ProductPath, ...] = tuple(
            sorted(paths, key=lambda p: (p.ir_out.l, -p.ir_out.p, p.i1, p.i2))
        )
        self.irreps_out = Irreps([(1, p.ir_out) for p in self.paths])

    def _check_path(self, i1: int, i2: int, ir_out) -> ProductPath:
        ir_out = Irrep(ir_out)
        if not (0 <= i1 < len(self._ir1) and 0 <= i2 < len(self._ir2)):
            raise ValueError(f"path ({i1}, {i2}, {ir_out}) refers to an input irrep that does not exist")
        ir1, ir2 = self._ir1[i1], self._ir2[i2]
        if ir_out not in ir1 * ir2:
            raise ValueError(
                f"inadmissible path {ir1} x {ir2} -> {ir_out}: the output must have "
                f"l in {abs(ir1.l - ir2.l)}..{ir1.l + ir2.l} and parity {ir1.p * ir2.p:+d}"
            )
        check_l(ir_out.l, "l of an output irrep")
        return ProductPath(i1, i2, ir_out)

    @property
    def num_paths(self) -> int:
        return len(self.paths)

    def path_degrees(self) -> list[tuple[int, int, int]]:
        return [(self._ir1[p.i1].l, self._ir2[p.i2].l, p.ir_out.l) for p in self.paths]

    def degree_blocks(self) -> list[tuple[int, slice, slice]]:
        """``(l, path slice, output slice)`` for each output degree: contiguous by construction."""
        blocks, path_start, out_start = [], 0, 0
        for l in sorted({p.ir_out.l for p in self.paths}):
            count = sum(1 for p in self.paths if p.ir_out.l == l)
            blocks.append((l, slice(path_start, path_start + count), slice(out_start, out_start + count * (2 * l + 1))))
            path_start += count
            out_start += count * (2 * l + 1)
        return blocks

    def output_path_index(self) -> torch.Tensor:
        """For each output component, the index of the path that produces it: ``[D_out]``."""
        return torch.tensor([i for i, p in enumerate(self.paths) for _ in range(p.ir_out.dim)])

    def coupling(self, basis, dtype=None, device=None) -> torch.Tensor:
        """``U[D1, D2, D_out]``: every path's coupling, scaled for unit-variance outputs.

        Each block is ``sqrt(2 l_out + 1)`` times the basis' unit-norm :meth:`Basis.path_coupling`,
        so inputs with independent unit-variance components give unit-variance outputs, and the
        two bases give the same map up to the change of basis.
        """
        basis = get_basis(basis)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        key = ("tensor_product", basis.name, self.irreps1, self.irreps2, self.paths)
        return cached_tensor(key, lambda: self._coupling_numpy(basis), dtype, device)

    def _coupling_numpy(self, basis) -> np.ndarray:
        slices1, slices2 = _irrep_slices(self._ir1), _irrep_slices(self._ir2)
        U = np.zeros((self.irreps1.dim, self.irreps2.dim, self.irreps_out.dim))
        start = 0
        for p, (l1, l2, l3) in zip(self.paths, self.path_degrees()):
            C = basis.unit_variance_coupling(l1, l2, l3, dtype=torch.float64).numpy()
            U[slices1[p.i1], slices2[p.i2], start : start + 2 * l3 + 1] = C
            start += 2 * l3 + 1
        return U

    def __repr__(self) -> str:
        return f"TensorProductSpec({self.irreps1} x {self.irreps2} -> {self.irreps_out.simplify()}, {self.num_paths} paths)"


def _keep(ir_out: Irrep, filter_out) -> bool:
    if filter_out is None:
        return True
    if isinstance(filter_out, int) and not isinstance(filter_out, bool):
        return ir_out.l <= filter_out
    return ir_out in Irreps(filter_out)


def _irrep_slices(irreps: list[Irrep]) -> list[slice]:
    out, start = [], 0
    for ir in irreps:
        out.append(slice(start, start + ir.dim))
        start += ir.dim
    return out
