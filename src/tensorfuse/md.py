"""Molecular dynamics with a tensorfuse model through ASE's integrators (NVE, NVT, NPT).

The trajectory (extxyz) and the log are written as the run goes, so a run that is stopped, or
that stops itself because the structure explodes, keeps everything written so far.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import units

from tensorfuse.utils._progress import progress_bar

ENSEMBLES = ("nve", "nvt", "npt")


class MDExplosion(RuntimeError):
    """The simulation left the physical regime (atoms too close, NaN energy, runaway temperature)."""


class MDUncertain(MDExplosion):
    """A committee's spread crossed the limits of ``uncertainty`` (with ``stop``): the model is
    extrapolating."""


@dataclass
class MDResult:
    steps: int
    trajectory: Path
    log: Path
    ms_per_step: float
    energy_drift: float  # eV per atom, last minus first total energy (meaningful in NVE)
    uncertain_frames: int = 0  # recorded frames where a committee's spread crossed the limits
    uncertain: Path | None = None  # those frames (a committee only)


def run_md(
    calculator,
    atoms,
    ensemble: str = "nvt",
    steps: int = 1000,
    timestep: float = 0.5,
    temperature: float = 300.0,
    pressure: float = 1.0,
    friction: float = 0.01,
    output="md.xyz",
    log=None,
    interval: int = 10,
    seed: int = 0,
    min_distance: float = 0.5,
    max_temperature: float | None = None,
    progress: bool = True,
    overwrite: bool = False,
    uncertainty=None,
) -> MDResult:
    """Run MD on ``atoms`` (ASE ``Atoms``) with ``calculator`` (a :class:`tensorfuse.Calculator`).

    ``timestep`` in fs, ``temperature`` in K (initial velocities and thermostat), ``pressure`` in
    bar (NPT), ``friction`` in 1/fs (Langevin). Every ``interval`` steps a frame is appended to
    ``output`` (extxyz, with energies and forces) and a line to ``log`` (time, energies,
    temperature, pressure). Existing ``output``/``log`` files are an error unless ``overwrite``;
    either way nothing is written before the arguments, the structure and the first energy have
    been checked. Raises :class:`MDExplosion` when two atoms come closer than ``min_distance`` Å,
    the energy, positions or velocities are not finite, or the temperature exceeds
    ``max_temperature`` (default: 5 x the target plus 1000 K). ``progress``: a progress bar on stderr
    at a terminal (see :func:`tensorfuse.utils.progress_bar`).

    With a committee (a calculator of several models), every recorded frame carries the
    committee's spreads (``energy_spread``, ``gap_spread``, ``forces_spread``), and the frames where
    one crosses ``uncertainty``'s limits (:class:`~tensorfuse.model.UncertaintyLimits`, its defaults
    when ``None``) also go to ``<output>_uncertain.xyz``, ready for labelling; with
    ``uncertainty.stop`` the run stops there (:class:`MDUncertain`).
    """
    from ase.md import velocitydistribution as velocities
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT
    from ase.md.verlet import VelocityVerlet

    _check_arguments(ensemble, steps, interval, timestep, temperature, pressure, friction, atoms)
    periodic = bool(np.all(atoms.pbc))
    max_temperature = 5 * temperature + 1000.0 if max_temperature is None else max_temperature
    output = Path(output)
    log = Path(log) if log is not None else output.with_suffix(".log")
    if output.resolve() == log.resolve():
        raise ValueError(f"the trajectory and the log are the same file: {output}")
    from tensorfuse.model import UncertaintyLimits

    committee = getattr(calculator, "committee", None) is not None
    if uncertainty is not None and uncertainty.stop and not committee:
        raise ValueError("stopping on uncertainty needs a committee (two or more models): one model has no spread")
    uncertainty = uncertainty if uncertainty is not None else UncertaintyLimits()
    uncertain_path = output.with_name(output.stem + "_uncertain.xyz") if committee else None
    existing = [str(path) for path in (output, log, uncertain_path) if path is not None and path.exists()]
    if existing and not overwrite:
        raise ValueError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}: give --overwrite "
                         "to replace, or another --output/--log")

    atoms = atoms.copy()
    atoms.calc = calculator
    atoms.get_potential_energy()  # a model or structure problem shows here, before any file is touched
    rng = np.random.default_rng(seed)
    if temperature > 0:
        if hasattr(velocities, "thermalize_momenta"):  # ASE >= 3.27
            velocities.thermalize_momenta(atoms, temperature, rng=rng)
        else:
            velocities.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        velocities.Stationary(atoms)
        if not periodic and len(atoms) > 1:  # a single atom has no rotation (its inertia is zero)
            with np.errstate(invalid="ignore", divide="ignore"):  # linear molecules: one zero moment
                velocities.ZeroRotation(atoms)
    dt = timestep * units.fs
    if ensemble == "nve":
        dynamics = VelocityVerlet(atoms, dt)
    elif ensemble == "nvt":
        dynamics = Langevin(atoms, dt, temperature_K=temperature, friction=friction / units.fs, rng=rng, fixcm=False)
    else:
        dynamics = IsotropicMTKNPT(atoms, dt, temperature_K=temperature, pressure_au=pressure * units.bar,
                                   tdamp=100 * dt, pdamp=1000 * dt)

    output.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    if uncertain_path is not None:
        uncertain_path.write_text("")
    recorder = _Recorder(atoms, output, timestep, periodic, uncertainty, uncertain_path)
    with open(log, "w") as log_file, open(output, "w") as trajectory:
        log_file.write("# step  time_ps  etot_eV  epot_eV  ekin_eV  temperature_K  pressure_bar\n")

        def record(step: int) -> float:
            energy, temperature_now = recorder.write(step, log_file, trajectory)
            _check(atoms, step, energy, temperature_now, min_distance, max_temperature)
            return energy

        first_energy = last_energy = record(0)
        start = time.perf_counter()
        done = 0
        # advanced by whole intervals (the recorded steps): no work of its own between them
        with progress_bar(f"MD {ensemble}", total=steps, enabled=progress, unit="step") as bar:
            for chunk_start in range(0, steps, interval):
                count = min(interval, steps - chunk_start)
                dynamics.run(count)
                done += count
                last_energy = record(done)
                bar.update(count)
    elapsed = time.perf_counter() - start
    return MDResult(steps, output, log, 1e3 * elapsed / steps, (last_energy - first_energy) / len(atoms),
                    recorder.uncertain_frames, uncertain_path)


def _check_arguments(ensemble, steps, interval, timestep, temperature, pressure, friction, atoms) -> None:
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    for name, value in (("steps", steps), ("interval", interval)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    checks = (("timestep", timestep, "a positive number of fs", lambda x: x > 0),
              ("temperature", temperature, "a number of K >= 0", lambda x: x >= 0),
              ("friction", friction, "a number >= 0 (1/fs)", lambda x: x >= 0),
              ("pressure", pressure, "a finite number of bar", lambda x: True))
    for name, value, what, ok in checks:
        if not (math.isfinite(value) and ok(value)):
            raise ValueError(f"{name} must be {what}, got {value}")
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    periodic = bool(np.all(atoms.pbc))
    if len(atoms) == 1 and not atoms.pbc.any():
        raise ValueError("a single atom without a periodic cell has no dynamics (its momentum is removed); "
                         "give a molecule or a periodic structure")
    if ensemble == "npt" and not periodic:
        raise ValueError("NPT needs a structure periodic along all three axes (pbc=True and a cell)")


class _Recorder:
    """Writes a log line and a trajectory frame (extxyz, with energies and forces)."""

    def __init__(self, atoms, output: Path, timestep: float, periodic: bool, uncertainty=None, uncertain=None):
        self.atoms, self.output, self.timestep, self.periodic = atoms, output, timestep, periodic
        self.uncertainty, self.uncertain, self.uncertain_frames = uncertainty, uncertain, 0

    def write(self, step: int, log_file, trajectory) -> tuple[float, float]:
        from ase.io import write

        atoms, timestep = self.atoms, self.timestep
        epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
        temperature_now = ekin / (1.5 * units.kB * len(atoms))
        pressure_now = float("nan")
        if self.periodic:
            stress = atoms.get_stress(include_ideal_gas=True)
            pressure_now = -stress[:3].mean() / units.bar
        log_file.write(f"{step:7d} {step * timestep / 1000:9.4f} {epot + ekin:14.6f} {epot:14.6f} "
                       f"{ekin:12.6f} {temperature_now:10.2f} {pressure_now:12.3f}\n")
        log_file.flush()
        snapshot = atoms.copy()
        snapshot.calc = None
        snapshot.info.update(step=step, time_fs=step * timestep, energy=epot, temperature_K=temperature_now)
        snapshot.arrays["forces"] = atoms.get_forces()
        spreads = atoms.calc.results.get("committee_spreads")
        if spreads is not None:
            snapshot.info.update(energy_spread=float(spreads[0]), gap_spread=float(spreads[1]),
                                 forces_spread=float(spreads[2]))
        write(trajectory, snapshot, format="extxyz")
        trajectory.flush()
        if spreads is not None and self.uncertain is not None:
            import torch

            if bool(self.uncertainty.exceeded(torch.as_tensor(spreads).reshape(1, 3))[0]):
                self.uncertain_frames += 1
                write(self.uncertain, snapshot, format="extxyz", append=True)
                if self.uncertainty.stop:
                    raise MDUncertain(f"step {step}: the committee's spread (energy {spreads[0]:.3f} eV, gap "
                                      f"{spreads[1]:.3f} eV, forces {spreads[2]:.3f} eV/Å) crossed the limits: the "
                                      "model is extrapolating")
        return epot + ekin, temperature_now


def _check(atoms, step, energy, temperature, min_distance, max_temperature) -> None:
    from tensorfuse.data._neighbors import closest_distance

    finite = math.isfinite(energy) and np.all(np.isfinite(atoms.positions)) and np.all(np.isfinite(atoms.get_velocities()))
    if not finite:
        raise MDExplosion(f"step {step}: the energy, positions or velocities are not finite: the simulation exploded")
    if temperature > max_temperature:
        raise MDExplosion(f"step {step}: temperature {temperature:.0f} K exceeds {max_temperature:.0f} K: "
                          "the simulation is running away (time step too large, or the model is outside its data)")
    try:
        closest = closest_distance(atoms.positions, atoms.cell.array, atoms.pbc, min_distance)
    except ValueError as error:  # coordinates beyond what the neighbour search takes
        raise MDExplosion(f"step {step}: {error}: the simulation exploded") from None
    if closest < min_distance:
        raise MDExplosion(f"step {step}: two atoms are {closest:.3f} Å apart (< {min_distance} Å): "
                          "the structure collapsed")
