"""Can the learned surfaces of an ensemble be trusted? Checks on the output folder of `tensorfuse namd`.

    python benchmarks/namd_checks.py runs/ethylene_namd                     # model-only checks
    OMP_NUM_THREADS=1 python benchmarks/namd_checks.py runs/ethylene_namd --reference casscf --workers 2

Printed (and written to ``checks.json`` in the folder):

* misordered frames: recorded frames (of every trajectory, up to its stop) where a state's
  energy lies below the state under it, and how many trajectories have one;
* hops down (accepted, S_k -> S_j with j < k): how many happen at a negative model gap (the
  "upper" state below the lower one), how many at a C=C twist below 30° (ethylene: dihedral
  H2-C0-C1-H4, unsigned), and the pyramidalization at the hops;
* stopped trajectories, with their reasons (``summary.json``);
* with ``--reference casscf``: SA-CASSCF(2,2)/6-31G* energies (orbitals averaged over three states,
  the bundled data's method since version 3) computed afresh at every accepted
  hop geometry down (PySCF, the bundled data's method; ``pip install -e ".[qm]"``), against the
  model's gap there: median and range of the reference gap, how many above 7 eV and below 1 eV.
  One CASSCF solve per geometry (no gradients): about a second each, one process per ``--workers``.

The twist and pyramidalization assume ethylene's atom order (C, C, H, H, H, H: H2, H3 on C0 and
H4, H5 on C1), as in the bundled data; the other checks hold for any molecule.
"""

from __future__ import annotations

import argparse
import csv
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def dihedral(p0, p1, p2, p3) -> float:
    """Unsigned dihedral angle in degrees (0-180)."""
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n0, n1 = np.cross(b0, b1), np.cross(b1, b2)
    m = np.cross(n0, b1 / np.linalg.norm(b1))
    return float(abs(np.degrees(np.arctan2(m @ n1, n0 @ n1))))


def twist(positions: np.ndarray) -> float:
    """The C=C twist of ethylene: the mean of the two H-C-C-H dihedrals of cis pairs, folded to 0-90°."""
    angles = [dihedral(positions[2], positions[0], positions[1], positions[4]),
              dihedral(positions[3], positions[0], positions[1], positions[5])]
    folded = [a if a <= 90 else 180 - a for a in angles]
    return float(np.mean(folded))


def pyramidalization(positions: np.ndarray) -> float:
    """The larger of the two carbons' out-of-plane angles: the C=C bond against the plane of the
    carbon and its two hydrogens (0° for planar sp2 carbons)."""
    angles = []
    for carbon, other, hydrogens in ((0, 1, (2, 3)), (1, 0, (4, 5))):
        normal = np.cross(positions[hydrogens[0]] - positions[carbon], positions[hydrogens[1]] - positions[carbon])
        bond = positions[other] - positions[carbon]
        sine = abs(normal @ bond) / (np.linalg.norm(normal) * np.linalg.norm(bond))
        angles.append(float(np.degrees(np.arcsin(min(sine, 1.0)))))
    return max(angles)


def _casscf_gap(item):
    symbols, positions = item
    from pyscf import lib

    from tensorfuse.qm import CasscfSettings, label_sa_casscf

    lib.num_threads(1)
    from ase import Atoms

    labels = label_sa_casscf(Atoms(symbols, positions=positions), CasscfSettings(couplings=False, average=3),
                             gradients=[])
    return float(labels.energies[1] - labels.energies[0]), bool(labels.converged)


def check(folder: Path, reference: str | None = None, workers: int = 1) -> dict:
    from ase.io import read

    summary = json.loads((folder / "summary.json").read_text())
    states = summary["states"]  # lowest first
    misordered_frames, frames, trajectories_misordered = 0, 0, 0
    for path in sorted((folder / "trajectories").glob("*.xyz")):
        bad = False
        for atoms in read(path, ":"):
            order = [atoms.info[f"energy_{s}"] for s in states]
            frames += 1
            if np.any(np.diff(order) < 0):
                misordered_frames += 1
                bad = True
        trajectories_misordered += bad
    with open(folder / "hops.csv") as f:
        hops = list(csv.DictReader(f))
    hop_file = folder / "hops.xyz"
    geometries = read(hop_file, ":") if hop_file.exists() and hop_file.stat().st_size else []
    down = [(h, g) for h, g in zip(hops, geometries or [None] * len(hops))
            if h["accepted"] == "1" and states.index(h["from"]) > states.index(h["to"])]
    gaps = np.array([-float(h["gap_eV"]) for h, _ in down]) if down and "gap_eV" in hops[0] else np.array([])
    result = {
        "trajectories": summary["trajectories"], "finished": summary.get("finished"),
        "frames": frames, "misordered_frames": misordered_frames, "trajectories_with_misordered_frames":
            trajectories_misordered,
        "stopped": summary["stopped"],
        "hops_down": len(down), "hops_down_at_negative_gap": int((gaps < 0).sum()),
        "model_gap_at_hops_down": _describe(gaps),
    }
    if geometries:
        twists = np.array([twist(g.positions) for _, g in down])
        pyramids = np.array([pyramidalization(g.positions) for _, g in down])
        result.update(hops_down_below_30_degrees_twist=int((twists < 30).sum()), twist_at_hops_down=_describe(twists),
                      pyramidalization_at_hops_down=_describe(pyramids))
    if reference == "casscf" and geometries:
        items = [(g.get_chemical_symbols(), g.positions) for _, g in down]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            solved = list(pool.map(_casscf_gap, items))
        reference_gaps = np.array([gap for gap, _ in solved])
        result.update(reference_gap_at_hops_down=_describe(reference_gaps),
                      reference_gap_above_7_eV=int((reference_gaps > 7).sum()),
                      reference_gap_below_1_eV=int((reference_gaps < 1).sum()),
                      reference_not_converged=int(sum(not ok for _, ok in solved)),
                      gap_error_at_hops_down=_describe(gaps - reference_gaps),
                      per_hop=[{"trajectory": int(h["trajectory"]), "time_fs": float(h["time_fs"]),
                                "model_gap_eV": float(m), "reference_gap_eV": float(r)}
                               for (h, _), m, r in zip(down, gaps, reference_gaps)])
    return result


def _describe(values: np.ndarray) -> dict | None:
    if not len(values):
        return None
    return {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max()),
            "count": int(len(values))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="the output folder of a `tensorfuse namd` run")
    parser.add_argument("--reference", choices=["casscf"], help="recompute the gap at every hop geometry down")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    folder = Path(args.folder)
    result = check(folder, args.reference, args.workers)
    (folder / "checks.json").write_text(json.dumps(result, indent=1) + "\n")
    printed = {k: v for k, v in result.items() if k != "per_hop"}
    print(json.dumps(printed, indent=1))


if __name__ == "__main__":
    main()
