"""MD speed in LAMMPS (``pair_style tensorfuse`` and ``tensorfuse lammps``'s fix external) beside the ASE calculator, same model.

The model of ``model_speed.py`` (2 layers, 64 channels, correlation 3, r_max 5 Å, untrained
weights). Each case runs NVE velocity Verlet, 0.5 fs, in a fresh process: ``ase`` is ASE's
``VelocityVerlet`` with ``tensorfuse.Calculator``; ``lammps-1`` is LAMMPS with one process;
``lammps-N`` is LAMMPS under ``mpiexec -n N`` (domain decomposition; each process evaluates its
halo of other processes' atoms, twice the receptive field deep, so small boxes pay a lot). Every
process runs one thread. Reported: ms per step after 5 warm-up steps (LAMMPS: the loop time of
``run``, measured around it), and the change of total energy per atom. ``plugin-N`` is plain
``lmp`` (``mpiexec -n N`` for N > 1) with ``pair_style tensorfuse`` and the model compiled ahead of
time (``tensorfuse export --for lammps``; compiled once per system and dtype, not timed); its time
is LAMMPS's own loop time of the timed ``run``.

    python benchmarks/lammps_speed.py [--systems aspirin si_512 water_540 si_10648] [--lmax 1]
        [--dtypes float64 float32] [--impls ase lammps-1 lammps-2 plugin-1 plugin-2] [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_speed import average_neighbors, build_tensorfuse  # noqa: E402
from systems import SYSTEMS  # noqa: E402

ELEMENTS = ["H", "C", "O", "Si"]


def lammps_ready(atoms):
    """The structure in LAMMPS's orientation (a lower-triangular cell), or as it is without a cell."""
    import numpy as np

    atoms = atoms.copy()
    if atoms.pbc.any():
        lengths_angles = atoms.cell.cellpar()
        atoms.set_cell(lengths_angles, scale_atoms=True)  # ASE's cellpar cell: a along x, b in the xy plane
        atoms.wrap()
    else:
        atoms.pbc = False
        atoms.cell = np.zeros((3, 3))
    return atoms


def run_plugin_case(case: dict, folder: Path, mpiexec: str | None) -> dict:
    """``lmp -in`` (under ``mpiexec -n N``) with the plugin: 5 warm-up steps, then ``steps`` timed."""
    import re

    import numpy as np
    from ase import units
    from ase.io import write
    from ase.md import velocitydistribution as velocities

    from tensorfuse.lammps import build_plugin, lammps_environment, lammps_executable

    atoms = lammps_ready(SYSTEMS[case["system"]]()[0])
    velocities.MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    elements = [e for e in ELEMENTS if e in set(atoms.get_chemical_symbols())]
    boundary = "p p p" if atoms.pbc.any() else "f f f"
    if not atoms.pbc.any():  # a box around the molecule for the data file
        atoms.cell = np.diag(np.ptp(atoms.positions, axis=0) + 20.0)
        atoms.positions += 10.0 - atoms.positions.min(0)
    write(folder / "structure.data", atoms, format="lammps-data", specorder=elements, masses=True, units="metal",
          velocities=True)
    steps = case["steps"]
    (folder / "in.lammps").write_text(f"""
units metal
atom_style atomic
boundary {boundary}
read_data structure.data
plugin load {build_plugin()}
pair_style tensorfuse
pair_coeff * * {case['compiled']} {' '.join(elements)}
timestep 0.0005
fix integrate all nve
thermo_style custom step pe ke etotal
thermo_modify format float %.15g
thermo 0
run 5
run {steps} pre no post no
""")
    processes = int(case["impl"].split("-")[1])
    command = [str(lammps_executable()), "-in", "in.lammps", "-log", "log.lammps", "-screen", "none"]
    if processes > 1:
        command = [mpiexec, "-n", str(processes), *command]
    proc = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                          env={**lammps_environment(), "OMP_NUM_THREADS": "1"})
    log = (folder / "log.lammps").read_text()
    if proc.returncode != 0:
        raise RuntimeError(log[-1000:] + proc.stderr[-1000:])
    loop = [float(x) for x in re.findall(r"Loop time of (\S+) on", log)][-1]
    energies = [float(line.split()[3]) for line in log.splitlines()  # thermo 0: each run's first and last step
                if len(line.split()) == 4 and line.split()[0].isdigit()]
    return {**case, "atoms": len(atoms), "ms_per_step": 1e3 * loop / steps,
            "drift_mev_per_atom": 1e3 * (energies[-1] - energies[-2]) / len(atoms)}


