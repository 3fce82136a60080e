"""MD speed through the ASE calculator: tensorfuse (both bases) vs MACE's calculator, and NVE drift.

Same hyperparameters as ``model_speed.py`` (2 layers, 64 channels, l_max 1 or 2, edge harmonics
to 3, correlation 3, r_max 5 Å, 8 Bessel; untrained weights, elements H, C, O, Si). Each case runs
velocity-Verlet NVE for ``--steps`` steps of 0.5 fs at 300 K in a fresh process; reported are ms
per step (after 5 warm-up steps) and the change of total energy per atom over the run. The MACE
model is saved with ``torch.save`` and loaded by ``MACECalculator`` as its users do.

    python benchmarks/md_speed.py [--systems aspirin si_512] [--lmax 1 2] [--dtypes float64 float32]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_speed import (  # noqa: E402
    COMPILED,
    average_neighbors,
    build_mace,
    build_tensorfuse,
    without_unavailable_mace,
)
from systems import SYSTEMS  # noqa: E402

IMPLEMENTATIONS = ("tensorfuse-cartesian", "tensorfuse-spherical", "mace")


def _calculator(case: dict, structures):
    import torch

    dtype = getattr(torch, case["dtype"])
    avg = average_neighbors(structures, 5.0)
    if case["impl"] == "mace":
        from mace.calculators import MACECalculator

        model, params = build_mace(case["lmax"], avg, dtype)
        path = Path(tempfile.mkdtemp()) / "mace.model"
        torch.save(model, path)  # the user's way: a pickled model file for MACECalculator
        return MACECalculator(model_paths=str(path), device="cpu", default_dtype=case["dtype"]), params
    from tensorfuse.calculator import Calculator

    model, params = build_tensorfuse(case["impl"].split("-")[1], case["lmax"], avg, dtype)
    return Calculator(model, compile=case["impl"].endswith("-compiled")), params


def run_case(case: dict) -> dict:
    import numpy as np
    import torch
    from ase import units
    from ase.md import velocitydistribution as velocities
    from ase.md.verlet import VelocityVerlet

    torch.set_num_threads(case["threads"])
    from tensorfuse.utils import tune_malloc

    tune_malloc()
    structures = SYSTEMS[case["system"]]()
    atoms = structures[0]
    calc, params = _calculator(case, [atoms])
    atoms.calc = calc
    velocities.MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.run(5)  # (a compiled calculator compiles in its first step)
    e0 = atoms.get_total_energy()
    start = time.perf_counter()
    dyn.run(case["steps"])
    ms = 1e3 * (time.perf_counter() - start) / case["steps"]
    drift = (atoms.get_total_energy() - e0) / len(atoms)
    return {**case, "atoms": len(atoms), "params": params, "ms_per_step": ms, "drift_mev_per_atom": 1e3 * drift}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["aspirin", "si_512"])
    parser.add_argument("--lmax", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS + COMPILED)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return
    args.impls = without_unavailable_mace(args.impls, "mace.calculators")
    print(f"# MD through the ASE calculator: velocity Verlet, 0.5 fs, 300 K, {args.steps} steps after 5 warm-up "
          f"steps, {args.threads} threads")
    print("| system | atoms | L | dtype | calculator | ms/step | energy change (meV/atom) | time vs MACE |")
    print("|" + "---|" * 8)
    for system in args.systems:
        for lmax in args.lmax:
            for dtype in args.dtypes:
                rows = {}
                for impl in args.impls:
                    case = dict(system=system, lmax=lmax, dtype=dtype, impl=impl, steps=args.steps, threads=args.threads)
                    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)],
                                          capture_output=True, text=True)
                    if proc.returncode != 0:
                        print(f"# {impl} {system} L={lmax} {dtype} failed: {proc.stderr.strip().splitlines()[-3:]}",
                              file=sys.stderr)
                        continue
                    rows[impl] = json.loads(proc.stdout.strip().splitlines()[-1])
                mace = rows.get("mace", {})
                for impl, r in rows.items():
                    ratio = f"{mace['ms_per_step'] / r['ms_per_step']:.1f}x faster" if mace and impl != "mace" else ""
                    print(f"| {system} | {r['atoms']} | {lmax} | {dtype} | {impl} | {r['ms_per_step']:.1f} | "
                          f"{r['drift_mev_per_atom']:+.2e} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
