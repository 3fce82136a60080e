"""Equivariance checks under O(3), reflections included, in either basis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from tensorfuse.o3 import Irrep, Irreps, get_basis, rand_rotation


def rotations_and_reflections(
    n: int = 4, dtype: torch.dtype = torch.float64, seed: int = 0
) -> torch.Tensor:
    """``n`` random elements of O(3) (``[n, 3, 3]``): the first half proper, the rest improper.

    Always includes at least one reflection-type element (det = -1) when ``n >= 2``, so that a
    check cannot pass on SO(3) alone.
    """
    generator = torch.Generator().manual_seed(seed)
    R = rand_rotation(n, dtype=torch.float64, generator=generator)
    sign = torch.ones(n, dtype=torch.float64)
    sign[n // 2 :] = -1.0
    return (R * sign[:, None, None]).to(dtype)


def apply_representation(x: torch.Tensor, irreps, R: torch.Tensor, basis="spherical") -> torch.Tensor:
    """Transform ``x`` (``[..., irreps.dim]``) by one O(3) element ``R`` (``[3, 3]``) in ``basis``.

    ``irreps=None`` marks an invariant argument (returned unchanged).
    """
    if irreps is None:
        return x
    irreps = Irreps(irreps)
    if x.shape[-1] != irreps.dim:
        raise ValueError(f"last axis of size {x.shape[-1]} does not match irreps {irreps} (dim {irreps.dim})")
    D = get_basis(basis).representation(irreps, R.to(x.dtype))
    return x @ D.T


@dataclass(frozen=True)
class EquivarianceReport:
    """Largest error over the tested group elements, absolute and relative to the output size."""

    max_abs_error: float
    max_rel_error: float
    num_elements: int
    num_improper: int


def _as_list(value) -> list:
    if isinstance(value, (list, tuple)) and not isinstance(value, (Irrep, Irreps)):
        return list(value)
    return [value]


def equivariance_error(
    func: Callable,
    inputs: Sequence[torch.Tensor] | None = None,
    irreps_in: Sequence | None = None,
    irreps_out=None,
    basis="spherical",
    group_elements: torch.Tensor | None = None,
    batch: int = 5,
    dtype: torch.dtype = torch.float64,
) -> EquivarianceReport:
    """How far ``func(D_in(R) x) = D_out(R) func(x)`` is from holding, over elements ``R`` of O(3).

    ``inputs`` default to standard-normal tensors ``[batch, irreps.dim]`` for each entry of
    ``irreps_in``; an entry ``None`` marks an invariant input. ``irreps_out`` is one irreps (or
    ``None`` for an invariant output) per returned tensor. Each tensor transforms on its last axis.
    """
    irreps_in = _as_list(irreps_in) if irreps_in is not None else []
    if inputs is None:
        if any(ir is None for ir in irreps_in):
            raise ValueError("pass `inputs` explicitly when some inputs are invariant (irreps None)")
        inputs = [torch.randn(batch, Irreps(ir).dim, dtype=dtype) for ir in irreps_in]
    inputs = list(inputs)
    if len(irreps_in) != len(inputs):
        raise ValueError(f"{len(inputs)} inputs but {len(irreps_in)} irreps_in")
    if group_elements is None:
        group_elements = rotations_and_reflections(4, dtype=torch.float64)
    outputs = _as_list(func(*inputs))
    irreps_out = _as_list(irreps_out)
    if len(irreps_out) != len(outputs):
        raise ValueError(f"func returned {len(outputs)} tensors but {len(irreps_out)} irreps_out were given")
    max_abs, max_rel = 0.0, 0.0
    for R in group_elements:
        rotated_in = [apply_representation(x, ir, R, basis) for x, ir in zip(inputs, irreps_in)]
        rotated_out = _as_list(func(*rotated_in))
        for y, y_rot, ir in zip(outputs, rotated_out, irreps_out):
            expected = apply_representation(y, ir, R, basis)
            err = (y_rot - expected).abs().max().item() if y.numel() else 0.0
            scale = expected.abs().max().item() if y.numel() else 0.0
            max_abs = max(max_abs, err)
            max_rel = max(max_rel, err / scale if scale > 0 else err)
    num_improper = int((torch.linalg.det(group_elements) < 0).sum())
    return EquivarianceReport(max_abs, max_rel, len(group_elements), num_improper)


def assert_equivariant(
    func: Callable,
    inputs: Sequence[torch.Tensor] | None = None,
    irreps_in: Sequence | None = None,
    irreps_out=None,
    basis="spherical",
    tolerance: float | None = None,
    group_elements: torch.Tensor | None = None,
    batch: int = 5,
    dtype: torch.dtype = torch.float64,
) -> EquivarianceReport:
    """Raise ``AssertionError`` unless ``func`` is O(3)-equivariant (rotations and reflections).

    The relative error must stay below ``tolerance`` (default 1e-10 in float64, 1e-4 in float32).
    Returns the :class:`EquivarianceReport`.
    """
    report = equivariance_error(func, inputs, irreps_in, irreps_out, basis, group_elements, batch, dtype)
    if tolerance is None:
        used = inputs[0].dtype if inputs else dtype
        tolerance = 1e-10 if used == torch.float64 else 1e-4
    if not report.max_rel_error <= tolerance:
        raise AssertionError(
            f"not equivariant in the {get_basis(basis).name} basis: relative error "
            f"{report.max_rel_error:.3e} > {tolerance:.1e} (absolute {report.max_abs_error:.3e}) over "
            f"{report.num_elements} elements of O(3), {report.num_improper} of them improper"
        )
    return report