def run_case(case: dict) -> dict | None:
    import numpy as np
    import torch
    from ase import units
    from ase.md import velocitydistribution as velocities

    torch.set_num_threads(1)
    from tensorfuse.utils import tune_malloc

    tune_malloc()
    atoms = lammps_ready(SYSTEMS[case["system"]]()[0])
    velocities.MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    steps = case["steps"]
    if case["impl"] == "ase":
        from ase.md.verlet import VelocityVerlet

        from tensorfuse.calculator import Calculator

        atoms.calc = Calculator(case["model"], dtype=case["dtype"])
        dyn = VelocityVerlet(atoms, 0.5 * units.fs)
        dyn.run(5)
        e0 = atoms.get_total_energy()
        start = time.perf_counter()
        dyn.run(steps)
        ms = 1e3 * (time.perf_counter() - start) / steps
        return {**case, "atoms": len(atoms), "ms_per_step": ms,
                "drift_mev_per_atom": 1e3 * (atoms.get_total_energy() - e0) / len(atoms)}

    from tensorfuse.lammps import LammpsDriver, lammps_from_atoms

    elements = [e for e in ELEMENTS if e in set(atoms.get_chemical_symbols())]
    lmp = lammps_from_atoms(atoms, elements)
    LammpsDriver(lmp, case["model"], elements, dtype=case["dtype"]).attach()
    n = len(atoms)
    velocity = atoms.get_velocities() * units.fs * 1000.0  # Å/ps, LAMMPS's metal velocity unit
    lmp.scatter_atoms("v", 1, 3, (len(velocity.ravel()) * __import__("ctypes").c_double)(*velocity.ravel()))
    lmp.commands_string("timestep 0.0005\nfix integrate all nve\nthermo_style custom step pe ke etotal\nthermo 0")
    lmp.command("run 5")
    e0 = lmp.get_thermo("etotal")
    start = time.perf_counter()
    lmp.command(f"run {steps} pre no post no")
    ms = 1e3 * (time.perf_counter() - start) / steps
    drift = 1e3 * (lmp.get_thermo("etotal") - e0) / n
    rank = lmp.extract_setting("world_rank")
    lmp.close()
    if rank != 0:
        return None
    return {**case, "atoms": n, "ms_per_step": ms, "drift_mev_per_atom": drift}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["aspirin", "si_512", "water_540"])
    parser.add_argument("--lmax", type=int, nargs="+", default=[1])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--impls", nargs="+", default=["ase", "lammps-1", "lammps-2", "plugin-1", "plugin-2"])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        result = run_case(json.loads(args.case))
        if result is not None:
            print(json.dumps(result))
        return
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    folder = Path(tempfile.mkdtemp())
    print(f"# NVE velocity Verlet, 0.5 fs, 300 K, {args.steps} steps after 5 warm-up steps; one thread per process")
    print("| system | atoms | L | dtype | run by | ms/step | energy change (meV/atom) | time vs ASE |")
    print("|" + "---|" * 8)
    for system in args.systems:
        for lmax in args.lmax:
            from tensorfuse import save_model

            structures = SYSTEMS[system]()
            model, _ = build_tensorfuse("cartesian", lmax, average_neighbors(structures, 5.0), __import__("torch").float64)
            path = folder / f"{system}_l{lmax}.pt"
            save_model(model, path)
            for dtype in args.dtypes:
                rows = {}
                for impl in args.impls:
                    case = dict(system=system, lmax=lmax, dtype=dtype, impl=impl, steps=args.steps, model=str(path))
                    if impl.startswith("plugin-"):
                        compiled = folder / f"{system}_l{lmax}_{dtype}.pt2"
                        if not compiled.exists():
                            from tensorfuse import load_model
                            from tensorfuse.model import compile_model

                            compile_model(load_model(path, dtype=getattr(__import__("torch"), dtype)), compiled)
                        work = folder / f"{system}_l{lmax}_{dtype}_{impl}"
                        work.mkdir()
                        try:
                            rows[impl] = run_plugin_case({**case, "compiled": str(compiled)}, work, mpiexec)
                        except RuntimeError as error:
                            print(f"# {impl} {system} L={lmax} {dtype} failed: {error}", file=sys.stderr)
                        continue
                    command = [sys.executable, __file__, "--case", json.dumps(case)]
                    if impl.startswith("lammps-") and impl != "lammps-1":
                        command = [mpiexec, "-n", impl.split("-")[1], *command]
                    proc = subprocess.run(command, capture_output=True, text=True,
                                          env={**os.environ, "OMP_NUM_THREADS": "1"})
                    if proc.returncode != 0:
                        print(f"# {impl} {system} L={lmax} {dtype} failed: {proc.stderr.strip().splitlines()[-3:]}",
                              file=sys.stderr)
                        continue
                    rows[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
                base = rows.get("ase", {})
                for impl, r in rows.items():
                    ratio = f"{r['ms_per_step'] / base['ms_per_step']:.2f}x" if base else ""
                    print(f"| {system} | {r['atoms']} | {lmax} | {dtype} | {impl} | {r['ms_per_step']:.1f} | "
                          f"{r['drift_mev_per_atom']:+.2e} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
