"""Surface hopping on Tully's models: exact quantum dynamics as the reference, and the invariants."""

from __future__ import annotations

import pytest
import torch

from tensorfuse.namd import (
    DiabaticModel,
    SurfaceHopping,
    TullyDualAvoidedCrossing,
    TullyExtendedCoupling,
    TullySimpleAvoidedCrossing,
    hopping_scattering,
    wave_packet_scattering,
)
from tensorfuse.namd._surfaces import _two_state

MASS = 2000.0


def scatter(model, k: float, method: str, trajectories: int = 500, seed: int = 0, **options):
    """Fractions transmitted on the upper state and reflected, from x = -10 on the lower state."""
    result, ensemble = hopping_scattering(model, k, method, trajectories, seed, MASS, **options)
    return float(result.transmitted[1]), float(result.reflected.sum()), ensemble


@pytest.mark.parametrize("k", [15, pytest.param(10, marks=pytest.mark.slow), 25])
def test_fssh_on_tully_one_matches_exact_quantum_dynamics(k):
    """The default method (FSSH, no decoherence): transmission on the upper state within 0.05 of the
    exact wave packet, 1000 trajectories, two seeds. Measured here (benchmarks/results/namd.md):
    exact 0.153 / 0.323 / 0.623 at k = 10 / 15 / 25."""
    model = TullySimpleAvoidedCrossing()
    exact = wave_packet_scattering(model, k)
    assert exact.transmitted.sum() + exact.reflected.sum() == pytest.approx(1.0, abs=1e-3)
    for seed in (0, 1):
        upper, reflected, _ = scatter(model, k, "fssh", trajectories=1000, seed=seed)
        assert abs(upper - exact.transmitted[1]) < 0.05, (seed, upper, exact.transmitted)
        assert abs(reflected - exact.reflected.sum()) < 0.05


def test_energy_based_decoherence_collapses_tully_one_in_its_coupling_region():
    """Why it is not the default: with C = 0.1 hartree the decoherence time (1 + C/E_kin)/ΔE ~ 280
    a.u. is shorter than the passage of the coupling region at k = 15, and the upper transmission
    overshoots the exact 0.323 (measured 0.42-0.44) where plain FSSH does not."""
    model = TullySimpleAvoidedCrossing()
    exact = float(wave_packet_scattering(model, 15).transmitted[1])
    with_decoherence, _, _ = scatter(model, 15, "fssh", trajectories=1000, decoherence=0.1)
    plain, _, _ = scatter(model, 15, "fssh", trajectories=1000)
    assert with_decoherence - exact > 0.07 and abs(plain - exact) < 0.05


# both slow (42 s at k = 15): Tully 1 against exact dynamics stays in the default suite
@pytest.mark.slow
@pytest.mark.parametrize("k", [15, 25])
def test_fssh_on_tully_two_matches_exact_quantum_dynamics_without_decoherence(k):
    """Tully's dual avoided crossing: transmission on the upper state within 0.1 of the exact wave
    packet with plain FSSH (500 trajectories). Measured here (benchmarks/results/namd.md): exact
    0.125 / 0.245 at k = 15 / 25; FSSH 0.14 / 0.32 without decoherence and 0.23 / 0.39 with the
    energy-based correction, which damps the coherence between the two crossings that the exact
    result (and plain FSSH) keep: for this model it is the wrong physics, so it is reported, not
    asserted."""
    model = TullyDualAvoidedCrossing()
    exact = wave_packet_scattering(model, k)
    upper, _, _ = scatter(model, k, "fssh", decoherence=None)
    assert abs(upper - exact.transmitted[1]) < 0.1, (upper, exact.transmitted)


def test_landau_zener_on_tully_one_without_couplings():
    """Landau–Zener needs energies only; at k = 25 it lands within 0.1 of the exact transmission."""
    model = TullySimpleAvoidedCrossing()
    exact = wave_packet_scattering(model, 25)
    upper, _, ensemble = scatter(model, 25, "lz")
    assert abs(upper - exact.transmitted[1]) < 0.1, (upper, exact.transmitted)
    assert all(h.source != h.target for h in ensemble.hops)


