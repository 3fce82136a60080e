"""Surface hopping for a batch of trajectories at once (atomic units, ħ = 1).

Every step advances all trajectories together with one call of the surface:

1. velocity Verlet on each trajectory's active state;
2. (FSSH) the electronic amplitudes ``c`` evolve under ``H = diag(E) - i v·d`` with the midpoint
   energies and time-derivative couplings (exact exponential of the Hermitian matrix);
3. (FSSH) hops ``a -> b`` with Tully's probability ``max(0, -2 Re(c_b^* c_a v·d_ba) dt / |c_a|^2)``;
   (LZ) at a local minimum of the gap ``Z`` to a neighbouring state, with the Landau–Zener
   probability ``exp(-π/2 sqrt(Z^3 / Z''))`` (Belyaev–Lebedev form, ``Z''`` from three steps);
4. an accepted hop rescales the velocity along the coupling vector (FSSH) or the momentum (LZ)
   so that the total energy is unchanged; a hop without enough kinetic energy is frustrated: the
   velocities stay (or their component along the coupling reverses, ``reverse_frustrated``);
5. (FSSH) energy-based decoherence (Granucci–Persico): non-active amplitudes decay with
   ``τ = (1 + C / E_kin) / |E_k - E_a|`` (off by default; ``C = 0.1`` hartree is the usual value).

``"fssh-ba"`` is FSSH for surfaces without coupling vectors: the time-derivative couplings come
from the gaps' time series (Baeck and An, J. Chem. Phys. 146, 114101 (2017):
``σ_ij = sqrt(Z''/Z) / 2`` where the gap ``Z = |E_j - E_i|`` curves upwards, else 0), and hops
rescale along the momentum, as with Landau–Zener.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from tensorfuse.namd._exact import Scattering
from tensorfuse.namd._surfaces import HARTREE, SurfacePoint

METHODS = ("fssh", "lz", "fssh-ba")
DEFAULT_ENERGY_TOLERANCE = 1.0 / HARTREE  # hartree (1 eV): the command line's default too


@dataclass
class Hop:
    trajectory: int
    step: int
    source: int
    target: int
    accepted: bool  # False: frustrated
    energy_before: float = 0.0  # total energy (potential of the active state + kinetic) before the hop
    energy_after: float = 0.0  # and after it (the same unless the rounding of the rescaling)
    position: torch.Tensor | None = None  # [D] the configuration at the hop
    gap: float = 0.0  # E_target - E_source at the hop (hartree)


@dataclass
class Ensemble:
    """The result of a run: per recorded step, every trajectory's time, positions, velocities,
    active state, electronic populations and energies; the hops; and which trajectories stopped."""

    times: torch.Tensor  # [R]
    positions: torch.Tensor  # [R, T, D]
    velocities: torch.Tensor  # [R, T, D]
    active: torch.Tensor  # [R, T]
    populations: torch.Tensor  # [R, T, S] |c|^2 (FSSH) or one-hot of the active state (LZ)
    energies: torch.Tensor  # [R, T, S]
    total_energy: torch.Tensor  # [R, T] potential of the active state + kinetic
    hops: list[Hop] = field(default_factory=list)
    stopped: torch.Tensor | None = None  # [T] step at which a trajectory was stopped (-1: ran to the end)
    reasons: list[str] = field(default_factory=list)  # [T] why it was stopped ("" for none)
    spreads: torch.Tensor | None = None  # [R, T, 3] a committee surface's spreads (eV, eV, eV/Å)


class SurfaceHopping:
    """``SurfaceHopping(surface, masses, method="fssh", dt=..., seed=0)``; ``run(x, v, state, steps)``.

    ``surface``: a callable ``x [T, D] -> SurfacePoint`` (atomic units), e.g. a Tully model or a
    learned model through :class:`~tensorfuse.namd.ModelSurface`. ``masses`` ``[D]`` (electron
    masses). ``method``: ``"fssh"`` (needs couplings), ``"lz"`` or ``"fssh-ba"`` (energies and
    forces only).
    ``decoherence``: the Granucci–Persico constant in hartree (``None``, the default: none; 0.1
    is the usual choice, see below).
    ``energy_tolerance`` (hartree; 1 eV by default, as ``tensorfuse namd``): a trajectory whose
    total energy has moved further than this from its start is stopped, as an explosion (hops
    conserve it, so only a failing integration does); ``None``: no limit.

    Decoherence is off by default because the energy-based correction is wrong on the model
    problems with exact answers: its time ``(1 + C/E_kin) / |ΔE|`` (~280 a.u. on Tully 1 at
    k = 15) is shorter than the passage through the coupling region (~400 a.u.), so it collapses
    the amplitudes while the coupling still acts and the two wave packets have not separated:
    upper-state transmission 0.42-0.44 against the exact 0.32 (plain FSSH 0.32-0.35; Tully 2: 0.23
    against 0.125, plain 0.14). Measured in ``benchmarks/results/namd.md``.
    """

    def __init__(self, surface, masses, method: str = "fssh", dt: float = 1.0, seed: int = 0,
                 decoherence: float | None = None, reverse_frustrated: bool = False,
                 energy_tolerance: float | None = DEFAULT_ENERGY_TOLERANCE):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not (dt > 0 and math.isfinite(dt)):
            raise ValueError(f"the time step must be positive, got {dt}")
        self.surface, self.method, self.dt = surface, method, float(dt)
        self.masses = torch.as_tensor(masses, dtype=torch.float64)
        self.seed = int(seed)
        self.trajectory_ids: torch.Tensor | None = None  # [T] which trajectories of the ensemble these are
        self.decoherence, self.reverse_frustrated = decoherence, reverse_frustrated
        self.energy_tolerance = energy_tolerance  # hartree: a trajectory drifting further is stopped

    def run(self, x: torch.Tensor, v: torch.Tensor, state, steps: int, record_every: int = 1,
            stop=None, callback=None, checkpoint=None, checkpoint_every: int = 0, resume: dict | None = None,
            trajectory_ids=None, end_when_all_stopped: bool = True) -> Ensemble:
        """Propagate ``x, v`` ``[T, D]`` starting on ``state`` (an int or ``[T]``) for ``steps``.

        ``stop(point, x)`` may end trajectories (an explosion): it returns ``[T] bool``, or
        ``{reason: [T] bool}``; stopped trajectories keep their recorded frames and are frozen from
        then on (the surface is evaluated at their last configuration), and the ensemble says when
        and why (``stopped``, ``reasons``; the energy tolerance's reason is "total energy drift").
        ``callback(step, running)`` is called after every step (a progress bar).
        ``checkpoint(snapshot)`` is called every ``checkpoint_every`` steps and at the end with
        everything needed to go on (plain tensors); ``run(..., resume=snapshot)`` goes on from it
        (``x``, ``v`` and ``state`` are then ignored) exactly as if never stopped.

        The random numbers of the hops are a function of the seed, the trajectory's number in the
        ensemble (``trajectory_ids``, default ``0 .. T-1``) and the step (a counter-based hash), not
        of the other trajectories: a share of an ensemble run on its own draws what it would have
        drawn in the whole. ``end_when_all_stopped=False`` goes on to ``steps`` even when every
        trajectory has stopped (a share then records the same steps as the whole ensemble)."""
        if resume is None:
            x, v = x.clone().to(torch.float64), v.clone().to(torch.float64)
        count = (x if resume is None else resume["x"]).shape[0]
        self.trajectory_ids = (torch.arange(count) if trajectory_ids is None
                               else torch.as_tensor(trajectory_ids, dtype=torch.long))
        if resume is None:
            t_count = x.shape[0]
            active = torch.as_tensor(state, dtype=torch.long).expand(t_count).clone()
            s = getattr(self.surface, "num_states", None)
            if s is not None and not ((active >= 0) & (active < s)).all():
                raise ValueError(f"initial state out of range: the surface has {s} states")
            point = self._evaluate(x, active)
            s = point.energies.shape[1]
            if not ((active >= 0) & (active < s)).all():
                raise ValueError(f"initial state out of range: the surface has {s} states")
            c = torch.zeros(t_count, s, dtype=torch.complex128)
            c[torch.arange(t_count), active] = 1.0
            running = torch.ones(t_count, dtype=torch.bool)
            stopped = torch.full((t_count,), -1, dtype=torch.long)
            reasons = [""] * t_count
            energies_history: list[torch.Tensor] = []
            record = _Recorder()
            hops: list[Hop] = []
            first = 1
            start_energy = self._total(point, v, active)
            record.add(0.0, x, v, active, self._populations(c, active), point, start_energy)
        else:
            x, v, c, active = resume["x"], resume["v"], resume["c"], resume["active"]
            running, stopped = resume["running"], resume["stopped"]
            reasons = list(resume.get("reasons", [""] * len(stopped)))
            energies_history = list(resume["energies_history"])
            record, hops = _Recorder.from_state(resume["record"]), _hops_from_state(resume["hops"])
            if hasattr(self.surface, "sign_memory"):
                self.surface.sign_memory = resume["surface_memory"]
            point = self._evaluate(x, active)  # the same numbers as before the stop: same x, same sign memory
            s, first = point.energies.shape[1], int(resume["step"]) + 1
            if (first - 1) % record_every and record.rows and record.rows[-1][0] == (first - 1) * self.dt:
                record.rows.pop()  # the last step of a finished run, off the interval: an extended run has none
            start_energy = resume["start_energy"]
        if self.method == "fssh" and point.couplings is None:
            raise ValueError("FSSH needs the couplings between states: this surface has none (use method='lz')")

        def snapshot(step: int) -> dict:
            return {"step": step, "x": x, "v": v, "c": c, "active": active, "running": running, "stopped": stopped,
                    "reasons": list(reasons),
                    "energies_history": list(energies_history), "record": record.state(), "hops": _hops_state(hops),
                    "start_energy": start_energy,
                    "surface_memory": getattr(self.surface, "sign_memory", None)}

        if checkpoint is not None and first == 1:  # a run killed before its first checkpoint resumes too
            checkpoint(snapshot(0))
        for step in range(first, steps + 1):
            x_new, v_half = self._verlet_positions(x, v, point, active)
            x = torch.where(running[:, None], x_new, x)  # stopped trajectories stay where they were
            new = self._evaluate(x, active)
            v_new = v_half + 0.5 * self.dt * self._accelerations(new, active)
            v_new = torch.where(running[:, None], v_new, v)
            if self.method != "fssh":
                energies_history = (energies_history + [new.energies])[-3:]
            if self.method == "fssh":
                tdc = self._time_derivative_couplings(point, new, v, v_new)
                c = torch.where(running[:, None], self._propagate(c, point, new, tdc), c)
                targets = self._fssh_targets(c, new, torch.einsum("tijd,td->tij", new.couplings, v_new), active, step)
            elif self.method == "fssh-ba":
                tdc = self._baeck_an(energies_history)
                c = torch.where(running[:, None], self._propagate(c, point, new, tdc), c)
                targets = self._fssh_targets(c, new, tdc, active, step)
            else:
                targets = self._lz_targets(energies_history, active, s, step)
            targets = torch.where(running, targets, active)
            before = active
            v_new, active, step_hops = self._hop(targets, active, new, v_new, step, x)
            hops += step_hops
            if getattr(self.surface, "active_forces_only", False) and (active != before).any():
                rows = torch.nonzero(active != before).flatten().tolist()  # the new state's forces, for the next step
                new.forces[rows, active[rows]] = self.surface.active_forces(x, active, rows)
            if self.method != "lz" and self.decoherence is not None:
                c = self._decohere(c, new, v_new, active)
            v, point = v_new, new
            causes = {} if stop is None else stop(point, x)
            causes = causes if isinstance(causes, dict) else {"stopped": causes}
            if self.energy_tolerance is not None:
                drift = (self._total(point, v, active) - start_energy).abs()
                causes["total energy drift"] = ~(drift <= self.energy_tolerance)  # NaN included
            ended = torch.zeros_like(running)
            for reason, mask in causes.items():  # the first reason that holds is the one reported
                new = running & mask & ~ended
                for k in torch.nonzero(new).flatten().tolist():
                    reasons[k] = reason
                ended |= new
            stopped[ended] = step
            running &= ~ended
            last = step == steps or (end_when_all_stopped and not running.any())
            if step % record_every == 0 or last:
                record.add(step * self.dt, x, v, active, self._populations(c, active), point,
                           self._total(point, v, active))
            if checkpoint is not None and (last or (checkpoint_every and step % checkpoint_every == 0)):
                checkpoint(snapshot(step))
            if callback is not None:
                callback(step, running)
            if end_when_all_stopped and not running.any():
                break
        return record.ensemble(hops, stopped, reasons)

    # -- nuclei ---------------------------------------------------------------------------------
    def _evaluate(self, x: torch.Tensor, active: torch.Tensor) -> SurfacePoint:
        """The surface at ``x``; one that computes the active states' forces only is told them."""
        if getattr(self.surface, "active_forces_only", False):
            return self.surface(x, active)
        return self.surface(x)

    def _accelerations(self, point: SurfacePoint, active: torch.Tensor) -> torch.Tensor:
        forces = point.forces[torch.arange(len(active)), active]
        return forces / self.masses

    def _verlet_positions(self, x, v, point, active):
        v_half = v + 0.5 * self.dt * self._accelerations(point, active)
        return x + self.dt * v_half, v_half

    def _kinetic(self, v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.masses * v**2).sum(-1)

    def _total(self, point, v, active) -> torch.Tensor:
        return point.energies[torch.arange(len(active)), active] + self._kinetic(v)

    # -- electrons (FSSH) --------------------------------------------------------------------------
    @staticmethod
    def _time_derivative_couplings(old: SurfacePoint, new: SurfacePoint, v_old, v_new):
        """``v·d_ij`` at the midpoint of the step ``[T, S, S]``."""
        return 0.5 * (torch.einsum("tijd,td->tij", old.couplings, v_old) + torch.einsum("tijd,td->tij", new.couplings, v_new))

    def _baeck_an(self, history):
        """Baeck–An time-derivative couplings ``[T, S, S]`` from the last three steps' energies
        (zero until there are three): ``σ_ij = sqrt(Z''/Z) / 2`` for ``i < j``, ``σ_ji = -σ_ij``."""
        e = history[-1]
        if len(history) < 3:
            return torch.zeros(e.shape + e.shape[-1:], dtype=e.dtype)
        z0, z1, z2 = ((h.unsqueeze(1) - h.unsqueeze(2)).abs() for h in history)  # [T, S, S]
        curvature = (z0 - 2 * z1 + z2) / self.dt**2
        ratio = torch.where((curvature > 0) & (z1 > 0), curvature / z1.clamp_min(1e-300), torch.zeros_like(z1))
        sigma = 0.5 * torch.sqrt(ratio)
        upper = torch.triu(torch.ones_like(sigma[0], dtype=torch.bool), diagonal=1)
        return torch.where(upper, sigma, -sigma) * (~torch.eye(e.shape[-1], dtype=torch.bool))

    def _propagate(self, c, old: SurfacePoint, new: SurfacePoint, tdc):
        """``c <- exp(-i H dt) c`` with ``H = diag(E) - i v·d`` at the midpoint of the step."""
        energies = 0.5 * (old.energies + new.energies)
        H = torch.diag_embed(energies).to(torch.complex128) - 1j * tdc.to(torch.complex128)
        H = 0.5 * (H + H.conj().transpose(1, 2))  # Hermitian up to rounding
        values, vectors = torch.linalg.eigh(H)
        phase = torch.exp(-1j * values * self.dt)
        return torch.einsum("tij,tj,tkj,tk->ti", vectors, phase, vectors.conj(), c)

    def _draws(self, step: int) -> torch.Tensor:
        """``[T]`` uniform numbers in [0, 1) of this step, one per trajectory (see :meth:`run`)."""
        return counter_uniforms(self.seed, self.trajectory_ids, step)

    def _fssh_targets(self, c, point, tdc, active, step):
        """Tully's hop ``a -> b`` from the time-derivative couplings ``tdc = v·d`` ``[T, S, S]``."""
        t = torch.arange(len(active))
        ca = c[t, active]  # [T]
        # dρ_bb/dt from a: -2 Re(c_b^* c_a v·d_ba); probability of a -> b over the step
        flow = -2 * (c.conj() * ca[:, None] * tdc[t, :, active].to(c.dtype)).real  # [T, S]
        probability = (flow * self.dt / (ca.abs() ** 2).clamp_min(1e-30)[:, None]).clamp_min(0.0)
        probability[t, active] = 0.0
        cumulative = probability.cumsum(1)
        draw = self._draws(step)
        chosen = (cumulative > draw[:, None]).to(torch.long).argmax(1)
        hop = cumulative[t, -1] > draw
        return torch.where(hop, chosen, active)

    def _decohere(self, c, point, v, active):
        t = torch.arange(len(active))
        kinetic = self._kinetic(v).clamp_min(1e-30)
        gap = (point.energies - point.energies[t, active][:, None]).abs()
        tau = (1 + self.decoherence / kinetic)[:, None] / gap.clamp_min(1e-30)
        decay = torch.exp(-self.dt / tau)
        decay[t, active] = 1.0
        c = c * decay
        others = (c.abs() ** 2).sum(1) - (c[t, active].abs() ** 2)
        ca = c[t, active]
        scale = torch.sqrt((1 - others).clamp_min(0.0)) / ca.abs().clamp_min(1e-30)
        c[t, active] = ca * scale
        return c

    # -- Landau–Zener ---------------------------------------------------------------------------------
    @staticmethod
    def _neighbour_gaps(e, active, s):
        """``[T, 2]``: the gaps to the state below and above the active one (inf where none)."""
        t = torch.arange(len(active))
        below = torch.where(active > 0, (e[t, active] - e[t, (active - 1).clamp_min(0)]).abs(), torch.inf)
        above = torch.where(active < s - 1, (e[t, (active + 1).clamp_max(s - 1)] - e[t, active]).abs(), torch.inf)
        return torch.stack([below, above], 1)

    def _lz_targets(self, history, active, s, step):
        if len(history) < 3:
            return active
        # the gaps of the current active state over the last three steps: a minimum at the middle one
        z0, z1, z2 = (self._neighbour_gaps(e, active, s) for e in history)
        minimum = (z1 < z0) & (z1 < z2) & torch.isfinite(z1)
        curvature = (z0 - 2 * z1 + z2) / self.dt**2
        probability = torch.where(minimum & (curvature > 0),
                                  torch.exp(-0.5 * math.pi * torch.sqrt(z1**3 / curvature.clamp_min(1e-300))),
                                  torch.zeros_like(z1))
        draw = self._draws(step)
        down = draw < probability[:, 0]
        up = ~down & (draw < probability[:, 0] + probability[:, 1])
        return torch.where(down, active - 1, torch.where(up, active + 1, active))

    # -- hops -------------------------------------------------------------------------------------------
    def _hop(self, targets, active, point, v, step, x):
        t = torch.arange(len(active))
        attempt = targets != active
        hops = []
        if not attempt.any():
            return v, active, hops
        gap = point.energies[t, targets] - point.energies[t, active]  # energy the nuclei must give
        if self.method == "fssh":
            direction = point.couplings[t, active, targets]  # d_ab [T, D]
        else:  # no coupling vectors: along the momentum, every velocity scaled by one factor
            direction = self.masses * v
        a = 0.5 * (direction**2 / self.masses).sum(-1)
        b = (v * direction).sum(-1)
        discriminant = b**2 - 4 * a * gap
        allowed = attempt & (discriminant >= 0) & (a > 0)
        root = torch.sqrt(discriminant.clamp_min(0.0))
        gamma = torch.where(b < 0, (b + root) / (2 * a).clamp_min(1e-300), (b - root) / (2 * a).clamp_min(1e-300))
        rescaled = v - gamma[:, None] * direction / self.masses
        frustrated = attempt & ~allowed
        if self.reverse_frustrated:
            along = (b / (2 * a).clamp_min(1e-300))[:, None] * direction / self.masses
            reversed_v = v - 2 * along
            v = torch.where(frustrated[:, None], reversed_v, v)
        before = self._total(point, v, active)
        v = torch.where(allowed[:, None], rescaled, v)
        new_active = torch.where(allowed, targets, active)
        after = self._total(point, v, new_active)
        for k in torch.nonzero(attempt).flatten().tolist():
            hops.append(Hop(k, step, int(active[k]), int(targets[k]), bool(allowed[k]), float(before[k]),
                            float(after[k]), x[k].clone(), float(gap[k])))
        return v, new_active, hops

    def _populations(self, c, active):
        if self.method == "lz":  # no amplitudes: the active state
            return torch.nn.functional.one_hot(active, c.shape[1]).to(torch.float64)
        return (c.abs() ** 2).to(torch.float64)


def counter_uniforms(seed: int, ids: torch.Tensor, step: int) -> torch.Tensor:
    """Uniform numbers in [0, 1) ``[len(ids)]``, a function of ``(seed, id, step)`` alone (SplitMix64
    of a counter built from them): the same for a trajectory whatever else runs beside it."""
    with np.errstate(over="ignore"):
        golden = np.uint64(0x9E3779B97F4A7C15)
        z = (np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * golden
             + ids.numpy().astype(np.uint64) * np.uint64(0xD1B54A32D192ED03)
             + np.uint64(step) * np.uint64(0x8CB92BA72F3D8DD7) + golden)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def _hops_state(hops: list[Hop]) -> dict:
    """The hops as plain tensors (a checkpoint loads with ``weights_only=True``)."""
    return {"table": torch.tensor([[h.trajectory, h.step, h.source, h.target, int(h.accepted)] for h in hops],
                                  dtype=torch.long).reshape(-1, 5),
            "energies": torch.tensor([[h.energy_before, h.energy_after, h.gap] for h in hops],
                                     dtype=torch.float64).reshape(-1, 3),
            "positions": [h.position for h in hops]}


def _hops_from_state(state: dict) -> list[Hop]:
    return [Hop(int(t), int(step), int(a), int(b), bool(ok), float(e[0]), float(e[1]), position,
                float(e[2]) if len(e) > 2 else 0.0)
            for (t, step, a, b, ok), e, position in zip(state["table"].tolist(), state["energies"].tolist(),
                                                         state["positions"])]


class _Recorder:
    FIELDS = ("times", "positions", "velocities", "active", "populations", "energies", "total", "spreads")

    def __init__(self):
        self.rows: list[tuple] = []

    def state(self) -> dict:
        return {name: list(column) for name, column in zip(self.FIELDS, zip(*self.rows))}

    @classmethod
    def from_state(cls, state: dict) -> _Recorder:
        record = cls()
        columns = [state.get(name) or [None] * len(state["times"]) for name in cls.FIELDS]
        record.rows = list(zip(*columns))
        return record

    def add(self, time, x, v, active, populations, point, total):
        spreads = point.spreads.detach().clone() if point.spreads is not None else None
        self.rows.append((time, x.clone(), v.clone(), active.clone(), populations.clone(), point.energies.detach().clone(),
                          total.detach().clone(), spreads))

    def ensemble(self, hops, stopped, reasons) -> Ensemble:
        times, xs, vs, actives, pops, energies, totals, spreads = zip(*self.rows)
        spreads = torch.stack(spreads) if spreads[0] is not None else None
        return Ensemble(torch.tensor(times), torch.stack(xs), torch.stack(vs), torch.stack(actives), torch.stack(pops),
                        torch.stack(energies), torch.stack(totals), hops, stopped, list(reasons), spreads)


def hopping_scattering(model, k: float, method: str = "fssh", trajectories: int = 500, seed: int = 0,
                       mass: float = 2000.0, **options) -> tuple[Scattering, Ensemble]:
    """Surface hopping's answer to :func:`~tensorfuse.namd.wave_packet_scattering`: ``trajectories``
    from x = -10 on the lower state with momentum ``k`` through a one-dimensional ``model``, time step
    (20/v)/1000, until |x| > 10; the fractions transmitted and reflected on each state. ``options``
    go to :class:`SurfaceHopping` (e.g. ``decoherence=None``)."""
    if hasattr(model, "reset"):
        model.reset()
    v0 = k / mass
    x = torch.full((trajectories, 1), -10.0, dtype=torch.float64)
    v = torch.full((trajectories, 1), v0, dtype=torch.float64)
    dt = 20.0 / (v0 * 1000)
    engine = SurfaceHopping(model, [mass], method=method, dt=dt, seed=seed, **options)
    ensemble = engine.run(x, v, 0, 6 * int(20 / (v0 * dt)), record_every=10**9,
                          stop=lambda point, x: x[:, 0].abs() > 10.0)
    final_x, final_state = ensemble.positions[-1, :, 0], ensemble.active[-1]
    onehot = torch.nn.functional.one_hot(final_state, ensemble.energies.shape[-1]).to(torch.float64)
    transmitted = (onehot * (final_x > 0)[:, None]).mean(0).numpy()
    reflected = (onehot * (final_x < 0)[:, None]).mean(0).numpy()
    return Scattering(transmitted, reflected), ensemble
