"""Wigner sampling: normal modes of a known potential, and the harmonic Wigner distribution's moments."""

from __future__ import annotations

import math

import pytest
import torch

from tensorfuse.namd import (
    AMU,
    SurfacePoint,
    hessian,
    minimize,
    normal_modes,
    wigner_sample,
)
from tensorfuse.namd._initial import BOLTZMANN


class Springs:
    """Atoms joined pairwise by harmonic springs (rest lengths: the distances of ``rest``); two
    states, the upper one shifted by a constant. A minimum with known modes."""

    def __init__(self, rest: torch.Tensor, k: float = 0.3):
        self.n, self.k = rest.shape[0], k
        self.lengths = torch.cdist(rest, rest)

    def energy(self, x):
        p = x.reshape(len(x), self.n, 3)
        d = (p[:, :, None] - p[:, None]).pow(2).sum(-1).add(1e-30).sqrt()
        return 0.25 * self.k * (d - self.lengths).pow(2).sum((1, 2))

    def __call__(self, x):
        x = x.detach().requires_grad_(True)
        e = self.energy(x)
        (g,) = torch.autograd.grad(e.sum(), x)
        return SurfacePoint(torch.stack([e, e + 0.1], 1).detach(), torch.stack([-g, -g], 1), None)


def water_like():
    rest = torch.tensor([[0.0, 0.0, 0.0], [1.8, 0.0, 0.0], [-0.5, 1.7, 0.0]], dtype=torch.float64)
    masses = torch.tensor([16.0, 1.0, 1.0], dtype=torch.float64).repeat_interleave(3) * AMU
    return rest, masses


def test_the_modes_of_a_diatomic_spring_are_one_vibration_at_sqrt_k_over_mu():
    rest = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    surface = Springs(rest, k=0.4)
    masses = torch.tensor([12.0, 16.0], dtype=torch.float64).repeat_interleave(3) * AMU
    x0 = rest.reshape(-1)
    modes = normal_modes(x0, masses, hessian(surface, x0))
    mu = 12.0 * 16.0 / 28.0 * AMU
    assert modes.frequencies.shape == (1,)  # a linear molecule: 3N - 5 = 1
    assert float(modes.frequencies[0]) == pytest.approx(math.sqrt(0.4 / mu), rel=1e-6)


def test_minimize_finds_the_rest_geometry_and_a_saddle_is_refused():
    rest, masses = water_like()
    surface = Springs(rest)
    start = rest.reshape(-1) + 0.05 * torch.randn(9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = minimize(surface, start)
    point = surface(x[None])
    assert float(point.forces.abs().max()) < 1e-5 and float(point.energies[0, 0]) < 1e-9
    # the finite-difference Hessian equals the exact second derivatives
    exact = torch.autograd.functional.hessian(lambda y: surface.energy(y[None])[0], x)
    assert torch.allclose(hessian(surface, x), exact, atol=1e-7)
    with pytest.raises(ValueError, match="not a minimum: a normal mode has an imaginary frequency"):
        normal_modes(x, masses, -exact)


@pytest.mark.parametrize("temperature", [0.0, 1500.0])
def test_wigner_samples_have_the_harmonic_energies_and_no_overall_motion(temperature):
    """<K> = <V> = Σ ω coth(ω/2kT) / 4 for the harmonic Wigner distribution; every sample's linear
    and angular momentum is zero (the modes are orthogonal to translations and rotations)."""
    rest, masses = water_like()
    x0 = rest.reshape(-1)
    h = hessian(Springs(rest), x0)
    modes = normal_modes(x0, masses, h)
    assert modes.frequencies.shape == (3,)
    x, v = wigner_sample(modes, 40000, temperature, torch.Generator().manual_seed(1))
    omega = modes.frequencies
    factor = 1 / torch.tanh(omega / (2 * BOLTZMANN * temperature)) if temperature else torch.ones_like(omega)
    expected = float((omega * factor).sum() / 4)
    dx = x - x0
    potential = 0.5 * torch.einsum("ti,ij,tj->t", dx, h, dx).mean()
    kinetic = 0.5 * (masses * v**2).sum(1).mean()
    assert float(potential) == pytest.approx(expected, rel=0.02)
    assert float(kinetic) == pytest.approx(expected, rel=0.02)
    m = masses.reshape(3, 3)[:, 0]
    momentum = (m[:, None] * v.reshape(-1, 3, 3)).sum(1)
    centre = (m[:, None] * rest).sum(0) / m.sum()
    angular = (m[:, None] * torch.linalg.cross((rest - centre).expand(len(v), 3, 3), v.reshape(-1, 3, 3))).sum(1)
    scale = float((m[:, None] * v.reshape(-1, 3, 3)).abs().max())
    assert float(momentum.abs().max()) < 1e-10 * scale and float(angular.abs().max()) < 1e-9 * scale


def test_wigner_sampling_is_reproducible_and_checks_its_temperature():
    rest, masses = water_like()
    modes = normal_modes(rest.reshape(-1), masses, hessian(Springs(rest), rest.reshape(-1)))
    a = wigner_sample(modes, 5, 300.0, torch.Generator().manual_seed(7))
    b = wigner_sample(modes, 5, 300.0, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="temperature"):
        wigner_sample(modes, 5, float("nan"))
