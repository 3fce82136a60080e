"""Molecular dynamics with a tensorfuse model through ASE's integrators (NVE, NVT, NPT).

The trajectory (extxyz) and the log are written as the run goes, so a run that is stopped, or
that stops itself because the structure explodes, keeps everything written so far.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import units

ENSEMBLES = ("nve", "nvt", "npt")


class MDExplosion(RuntimeError):
    """The simulation left the physical regime (atoms too close, NaN energy, runaway temperature)."""


@dataclass
class MDResult:
    steps: int
    trajectory: Path
    log: Path
    ms_per_step: float
    energy_drift: float  # eV per atom, last minus first total energy (meaningful in NVE)


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
) -> MDResult:
    """Run MD on ``atoms`` (ASE ``Atoms``) with ``calculator`` (a :class:`tensorfuse.Calculator`).

    ``timestep`` in fs, ``temperature`` in K (initial velocities and thermostat), ``pressure`` in
    bar (NPT), ``friction`` in 1/fs (Langevin). Every ``interval`` steps a frame is appended to
    ``output`` (extxyz, with energies and forces) and a line to ``log`` (time, energies,
    temperature, pressure). Raises :class:`MDExplosion` when two atoms come closer than
    ``min_distance`` Å, the energy is not finite, or the temperature exceeds ``max_temperature``
    (default: 5 x the target plus 1000 K).
    """
    from ase.io import write
    from ase.md.langevin import Langevin
    from ase.md.nose_hoover_chain import IsotropicMTKNPT
    from ase.md import velocitydistribution as velocities
    from ase.md.verlet import VelocityVerlet

    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble must be one of {ENSEMBLES}, got {ensemble!r}")
    for name, value in (("steps", steps), ("interval", interval)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not timestep > 0:
        raise ValueError(f"timestep must be a positive number of fs, got {timestep}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature}")
    periodic = bool(np.all(atoms.pbc))
    if ensemble == "npt" and not periodic:
        raise ValueError("NPT needs a structure periodic along all three axes (pbc=True and a cell)")
    max_temperature = 5 * temperature + 1000.0 if max_temperature is None else max_temperature

    atoms = atoms.copy()
    atoms.calc = calculator
    rng = np.random.default_rng(seed)
    if temperature > 0:
        if hasattr(velocities, "thermalize_momenta"):  # ASE >= 3.27
            velocities.thermalize_momenta(atoms, temperature, rng=rng)
        else:
            velocities.MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
        velocities.Stationary(atoms)
        if not periodic:
            velocities.ZeroRotation(atoms)
    dt = timestep * units.fs
    if ensemble == "nve":
        dynamics = VelocityVerlet(atoms, dt)
    elif ensemble == "nvt":
        dynamics = Langevin(atoms, dt, temperature_K=temperature, friction=friction / units.fs, rng=rng, fixcm=False)
    else:
        dynamics = IsotropicMTKNPT(atoms, dt, temperature_K=temperature, pressure_au=pressure * units.bar,
                                   tdamp=100 * dt, pdamp=1000 * dt)

    output = Path(output)
    log = Path(log) if log is not None else output.with_suffix(".log")
    output.parent.mkdir(parents=True, exist_ok=True)
    for path in (output, log):
        if path.exists():
            path.unlink()
    n = len(atoms)
    first_energy = None
    with open(log, "w") as log_file:
        log_file.write("# step  time_ps  etot_eV  epot_eV  ekin_eV  temperature_K  pressure_bar\n")

        def record(step: int):
            nonlocal first_energy
            epot, ekin = atoms.get_potential_energy(), atoms.get_kinetic_energy()
            temperature_now = ekin / (1.5 * units.kB * n)
            if first_energy is None:
                first_energy = epot + ekin
            pressure_now = float("nan")
            if periodic:
                stress = atoms.get_stress(include_ideal_gas=True)
                pressure_now = -stress[:3].mean() / units.bar
            log_file.write(f"{step:7d} {step * timestep / 1000:9.4f} {epot + ekin:14.6f} {epot:14.6f} "
                           f"{ekin:12.6f} {temperature_now:10.2f} {pressure_now:12.3f}\n")
            log_file.flush()
            snapshot = atoms.copy()
            snapshot.calc = None
            snapshot.info.update(step=step, time_fs=step * timestep, energy=epot, temperature_K=temperature_now)
            snapshot.arrays["forces"] = atoms.get_forces()
            write(str(output), snapshot, format="extxyz", append=True)
            _check(atoms, step, epot, temperature_now, min_distance, max_temperature, calculator)
            return epot + ekin

        record(0)
        start = time.perf_counter()
        last_energy = first_energy
        bar = progress and sys.stderr.isatty()
        done = 0
        for chunk_start in range(0, steps, interval):
            count = min(interval, steps - chunk_start)
            dynamics.run(count)
            done += count
            last_energy = record(done)
            if bar:
                rate = done / max(time.perf_counter() - start, 1e-9)
                sys.stderr.write(f"\rMD {ensemble} [{'#' * int(30 * done / steps):<30}] {done}/{steps} "
                                 f"steps ({rate:.1f} steps/s)")
                sys.stderr.flush()
        if bar:
            sys.stderr.write("\n")
    elapsed = time.perf_counter() - start
    return MDResult(steps, output, log, 1e3 * elapsed / steps, (last_energy - first_energy) / n)


def _check(atoms, step, energy, temperature, min_distance, max_temperature, calculator) -> None:
    if not math.isfinite(energy):
        raise MDExplosion(f"step {step}: the energy is {energy}: the simulation exploded")
    if temperature > max_temperature:
        raise MDExplosion(f"step {step}: temperature {temperature:.0f} K exceeds {max_temperature:.0f} K: "
                          "the simulation is running away (time step too large, or the model is outside its data)")
    graph = getattr(calculator, "_graph", None)
    if graph is not None and graph.num_edges:
        vectors = graph.edge_vectors(positions=_positions_like(atoms, graph), cell=_cell_like(atoms, graph))
        closest = float(vectors.norm(dim=-1).min())
        if closest < min_distance:
            raise MDExplosion(f"step {step}: two atoms are {closest:.3f} Å apart (< {min_distance} Å): "
                              "the structure collapsed")


def _positions_like(atoms, graph):
    import torch

    return torch.tensor(atoms.get_positions(), dtype=graph.positions.dtype, device=graph.positions.device)


def _cell_like(atoms, graph):
    import torch

    return torch.tensor(atoms.cell.array, dtype=graph.cell.dtype, device=graph.cell.device).unsqueeze(0)
