"""Ab initio surface hopping of ethylene on SA2-CASSCF(2,2)/6-31G*, the reference for learned dynamics.

    python scripts/ethylene_abinitio.py initial --work runs/abinitio              # minimum, modes, Wigner
    OMP_NUM_THREADS=1 python scripts/ethylene_abinitio.py run --work runs/abinitio --worker 0 --workers 2 &
    OMP_NUM_THREADS=1 python scripts/ethylene_abinitio.py run --work runs/abinitio --worker 1 --workers 2 &

``initial`` finds the S0 minimum of the state-averaged CASSCF (BFGS on its analytic S0 gradient,
from the RHF minimum), its Hessian by central differences of that gradient (0.005 bohr), the
normal modes, and writes ``initial_conditions.xyz``: ``--count`` Wigner samples at 0 K (positions
and ASE momenta) that the learned runs share (``tensorfuse namd MODEL initial_conditions.xyz
--sampling file``). ``run`` propagates the first ``--trajectories`` of them, every ``--workers``-th
from ``--worker`` on, from S1 by FSSH (the default method, 0.5 fs) on the SA-CASSCF surface
(``tensorfuse.qm.CasscfSurface``: energies, the active state's gradient and the coupling every
step, orbitals carried along each trajectory), writing the usual `tensorfuse namd` folder
``run_<worker>`` with a checkpoint after every step: a killed worker started again resumes where it
stopped, on the same orbitals. Measured here (one core, PySCF 2.14): RHF 0.15 s, SA-CASSCF 0.07 s,
one state's gradient 3.3 s, the coupling 3.6 s: ~7 s per geometry and step (10.4 s with both
gradients), so 16 trajectories of 240 steps are ~7.5 core-hours.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HARTREE, BOHR = 27.211386245988, 0.529177210903
TWIST = "twisted: dihedral 2 0 1 4 > 90"


def s0_energy_and_gradient(symbols, x_bohr, mo=None, average: int = 2):
    """SA-CASSCF(2,2)/6-31G* S0 energy (hartree) and gradient (hartree/bohr) and the orbitals, the
    orbitals averaged over ``average`` states."""
    from pyscf import gto, mcscf, scf

    mol = gto.M(atom=list(zip(symbols, (x_bohr.reshape(-1, 3) * BOHR).tolist())), basis="6-31g*", unit="Angstrom",
                verbose=0)
    mf = scf.RHF(mol).run()
    mc = mcscf.CASSCF(mf, 2, 2).state_average_([1.0 / average] * average)
    mc.fix_spin_(ss=0, shift=1.0)
    mc.kernel(mcscf.project_init_guess(mc, mo) if mo is not None else None)
    gradient = mc.nuc_grad_method().kernel(state=0)
    return float(mc.e_states[0]), np.asarray(gradient).ravel(), mc.mo_coeff


def initial(work: Path, count: int, seed: int, average: int | None = None) -> None:
    import torch
    from ase import Atoms, units
    from ase.io import write
    from pyscf import lib
    from scipy.optimize import minimize

    from tensorfuse.namd import AMU, FS, normal_modes, wigner_sample

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from ethylene_casscf import rhf_minimum_and_modes

    lib.num_threads(1)
    symbols, rhf_minimum, *_ = rhf_minimum_and_modes()
    memory = {"mo": None}

    def energy_and_gradient(x):
        energy, gradient, memory["mo"] = s0_energy_and_gradient(symbols, x, memory["mo"], average or 2)
        return energy, gradient

    result = minimize(energy_and_gradient, rhf_minimum.ravel() / BOHR, jac=True, method="BFGS",
                      options={"gtol": 1e-5})
    x0 = result.x
    step = 0.005
    hessian = np.zeros((len(x0), len(x0)))
    for i in range(len(x0)):
        plus, minus = x0.copy(), x0.copy()
        plus[i] += step
        minus[i] -= step
        hessian[i] = (energy_and_gradient(plus)[1] - energy_and_gradient(minus)[1]) / (2 * step)
    hessian = 0.5 * (hessian + hessian.T)
    from ase.data import atomic_masses, atomic_numbers

    numbers = [atomic_numbers[s] for s in symbols]
    masses = torch.tensor(np.repeat(atomic_masses[numbers], 3) * AMU, dtype=torch.float64)
    modes = normal_modes(torch.tensor(x0), masses, torch.tensor(hessian))
    x, v = wigner_sample(modes, count, 0.0, torch.Generator().manual_seed(seed))
    frames = []
    for xk, vk in zip(x.numpy(), v.numpy()):
        atoms = Atoms(symbols, positions=xk.reshape(-1, 3) * BOHR)
        atoms.set_velocities(vk.reshape(-1, 3) * BOHR * FS / units.fs)  # a.u. -> Å/fs -> ASE units
        frames.append(atoms)
    work.mkdir(parents=True, exist_ok=True)
    write(work / "initial_conditions.xyz", frames, format="extxyz")
    minimum = Atoms(symbols, positions=x0.reshape(-1, 3) * BOHR)
    write(work / "minimum.xyz", minimum, format="extxyz")
    frequencies = (modes.frequencies.numpy() * 219474.63).round(0).tolist()
    (work / "initial.json").write_text(json.dumps({"s0_minimum_energy_hartree": float(result.fun), "count": count,
                                                   "seed": seed, "frequencies_cm": frequencies}, indent=1) + "\n")
    print(f"S0 minimum {result.fun:.8f} hartree after {result.nit} BFGS steps; frequencies (cm-1) {frequencies}; "
          f"{count} initial conditions in {work / 'initial_conditions.xyz'}")


def run(work: Path, worker: int, workers: int, trajectories: int, steps: int, average: int | None = None) -> None:
    from ase.io import read
    from pyscf import lib

    from tensorfuse.namd import resume_namd, run_ensemble
    from tensorfuse.qm import CasscfSettings, CasscfSurface

    lib.num_threads(1)
    frames = read(work / "initial_conditions.xyz", ":")[:trajectories][worker::workers]
    surface = CasscfSurface(frames[0].numbers, CasscfSettings(nstates=2, average=average))
    output = work / f"run_{worker}"
    names = ("S0", "S1")
    if (output / "checkpoint.pt").exists():
        result = resume_namd(output, steps=steps, surface=surface, names=names)
    else:
        result = run_ensemble(surface, names, frames, initial_state="S1", trajectories=len(frames), steps=steps,
                              timestep=0.5, output=output, products=(TWIST,), interval=2, checkpoint_every=1)
    print(f"worker {worker}: {result.finished} of {result.trajectories} trajectories finished; "
          f"S1 fraction at the end {result.fractions[-1][1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["initial", "run"])
    parser.add_argument("--work", default="runs/abinitio")
    parser.add_argument("--count", type=int, default=200, help="initial conditions to sample (initial)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--trajectories", type=int, default=16, help="of the initial conditions, the first so many")
    parser.add_argument("--steps", type=int, default=240, help="0.5 fs steps (240: 120 fs)")
    parser.add_argument("--average", type=int, default=None, help="states sharing the orbitals (3: SA3 orbitals, "
                        "S0/S1 dynamics; default: the two dynamic states, SA2), for both steps")
    args = parser.parse_args()
    work = Path(args.work)
    if args.step == "initial":
        initial(work, args.count, args.seed, args.average)
    else:
        run(work, args.worker, args.workers, args.trajectories, args.steps, args.average)


if __name__ == "__main__":
    main()