def test_every_accepted_hop_conserves_the_total_energy_and_frustrated_hops_keep_velocities():
    """Tully 2 at k = 10: many hops, some frustrated (too little kinetic energy to go up)."""
    model = TullyDualAvoidedCrossing()
    n, k = 400, 10.0
    v0 = k / MASS
    engine = SurfaceHopping(model, [MASS], method="fssh", dt=20.0 / (v0 * 1000), seed=3)
    x = torch.full((n, 1), -10.0, dtype=torch.float64)
    v = torch.full((n, 1), v0, dtype=torch.float64)
    ensemble = engine.run(x, v, 0, 4000, record_every=1, stop=lambda p, x: x[:, 0].abs() > 10.0)
    accepted = [h for h in ensemble.hops if h.accepted]
    frustrated = [h for h in ensemble.hops if not h.accepted]
    assert len(accepted) > 50 and frustrated
    for hop in accepted:  # the rescaling gives the nuclei exactly the energy the electrons take
        assert abs(hop.energy_after - hop.energy_before) < 1e-8 * abs(hop.energy_before)
    for hop in frustrated:
        assert hop.energy_after == hop.energy_before
        assert ensemble.active[hop.step, hop.trajectory] == hop.source
        assert torch.equal(ensemble.velocities[hop.step, hop.trajectory],
                           _verlet_velocity(engine, ensemble, hop))
    drift = (ensemble.total_energy[1:] - ensemble.total_energy[:-1]).abs().max()
    assert float(drift) < 1e-4 * float(ensemble.total_energy[0].abs().max())  # velocity Verlet, dt = 4 a.u.
    populations = ensemble.populations.sum(-1)
    assert torch.allclose(populations, torch.ones_like(populations), atol=1e-10)


def _verlet_velocity(engine, ensemble, hop):
    """The velocity after the frustrated hop's step computed again without any hop: the same."""
    t, step = hop.trajectory, hop.step
    model = engine.surface
    x0 = ensemble.positions[step - 1, t : t + 1]
    v0 = ensemble.velocities[step - 1, t : t + 1]
    state = ensemble.active[step - 1, t]
    model.reset()
    a0 = model(x0).forces[0, state] / engine.masses
    x1 = x0 + engine.dt * (v0 + 0.5 * engine.dt * a0)
    a1 = model(x1).forces[0, state] / engine.masses
    return (v0 + 0.5 * engine.dt * a0 + 0.5 * engine.dt * a1)[0]


def test_frustrated_hops_keep_or_reverse_the_velocity_as_asked():
    """Tully 1 at k = 5: the kinetic energy (0.006) is below the gap at the crossing (0.01)."""
    for reverse in (False, True):
        model = TullySimpleAvoidedCrossing()
        v0 = 5.0 / MASS
        engine = SurfaceHopping(model, [MASS], method="fssh", dt=10.0, seed=0, decoherence=None,
                                reverse_frustrated=reverse)
        x = torch.full((200, 1), -4.0, dtype=torch.float64)
        v = torch.full((200, 1), v0, dtype=torch.float64)
        ensemble = engine.run(x, v, 0, 300)
        assert ensemble.hops and not any(h.accepted for h in ensemble.hops)
        assert (ensemble.active == 0).all()
        first = ensemble.hops[0]
        before = ensemble.velocities[first.step - 1, first.trajectory]
        after = ensemble.velocities[first.step, first.trajectory]
        assert (float(after) < 0) == reverse and abs(float(after)) == pytest.approx(abs(float(before)), rel=0.05)


def test_runs_are_reproducible_from_the_seed_and_differ_between_seeds():
    model = TullyExtendedCoupling()
    a = scatter(model, 10, "fssh", trajectories=100, seed=5)[2]
    b = scatter(model, 10, "fssh", trajectories=100, seed=5)[2]
    c = scatter(model, 10, "fssh", trajectories=100, seed=6)[2]
    assert torch.equal(a.positions, b.positions) and torch.equal(a.active, b.active)
    assert not torch.equal(a.active, c.active)


def test_fssh_needs_couplings_and_checks_its_arguments():
    class NoCouplings:
        def __call__(self, x):
            point = TullySimpleAvoidedCrossing()(x)
            point.couplings = None
            return point

    x = torch.zeros(2, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="FSSH needs the couplings"):
        SurfaceHopping(NoCouplings(), [MASS]).run(x, x, 0, 1)
    with pytest.raises(ValueError, match="method must be one of"):
        SurfaceHopping(NoCouplings(), [MASS], method="ehrenfest")
    with pytest.raises(ValueError, match="initial state out of range"):
        SurfaceHopping(TullySimpleAvoidedCrossing(), [MASS]).run(x, x, 3, 1)


class LinearCrossing(DiabaticModel):
    """Two diabatic lines ``±αx`` coupled by a constant ``c``: at constant velocity the adiabatic gap
    is the Landau–Zener hyperbola, where Baeck–An's coupling is exact."""

    def __init__(self, alpha=0.01, c=0.002):
        super().__init__()
        self.alpha, self.c = alpha, c

    def diabatic(self, x):
        x = x[:, 0]
        a, d = self.alpha * x, torch.full_like(x, self.alpha)
        c, zero = torch.full_like(x, self.c), torch.zeros_like(x)
        return _two_state(a, -a, c, d, -d, zero)


