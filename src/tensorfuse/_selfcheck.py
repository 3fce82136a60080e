"""A quick numerical self-check of the algebra in both bases (what `tensorfuse selfcheck` prints)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tensorfuse import o3
from tensorfuse.testing import equivariance_error, rotations_and_reflections


@dataclass(frozen=True)
class SelfCheckRow:
    l: int
    harmonics_equivariance: float  # worst relative error, both bases, rotations and reflections
    product_equivariance: float  # worst over all product paths into degree l, both bases
    bridge: float  # harmonics and every path: Cartesian vs spherical after the change of basis
    paths: int  # admissible (l1, l2) -> l paths with l1, l2 <= lmax
    odd_paths: int


def algebra_selfcheck(lmax: int = 4) -> list[SelfCheckRow]:
    """Equivariance (rotations and reflections) and basis agreement for every degree up to ``lmax``."""
    o3.check_l(lmax, "lmax")
    with _float64():
        R = rotations_and_reflections(4)
        x = torch.randn(8, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        rows = []
        for l in range(lmax + 1):
            ir = o3.Irrep(l, (-1) ** l)
            harmonics_error = max(
                equivariance_error(
                    lambda v, b=basis: b.harmonics(l, v), [x], ["1o"], ir, basis=basis, group_elements=R
                ).max_rel_error
                for basis in (o3.SPHERICAL, o3.CARTESIAN)
            )
            Q = o3.change_of_basis(l)
            bridge = (o3.CARTESIAN.harmonics(l, x) @ Q.T - o3.SPHERICAL.harmonics(l, x)).abs().max().item()
            product_error, paths, odd = 0.0, 0, 0
            for l1 in range(lmax + 1):
                for l2 in range(abs(l - l1), min(l + l1, lmax) + 1):
                    paths += 1
                    odd += (l1 + l2 - l) % 2
                    for basis in (o3.SPHERICAL, o3.CARTESIAN):
                        C = basis.path_coupling(l1, l2, l)
                        for g in R:
                            D1, D2, D3 = (basis.irrep_matrix(o3.Irrep(k, (-1) ** k), g) for k in (l1, l2, l))
                            sign = torch.linalg.det(g) ** ((l1 + l2 - l) % 2)
                            rotated = torch.einsum("ai,bj,ck,ijk->abc", D1, D2, D3, C)
                            product_error = max(product_error, (rotated - sign * C).abs().max().item())
                    mapped = torch.einsum(
                        "ai,bj,ck,ijk->abc",
                        o3.change_of_basis(l1), o3.change_of_basis(l2), Q, o3.CARTESIAN.path_coupling(l1, l2, l),
                    )
                    bridge = max(bridge, (mapped - o3.SPHERICAL.path_coupling(l1, l2, l)).abs().max().item())
            rows.append(SelfCheckRow(l, harmonics_error, product_error, bridge, paths, odd))
    return rows


def format_selfcheck(rows: list[SelfCheckRow]) -> str:
    header = f"{'l':>2}  {'harmonics equiv.':>16}  {'product equiv.':>14}  {'cart vs sph':>11}  {'paths':>5}  {'odd':>4}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.l:>2}  {r.harmonics_equivariance:>16.1e}  {r.product_equivariance:>14.1e}  "
            f"{r.bridge:>11.1e}  {r.paths:>5}  {r.odd_paths:>4}"
        )
    worst = max(max(r.harmonics_equivariance, r.product_equivariance, r.bridge) for r in rows)
    verdict = "OK" if worst < 1e-10 else "FAILED"
    lines.append(f"worst error {worst:.1e} (float64; rotations and reflections): {verdict}")
    return "\n".join(lines)


class _float64:
    def __enter__(self):
        self.previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.previous)
