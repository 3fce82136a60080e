"""Elements of O(3) as 3x3 matrices: random rotations, reflections and conversions."""

from __future__ import annotations

import torch


def _default_dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` of (not necessarily normalized) quaternions ``[..., 4]`` (w, x, y, z)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(row, dim=-1) for row in rows], dim=-2)


def axis_angle_to_matrix(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotation by ``angle`` (right-handed) about ``axis``: ``[..., 3]``, ``[...]`` -> ``[..., 3, 3]``."""
    axis = axis / axis.norm(dim=-1, keepdim=True)
    half = angle[..., None] / 2
    return quaternion_to_matrix(torch.cat([torch.cos(half), torch.sin(half) * axis], dim=-1))


def rand_rotation(
    *shape: int, dtype: torch.dtype | None = None, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Uniformly (Haar) distributed rotations, det = +1, shape ``[*shape, 3, 3]``."""
    q = torch.randn(*shape, 4, dtype=torch.float64, generator=generator)
    return quaternion_to_matrix(q).to(_default_dtype(dtype))


def rand_o3(
    *shape: int,
    improper: bool | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random elements of O(3), shape ``[*shape, 3, 3]``.

    ``improper=None`` draws det = +1 and det = -1 with equal probability, ``True`` returns only
    reflections/rotoinversions (det = -1) and ``False`` only rotations.
    """
    R = rand_rotation(*shape, dtype=torch.float64, generator=generator)
    if improper is None:
        flip = torch.rand(*shape, dtype=torch.float64, generator=generator) < 0.5
    else:
        flip = torch.full(shape, bool(improper))
    sign = torch.where(flip, -1.0, 1.0).to(torch.float64)
    return (R * sign[..., None, None]).to(_default_dtype(dtype))


def reflection(normal: torch.Tensor) -> torch.Tensor:
    """Mirror through the plane orthogonal to ``normal``: ``I - 2 n n^T`` (det = -1)."""
    n = normal / normal.norm(dim=-1, keepdim=True)
    eye = torch.eye(3, dtype=n.dtype, device=n.device)
    return eye - 2 * n[..., :, None] * n[..., None, :]