def test_baeck_an_couplings_are_exact_on_a_landau_zener_hyperbola():
    model, v0, dt = LinearCrossing(), 0.01, 0.5
    engine = SurfaceHopping(model, [MASS], method="fssh-ba", dt=dt)
    for x_mid in (-0.4, -0.1, 0.0, 0.25):
        x = torch.tensor([[x_mid - v0 * dt], [x_mid], [x_mid + v0 * dt]], dtype=torch.float64)
        model.reset()
        point = model(x)
        sigma = engine._baeck_an([point.energies[k:k + 1] for k in range(3)])[0]
        exact = float(point.couplings[1, 0, 1, 0]) * v0
        assert abs(float(sigma[0, 1])) == pytest.approx(abs(exact), rel=1e-4)
        assert float(sigma[1, 0]) == -float(sigma[0, 1])


def test_fssh_with_baeck_an_couplings_conserves_energy_and_populations():
    """Measured here (500 trajectories): Tully 1 upper transmission 0.18 at k = 10, 15 and 25 (exact
    0.15 / 0.32 / 0.62): the approximation only sees the coupling where the gap curves upwards, and
    Tully 1's gap bends over a little way from the crossing. Reported, not asserted."""
    model = TullyDualAvoidedCrossing()
    upper, _, ensemble = scatter(model, 20, "fssh-ba", trajectories=100)
    accepted = [h for h in ensemble.hops if h.accepted]
    assert accepted and 0 < upper < 1
    for hop in accepted:
        assert abs(hop.energy_after - hop.energy_before) < 1e-8 * abs(hop.energy_before)
    assert torch.allclose(ensemble.populations.sum(-1), torch.ones(()), atol=1e-10)


def test_a_trajectory_whose_total_energy_jumps_is_stopped_and_the_others_go_on():
    """A surface with a step in its energy but not in its force (a broken surface, as a learned
    one can be far from its data): crossing it moves the total energy by 0.05 hartree."""
    class Broken:
        def __init__(self):
            self.model = TullySimpleAvoidedCrossing()

        def __call__(self, x):
            point = self.model(x)
            point.energies = point.energies + 0.05 * (x > 1.0).to(x.dtype)
            return point

    x = torch.tensor([[-3.0], [-3.0], [-8.0]], dtype=torch.float64)
    v = torch.tensor([[0.01], [0.01], [0.0]], dtype=torch.float64)
    engine = SurfaceHopping(Broken(), [MASS], dt=5.0, energy_tolerance=0.01)
    ensemble = engine.run(x, v, 0, 200)
    assert (ensemble.stopped[:2] > 0).all() and ensemble.stopped[2] == -1
    assert (ensemble.positions[-1, :2, 0] > 1.0).all() and (ensemble.positions[-1, :2, 0] < 1.5).all()  # just past it


class ActiveForcesOnly:
    """Tully 2 as a surface that computes only the active states' forces (as the SA-CASSCF
    surface does): the others are poisoned, so using one would change the trajectories."""

    def __init__(self):
        self.model = TullyDualAvoidedCrossing()
        self.active_forces_only = True
        self.refreshed = 0

    def reset(self):
        self.model.reset()

    def __call__(self, x, active):
        point = self.model(x)
        keep = torch.nn.functional.one_hot(active, point.forces.shape[1]).bool()[..., None]
        point.forces = torch.where(keep, point.forces, torch.full_like(point.forces, 1e6))
        return point

    def active_forces(self, x, active, rows):
        self.refreshed += len(rows)
        return self.model(x).forces[rows, active[rows]]


def test_a_surface_computing_the_active_forces_only_gives_the_same_trajectories_and_hops():
    n, k = 200, 10.0
    v0 = k / MASS
    runs = []
    for surface in (TullyDualAvoidedCrossing(), ActiveForcesOnly()):
        engine = SurfaceHopping(surface, [MASS], method="fssh", dt=20.0 / (v0 * 1000), seed=3)
        x = torch.full((n, 1), -10.0, dtype=torch.float64)
        v = torch.full((n, 1), v0, dtype=torch.float64)
        runs.append(engine.run(x, v, 0, 3000, record_every=10, stop=lambda p, x: x[:, 0].abs() > 10.0))
    full, active_only = runs
    assert sum(h.accepted for h in full.hops) > 20  # hops, each followed by a force of the new state
    assert surface.refreshed == sum(h.accepted for h in full.hops)
    assert torch.equal(full.positions, active_only.positions)
    assert torch.equal(full.velocities, active_only.velocities)
    assert [(h.trajectory, h.step, h.target, h.accepted) for h in full.hops] == \
        [(h.trajectory, h.step, h.target, h.accepted) for h in active_only.hops]
