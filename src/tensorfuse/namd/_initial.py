"""Initial conditions: Wigner sampling of the normal modes of a minimum (atomic units).

The harmonic Wigner distribution of mode ``k`` (frequency ``ω``, mass-weighted coordinate ``q``)
at temperature ``T`` is a product of Gaussians with ``<q²> = coth(ω/2kT) / (2ω)`` and
``<p²> = ω coth(ω/2kT) / 2`` (ħ = 1; ``coth -> 1`` at 0 K: the zero-point distribution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BOLTZMANN = 3.166811563e-6  # hartree per K


@dataclass(frozen=True)
class NormalModes:
    """``frequencies [M]`` (hartree, ω) and ``vectors [M, D]`` (orthonormal, mass-weighted) of a minimum."""

    positions: torch.Tensor  # [D] bohr
    masses: torch.Tensor  # [D] electron masses
    frequencies: torch.Tensor
    vectors: torch.Tensor


def minimize(surface, x: torch.Tensor, state: int = 0, fmax: float = 1e-5, max_steps: int = 2000) -> torch.Tensor:
    """The nearest minimum of ``state`` from ``x`` ``[D]`` (bohr), by L-BFGS, until every force
    component is below ``fmax`` hartree/bohr."""
    from scipy.optimize import minimize as scipy_minimize

    def energy_and_gradient(flat):
        point = surface(torch.as_tensor(flat, dtype=torch.float64)[None])
        return float(point.energies[0, state]), (-point.forces[0, state]).numpy()

    result = scipy_minimize(energy_and_gradient, x.double().numpy(), jac=True, method="L-BFGS-B",
                            options={"maxiter": max_steps, "gtol": fmax, "ftol": 1e-15})
    if hasattr(surface, "reset"):
        surface.reset()
    return torch.as_tensor(result.x, dtype=torch.float64)


def hessian(surface, x: torch.Tensor, state: int = 0, delta: float = 1e-3) -> torch.Tensor:
    """``[D, D]`` second derivatives of ``state``'s energy at ``x`` (hartree/bohr²), by central
    differences of the forces: all ``2D`` displaced configurations in one surface call."""
    d = x.numel()
    steps = delta * torch.eye(d, dtype=torch.float64)
    point = surface(torch.cat([x[None] + steps, x[None] - steps]))
    if hasattr(surface, "reset"):
        surface.reset()
    forces = point.forces[:, state]  # [2D, D]
    h = -(forces[:d] - forces[d:]) / (2 * delta)
    return 0.5 * (h + h.T)


def normal_modes(x: torch.Tensor, masses: torch.Tensor, hessian_matrix: torch.Tensor, linear_tolerance: float = 1e-4
                 ) -> NormalModes:
    """The vibrations of a molecule at ``x`` ``[3N]``: the mass-weighted Hessian with the overall
    translations and rotations projected out. An imaginary frequency (not a minimum) is an error."""
    n = x.numel() // 3
    sqrt_m = masses.sqrt()
    weighted = hessian_matrix / sqrt_m[:, None] / sqrt_m[None, :]
    external = _external_motions(x.reshape(n, 3), masses.reshape(n, 3)[:, 0])  # [E, D] orthonormal
    projector = torch.eye(3 * n, dtype=torch.float64) - external.T @ external
    weighted = projector @ weighted @ projector
    values, vectors = torch.linalg.eigh(weighted)
    # the external motions are eigenvectors with eigenvalue 0 exactly: drop them by overlap
    internal = (external @ vectors).pow(2).sum(0) < 0.5
    values, vectors = values[internal], vectors[:, internal]
    scale = values.abs().max().clamp_min(1e-30)
    if (values < -linear_tolerance * scale).any():
        worst = float(values.min().abs().sqrt()) * 219474.63
        raise ValueError(f"not a minimum: a normal mode has an imaginary frequency ({worst:.0f}i cm^-1)")
    keep = values > linear_tolerance * scale
    return NormalModes(x.double(), masses.double(), values[keep].sqrt(), vectors[:, keep].T.contiguous())


def _external_motions(positions: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Orthonormal mass-weighted translations and rotations ``[E, 3N]`` (5 for a linear molecule)."""
    centred = positions - (masses[:, None] * positions).sum(0) / masses.sum()
    sqrt_m = masses.sqrt()[:, None]
    rows = []
    for axis in range(3):
        t = torch.zeros_like(positions)
        t[:, axis] = 1.0
        rows.append((sqrt_m * t).reshape(-1))
        rows.append((sqrt_m * torch.linalg.cross(torch.eye(3, dtype=positions.dtype)[axis].expand_as(centred), centred)).reshape(-1))
    basis = torch.stack(rows)
    u, s, _ = torch.linalg.svd(basis.T, full_matrices=False)
    return u[:, s > 1e-8 * s.max()].T


def wigner_sample(modes: NormalModes, count: int, temperature: float = 0.0, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` positions and velocities ``[count, D]`` (bohr, bohr per atomic time unit) from the
    harmonic Wigner distribution of ``modes`` at ``temperature`` K (0: zero-point motion only)."""
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a number of K >= 0, got {temperature}")
    omega = modes.frequencies
    if temperature > 0:
        excitation = 1.0 / torch.tanh(omega / (2 * BOLTZMANN * temperature))
    else:
        excitation = torch.ones_like(omega)
    q_std = torch.sqrt(excitation / (2 * omega))
    p_std = torch.sqrt(excitation * omega / 2)
    shape = (count, len(omega))
    q = torch.randn(shape, generator=generator, dtype=torch.float64) * q_std
    p = torch.randn(shape, generator=generator, dtype=torch.float64) * p_std
    inv_sqrt_m = modes.masses.rsqrt()
    return modes.positions + (q @ modes.vectors) * inv_sqrt_m, (p @ modes.vectors) * inv_sqrt_m
