"""Multi-state potential energy surfaces as the surface-hopping engine sees them (atomic units).

A surface maps a batch of configurations ``x [T, D]`` (``D`` degrees of freedom: 3N Cartesian
coordinates of a molecule, or 1 for a model problem) to a :class:`SurfacePoint`: the adiabatic
energies, the forces on every state and the derivative couplings ``d_ij = <i|∇j>`` between states.
Everything is in atomic units (hartree, bohr, electron masses; time in ħ/hartree), so that ħ = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

HARTREE = 27.211386245988  # eV
BOHR = 0.529177210903  # Å
AMU = 1822.888486209  # electron masses
FS = 41.341373335  # atomic units of time per fs


@dataclass
class SurfacePoint:
    """``energies [T, S]``, ``forces [T, S, D]`` and ``couplings [T, S, S, D]`` (antisymmetric:
    ``d_ij = -d_ji``; ``None`` for a surface without couplings); a committee's surface adds its
    ``spreads [T, 3]`` (in eV and eV/Å, see :class:`~tensorfuse.model.Committee`)."""

    energies: torch.Tensor
    forces: torch.Tensor
    couplings: torch.Tensor | None
    spreads: torch.Tensor | None = None


class DiabaticModel:
    """A model problem given by a diabatic potential matrix ``V(x)`` (symmetric ``[T, S, S]``) and
    its derivative; the adiabatic energies, forces and couplings follow by diagonalisation, with
    eigenvector signs kept continuous along each trajectory."""

    num_states = 2
    dof = 1

    def diabatic(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V [T, S, S], dV/dx [T, S, S, D])``."""
        raise NotImplementedError

    def __init__(self):
        self.sign_memory = None

    def __call__(self, x: torch.Tensor) -> SurfacePoint:
        V, dV = self.diabatic(x)
        energies, U = torch.linalg.eigh(V)  # columns: adiabatic states in the diabatic basis
        if self.sign_memory is not None and self.sign_memory.shape == U.shape:  # keep signs continuous
            overlap = (self.sign_memory * U).sum(-2)
            U = U * torch.where(overlap < 0, -1.0, 1.0).unsqueeze(-2)
        self.sign_memory = U
        # <i|dV|j> in the adiabatic basis, per degree of freedom
        dH = torch.einsum("tai,tabd,tbj->tijd", U, dV, U)
        forces = -torch.diagonal(dH, dim1=1, dim2=2).movedim(-1, 1)  # [T, S, D]
        gaps = energies.unsqueeze(1) - energies.unsqueeze(2)  # E_j - E_i
        eye = torch.eye(self.num_states, dtype=torch.bool, device=x.device)
        safe = torch.where(eye, torch.ones_like(gaps), gaps)
        couplings = torch.where(eye.unsqueeze(-1), torch.zeros_like(dH), dH / safe.unsqueeze(-1))
        return SurfacePoint(energies, forces, couplings)

    def reset(self) -> None:
        self.sign_memory = None


class TullySimpleAvoidedCrossing(DiabaticModel):
    """Tully's model 1 (J. Chem. Phys. 93, 1061 (1990)): A = 0.01, B = 1.6, C = 0.005, D = 1.0."""

    def __init__(self, A=0.01, B=1.6, C=0.005, D=1.0):
        super().__init__()
        self.A, self.B, self.C, self.D = A, B, C, D

    def diabatic(self, x):
        x = x[:, 0]
        v11 = torch.where(x > 0, self.A * (1 - torch.exp(-self.B * x)), -self.A * (1 - torch.exp(self.B * x)))
        d11 = self.A * self.B * torch.exp(-self.B * x.abs())
        v12 = self.C * torch.exp(-self.D * x**2)
        d12 = -2 * self.D * x * v12
        return _two_state(v11, -v11, v12, d11, -d11, d12)


class TullyDualAvoidedCrossing(DiabaticModel):
    """Tully's model 2: A = 0.1, B = 0.28, C = 0.015, D = 0.06, E0 = 0.05."""

    def __init__(self, A=0.1, B=0.28, C=0.015, D=0.06, E0=0.05):
        super().__init__()
        self.A, self.B, self.C, self.D, self.E0 = A, B, C, D, E0

    def diabatic(self, x):
        x = x[:, 0]
        v22 = -self.A * torch.exp(-self.B * x**2) + self.E0
        d22 = 2 * self.A * self.B * x * torch.exp(-self.B * x**2)
        v12 = self.C * torch.exp(-self.D * x**2)
        d12 = -2 * self.D * x * v12
        zero = torch.zeros_like(x)
        return _two_state(zero, v22, v12, zero, d22, d12)


class TullyExtendedCoupling(DiabaticModel):
    """Tully's model 3 (extended coupling with reflection): A = 6e-4, B = 0.1, C = 0.9."""

    def __init__(self, A=6e-4, B=0.1, C=0.9):
        super().__init__()
        self.A, self.B, self.C = A, B, C

    def diabatic(self, x):
        x = x[:, 0]
        v12 = torch.where(x < 0, self.B * torch.exp(self.C * x), self.B * (2 - torch.exp(-self.C * x)))
        d12 = self.B * self.C * torch.exp(-self.C * x.abs())
        a = torch.full_like(x, self.A)
        zero = torch.zeros_like(x)
        return _two_state(a, -a, v12, zero, zero, d12)


def _two_state(v11, v22, v12, d11, d22, d12):
    V = torch.stack([torch.stack([v11, v12], -1), torch.stack([v12, v22], -1)], -2)
    dV = torch.stack([torch.stack([d11, d12], -1), torch.stack([d12, d22], -1)], -2).unsqueeze(-1)
    return V, dV
