"""Generate the bundled multi-state data set: ethylene, SA3-CASSCF(2,2)/6-31G*, S0 and S1 labelled.

Three steps, each resumable (a killed step continues where it stopped):

    python scripts/ethylene_casscf.py geometries --work runs/ethylene       # sample, deterministic
    OMP_NUM_THREADS=1 python scripts/ethylene_casscf.py label --work runs/ethylene --worker 0 --workers 2 &
    OMP_NUM_THREADS=1 python scripts/ethylene_casscf.py label --work runs/ethylene --worker 1 --workers 2 &
    python scripts/ethylene_casscf.py collect --work runs/ethylene --out src/tensorfuse/datasets/ethylene_casscf.xyz
    # round 2: S1 dynamics of a committee trained on round 1, the geometries it disagrees on most
    python scripts/ethylene_casscf.py dynamics --work runs/ethylene --models M1.pt M2.pt
    OMP_NUM_THREADS=1 python scripts/ethylene_casscf.py label --work runs/ethylene --inputs dynamics_1.xyz ...

Version 2 of the bundled data (2026-12-04) relabelled the geometries of version 1 with every group
started from the RHF guess (see ``label``): write the version-1 geometries (labels dropped) to
``runs/ethylene_relabel/geometries.xyz``, then ``label --work runs/ethylene_relabel`` (two workers,
about 70 minutes on two cores) and ``collect``. Version 3 (2026-12-05) labelled the same
geometries with the orbitals averaged over three states (``label --average 3``, now the default;
``--average 2`` gives versions 1-2's SA2): ``label --work runs/ethylene_sa3`` on version 2's
geometries, 47 minutes on two cores, then ``collect``.

``geometries`` writes ``geometries.xyz``: Wigner samples at 300 K and 1000 K around the RHF/6-31G*
minimum (RHF normal modes), and scan lines through the twisted region (torsion 0-90° in 10°
steps at fixed C=C stretch, pyramidalization and a fixed random displacement per line). Later
rounds add geometries from dynamics (``--extra FILE``). ``label`` labels every ``workers``-th
scan line or Wigner point (needs PySCF: ``pip install -e ".[qm]"``), orbitals carried along each
scan line, and appends to ``labels_<worker>.xyz``. ``collect`` applies the continuity checks and
writes the data set (see ``src/tensorfuse/datasets/README.md`` for method, units and keys).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

AMU = 1822.888486  # electron masses
KB = 3.166811563e-6  # hartree / K
STATES = ("S0", "S1")


# -- geometries -----------------------------------------------------------------------------------
def rhf_minimum_and_modes():
    """RHF/6-31G* minimum of ethylene (Å) and its normal modes (mass-weighted, atomic units)."""
    from pyscf import gto, scf
    from scipy.optimize import minimize

    symbols = ["C", "C", "H", "H", "H", "H"]
    start = planar_ethylene()

    def energy_and_gradient(x):
        mol = gto.M(atom=list(zip(symbols, x.reshape(6, 3).tolist())), basis="6-31g*", unit="Angstrom", verbose=0)
        mf = scf.RHF(mol).run()
        return mf.e_tot, mf.nuc_grad_method().kernel().ravel() * 0.529177210903  # per Å

    result = minimize(energy_and_gradient, start.ravel(), jac=True, method="BFGS", options={"gtol": 1e-6})
    positions = result.x.reshape(6, 3)
    mol = gto.M(atom=list(zip(symbols, positions.tolist())), basis="6-31g*", unit="Angstrom", verbose=0)
    hessian = scf.RHF(mol).run().Hessian().kernel()  # [N, N, 3, 3], hartree/bohr^2
    masses = np.repeat(np.array([12.0, 12.0, 1.008, 1.008, 1.008, 1.008]) * AMU, 3)
    h = hessian.transpose(0, 2, 1, 3).reshape(18, 18) / np.sqrt(np.outer(masses, masses))
    values, vectors = np.linalg.eigh(h)
    keep = np.argsort(np.abs(values))[6:]  # drop translations and rotations
    return symbols, positions, np.sqrt(values[keep]), vectors[:, keep], masses


def planar_ethylene(cc=1.339, ch=1.086, hcc=121.2):
    angle = np.radians(hcc)
    positions = [[0, 0, cc / 2], [0, 0, -cc / 2]]
    for sign in (1, -1):
        for side in (1, -1):
            positions.append([0, side * ch * np.sin(angle), sign * (cc / 2 - ch * np.cos(angle))])
    return np.array(positions, dtype=float)


def wigner(positions, frequencies, modes, masses, temperature, rng, count):
    """Positions from the Wigner distribution of the harmonic modes at ``temperature`` (Å)."""
    out = []
    for _ in range(count):
        beta = 1.0 / (KB * max(temperature, 1e-9))
        sigma = np.sqrt(1.0 / (2 * frequencies) / np.tanh(frequencies * beta / 2))
        q = rng.normal(size=len(frequencies)) * sigma
        x = (modes @ q) / np.sqrt(masses) * 0.529177210903
        out.append(positions + x.reshape(-1, 3))
    return out


def distort(positions, stretch, torsion, pyramidalization):
    """Move the second CH2 group (atoms 1, 4, 5): C=C length, twist about C=C, pyramidalize."""
    x = positions.copy()
    axis = x[0] - x[1]
    axis /= np.linalg.norm(axis)
    shift = (np.linalg.norm(x[0] - x[1]) - stretch) * axis
    for i in (1, 4, 5):
        x[i] += shift
    centre = x[1]

    def rotate(points, direction, angle):
        direction = direction / np.linalg.norm(direction)
        k = np.array([[0, -direction[2], direction[1]], [direction[2], 0, -direction[0]],
                      [-direction[1], direction[0], 0]])
        r = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k
        return (points - centre) @ r.T + centre

    hh = x[5] - x[4]
    x[[4, 5]] = rotate(x[[4, 5]], hh, np.radians(pyramidalization))
    x[[4, 5]] = rotate(x[[4, 5]], axis, np.radians(torsion))
    return x


def make_geometries(work: Path, seed: int = 0) -> None:
    from ase.io import write

    symbols, minimum, frequencies, modes, masses = rhf_minimum_and_modes()
    rng = np.random.default_rng(seed)
    images = []
    for temperature, count in ((300.0, 220), (1000.0, 110)):
        for k, x in enumerate(wigner(minimum, frequencies, modes, masses, temperature, rng, count)):
            images.append(_image(symbols, x, f"wigner{temperature:.0f}", f"wigner{temperature:.0f}-{k}", 0))
    settings = [(r, p) for r in (1.34, 1.42, 1.50) for p in (0, 15, 30, 45)]
    settings += [(rng.uniform(1.30, 1.55), rng.uniform(0, 60)) for _ in range(33)]
    for line, (stretch, pyramidalization) in enumerate(settings):
        noise = rng.normal(scale=0.02, size=minimum.shape)
        for step, torsion in enumerate(range(0, 100, 10)):
            x = distort(minimum, stretch, torsion, pyramidalization) + noise
            images.append(_image(symbols, x, "scan", f"scan-{line}", step, torsion=torsion,
                                 pyramidalization=pyramidalization, stretch=stretch))
    for index, atoms in enumerate(images):
        atoms.info["index"] = index
    work.mkdir(parents=True, exist_ok=True)
    write(work / "geometries.xyz", images, format="extxyz")
    print(f"{len(images)} geometries written to {work / 'geometries.xyz'}; RHF frequencies (cm-1): "
          + " ".join(f"{w * 219474.63:.0f}" for w in sorted(frequencies)))


def _image(symbols, x, sampling, group, step, **info):
    from ase import Atoms

    atoms = Atoms(symbols, positions=x)
    atoms.info.update(sampling=sampling, group=group, step=step, **info)
    return atoms


# -- labels ---------------------------------------------------------------------------------------
def label(work: Path, worker: int, workers: int, inputs: str, average: int | None = None) -> None:
    """Label this worker's share of the groups (scan lines, trajectories, single Wigner points).

    SA-CASSCF(2,2) on ethylene has several solutions (orbital sets) a few tenths of an eV apart
    in each state at geometries a zero-point distortion away from the minimum, where they all meet.
    A start from the RHF guess finds the solution that a path of small steps from the minimum
    follows (checked on Wigner points); orbitals carried from one distorted geometry to an unrelated
    one (what the first version of this data set did for its Wigner points) land on another
    solution now and then, and the labels then mix two surfaces (forces differing by 3-6 eV/Å).
    So every Wigner point and the first point of every scan line or trajectory starts from the
    RHF guess, and the orbitals are carried along a line only, from neighbour to neighbour.
    ``average`` (3): the orbitals averaged over three states, S0 and S1 labelled (see
    ``tensorfuse.qm.CasscfSettings``: with two, π* becomes a C–H σ* orbital at many geometries).
    """
    from ase.io import read, write

    from tensorfuse.qm import CasscfSettings, label_sa_casscf

    settings = CasscfSettings(nstates=2, average=average)
    images = read(work / inputs, ":")
    groups: dict[str, list] = {}
    for atoms in images:
        groups.setdefault(atoms.info["group"], []).append(atoms)
    mine = [g for k, g in enumerate(sorted(groups, key=lambda g: groups[g][0].info["index"])) if k % workers == worker]
    output = work / f"labels_{worker}.xyz"
    done = {a.info["index"] for path in work.glob("labels_*.xyz") for a in read(path, ":")}
    for group in mine:
        previous = None  # every group starts from the RHF guess (see label's docstring)
        for atoms in sorted(groups[group], key=lambda a: a.info["step"]):
            if atoms.info["index"] in done:
                continue
            try:
                labels = label_sa_casscf(atoms, settings, mo_coeff=previous)
            except Exception as error:  # a failed solution is dropped, the scan goes on
                print(f"index {atoms.info['index']}: {type(error).__name__}: {error}", file=sys.stderr)
                previous = None
                continue
            if not group.startswith("wigner"):  # scan lines and trajectories: carry the orbitals along
                previous = labels.mo_coeff
            out = labels.to_atoms(atoms, STATES)
            out.info.update(converged=labels.converged, spin_square=labels.spin_square.tolist(),
                            open_shell_weight=labels.open_shell_weight.tolist())
            write(output, out, format="extxyz", append=True)
            print(f"index {atoms.info['index']} {group} step {atoms.info['step']}: "
                  f"E = {labels.energies.round(3).tolist()} eV", flush=True)


# -- round 2: geometries from S1 dynamics of a first model -------------------------------------------------
def dynamics(work: Path, models: list[str], trajectories: int, steps: int, keep: int, seed: int = 1) -> None:
    """Short NVE runs on S1 of a committee (mean forces) from Wigner geometries at 300 K with
    Maxwell-Boltzmann velocities; of every 10th step while the molecule is intact, the ``keep``
    geometries whose S1 forces the committee disagrees on most are written to ``dynamics.xyz``
    for labelling. (S1 relaxes from ~9.5 eV: several eV of motion, ~6000 K for six atoms.)"""
    from ase.io import read, write

    from tensorfuse.calculator import Calculator
    from tensorfuse.md import MDExplosion, run_md

    starts = [a for a in read(work / "geometries.xyz", ":") if a.info["sampling"] == "wigner300"]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(starts), size=min(trajectories, len(starts)), replace=False)
    calculator = Calculator(models, active_state="S1")
    candidates = []
    for k, index in enumerate(picked):
        atoms = starts[int(index)].copy()
        atoms.info.clear()
        output = work / "dynamics" / f"s1_{k}.xyz"
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            run_md(calculator, atoms, "nve", steps=steps, timestep=0.5, temperature=300.0, output=output,
                   interval=10, seed=seed + k, progress=False, overwrite=True, max_temperature=30000.0)  # S1 relaxes into ~6000 K of motion
        except MDExplosion as error:
            print(f"trajectory {k}: stopped: {error}", file=sys.stderr)
        for step, frame in enumerate(read(output, ":")):
            if not _intact(frame):  # past the point where the run left chemistry: no reference there
                break
            frame.calc = calculator
            frame.get_potential_energy()
            spread = float(np.abs(calculator.results["state_forces_std"]).max())
            candidates.append((spread, k, step, frame.copy()))
    candidates.sort(key=lambda c: -c[0])
    chosen = sorted(candidates[:keep], key=lambda c: (c[1], c[2]))
    round_ = 1 + len(list(work.glob("dynamics_*.xyz")))  # every round its own file and indices
    images = []
    for n, (spread, k, step, frame) in enumerate(chosen):
        frame.calc = None
        frame.info = {"sampling": "dynamics", "group": f"dynamics{round_}-{k}", "step": step,
                      "index": 100000 * round_ + n,
                      "committee_spread": spread}
        images.append(frame)
    write(work / f"dynamics_{round_}.xyz", images, format="extxyz")
    spreads = [c[0] for c in candidates]
    print(f"{len(candidates)} frames from {len(picked)} S1 trajectories; kept the {len(images)} with the largest "
          f"committee spread of S1 forces ({min(c[0] for c in chosen):.2f}-{max(spreads):.2f} eV/Å; median of all "
          f"{np.median(spreads):.2f})")


def _intact(atoms) -> bool:
    """Ethylene still in one piece: C=C below 1.8 Å, each H within 1.6 Å of a carbon, no atoms closer than 0.8 Å."""
    d = atoms.get_all_distances()
    np.fill_diagonal(d, np.inf)
    carbons = [i for i, z in enumerate(atoms.numbers) if z == 6]
    hydrogens = [i for i, z in enumerate(atoms.numbers) if z == 1]
    return (d[carbons[0], carbons[1]] < 1.8 and all(d[h, carbons].min() < 1.6 for h in hydrogens)
            and d.min() > 0.8)


# -- continuity checks and the data set ---------------------------------------------------------------
def collect(work: Path, out: Path) -> None:
    from ase.io import read, write

    frames = []
    for path in sorted(work.glob("labels_*.xyz")):
        frames += read(path, ":")
    frames.sort(key=lambda a: a.info["index"])
    minimum = min(a.info["energy_S0"] for a in frames if a.info["sampling"].startswith("wigner"))
    kept, dropped = [], {}

    def drop(atoms, why):
        dropped[why] = dropped.get(why, 0) + 1

    groups: dict[str, list] = {}
    for atoms in frames:
        groups.setdefault(atoms.info["group"], []).append(atoms)
    for group, members in groups.items():
        members.sort(key=lambda a: a.info["step"])
        previous = None
        for atoms in members:
            why = _point_problem(atoms, minimum)
            if why is None and previous is not None and group.startswith("scan"):
                why = _jump(previous, atoms)
            if why is not None:
                drop(atoms, why)
                continue
            kept.append(atoms)
            previous = atoms
    kept.sort(key=lambda a: a.info["index"])
    for atoms in kept:
        for key in ("converged", "spin_square", "open_shell_weight"):
            atoms.info.pop(key, None)
    write(out, kept, format="extxyz")
    print(f"{len(kept)} of {len(frames)} labelled geometries kept in {out}; dropped: {dropped}")


def _point_problem(atoms, minimum: float) -> str | None:
    info = atoms.info
    if not info["converged"]:
        return "CASSCF not converged"
    if max(info["spin_square"]) > 0.01:
        return "a state is not a singlet (<S^2> > 0.01)"
    if not info["energy_S1"] > info["energy_S0"]:
        return "S1 not above S0"
    if info["energy_S0"] - minimum > 8.0:
        return "S0 more than 8 eV above the minimum"
    for key in ("forces_S0", "forces_S1", "nac_S0_S1"):
        if not np.all(np.isfinite(atoms.arrays[key])):
            return f"{key} not finite"
    return None


def _jump(previous, atoms) -> str | None:
    """Along a scan line (10° steps): the states keep their character and change smoothly."""
    for state in STATES:
        step = abs(atoms.info[f"energy_{state}"] - previous.info[f"energy_{state}"])
        if step > 1.5:
            return f"{state} energy jumps by more than 1.5 eV between neighbouring scan points"
    change = np.abs(np.asarray(atoms.info["open_shell_weight"]) - np.asarray(previous.info["open_shell_weight"]))
    if change.max() > 0.5:
        return "a state's open-shell weight jumps by more than 0.5 (its character changed)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["geometries", "label", "collect", "dynamics"])
    parser.add_argument("--models", nargs="+", help="committee for the S1 dynamics of round 2")
    parser.add_argument("--trajectories", type=int, default=16)
    parser.add_argument("--steps", type=int, default=300, help="0.5 fs steps per S1 trajectory")
    parser.add_argument("--keep", type=int, default=220)
    parser.add_argument("--work", default="runs/ethylene")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--inputs", default="geometries.xyz", help="geometries to label (in --work)")
    parser.add_argument("--out", default="src/tensorfuse/datasets/ethylene_casscf.xyz")
    parser.add_argument("--seed", type=int, help="geometries: of the Wigner points, scan settings and displacements "
                        "(default 0: the bundled data); dynamics: of the starts and velocities (default 1)")
    parser.add_argument("--average", type=int, default=3, help="label: states sharing the orbitals (default 3, the "
                        "bundled data since version 3; 2: versions 1 and 2)")
    args = parser.parse_args()
    work = Path(args.work)
    if args.step == "geometries":
        make_geometries(work, 0 if args.seed is None else args.seed)
    elif args.step == "label":
        label(work, args.worker, args.workers, args.inputs, args.average)
    elif args.step == "dynamics":
        dynamics(work, args.models, args.trajectories, args.steps, args.keep, 1 if args.seed is None else args.seed)
    else:
        collect(work, Path(args.out))


if __name__ == "__main__":
    main()
