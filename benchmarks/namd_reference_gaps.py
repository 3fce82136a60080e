"""Where a learned surface differs from the ab initio one: a model evaluated on the frames of an ab
initio surface-hopping run, its S1–S0 gap against the reference gap by region of ethylene's
C=C twist and pyramidalization, and at the reference's hop geometries.

    python benchmarks/namd_reference_gaps.py runs/excited_v3/mace-diabatic/model.pt \
        benchmarks/data/ethylene_abinitio_sa3/run_0 benchmarks/data/ethylene_abinitio_sa3/run_1 \
        --output benchmarks/results/namd_ethylene_sa3_gaps

Reads every recorded frame (``trajectories/NNNN.xyz``: positions and every state's energy) and
the accepted hops (``hops.csv``) of the run folders; prints (and writes ``OUTPUT.md``/``.json``)
the reference and model gaps, their mean signed difference (model − reference) and MAE per region,
and the same at the frames nearest to each first hop down.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from namd_checks import pyramidalization, twist  # noqa: E402

REGIONS = [("planar (twist < 30°)", lambda t, p: t < 30), ("twist 30–60°", lambda t, p: 30 <= t < 60),
           ("twisted (≥ 60°), pyramidalization < 30°", lambda t, p: t >= 60 and p < 30),
           ("twisted (≥ 60°), pyramidalized (≥ 30°)", lambda t, p: t >= 60 and p >= 30)]


def read_run(folder: Path) -> tuple[list, list]:
    """Frames (atoms with ``energy_S0``/``energy_S1`` in info, trajectory and time) and first hops down."""
    from ase.io import read

    frames = []
    for path in sorted((folder / "trajectories").glob("*.xyz")):
        for atoms in read(path, ":"):
            atoms.info["trajectory"] = f"{folder.name}/{path.stem}"
            frames.append(atoms)
    hops, seen = [], set()
    with open(folder / "hops.csv") as f:
        for row in csv.DictReader(f):
            key = f"{folder.name}/{int(row['trajectory']):04d}"
            if row["accepted"] == "1" and row["from"] == "S1" and row["to"] == "S0" and key not in seen:
                seen.add(key)
                hops.append((key, float(row["time_fs"])))
    return frames, hops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="+", help="model file(s) (several: a committee's mean) and run folders")
    parser.add_argument("--output", default=None, help="OUTPUT.md and OUTPUT.json")
    args = parser.parse_args()
    models = [a for a in args.model if a.endswith((".pt", ".pt2"))]
    folders = [Path(a) for a in args.model if not a.endswith((".pt", ".pt2"))]
    from tensorfuse.calculator import Calculator

    calculator = Calculator(models if len(models) > 1 else models[0])
    frames, hops = [], []
    for folder in folders:
        f, h = read_run(folder)
        frames += f
        hops += h
    reference, model, geometry = [], [], []
    for atoms in frames:
        reference.append(atoms.info["energy_S1"] - atoms.info["energy_S0"])
        copy = atoms.copy()
        copy.calc = calculator
        copy.get_potential_energy()
        energies = np.asarray(calculator.results["state_energies"])
        model.append(float(energies[1] - energies[0]))
        geometry.append((twist(atoms.positions), pyramidalization(atoms.positions)))
    reference, model = np.array(reference), np.array(model)
    lines = [f"Model {', '.join(models)} on {len(frames)} frames of {', '.join(map(str, folders))}: S1−S0 gap (eV)", "",
             "| region | frames | reference gap (median) | model gap (median) | model − reference (mean) | MAE |",
             "|---|---|---|---|---|---|"]
    results = {"models": models, "folders": [str(f) for f in folders], "regions": {}, "hops": []}
    for name, inside in REGIONS:
        mask = np.array([inside(t, p) for t, p in geometry])
        if not mask.any():
            continue
        diff = model[mask] - reference[mask]
        results["regions"][name] = {"frames": int(mask.sum()), "reference": float(np.median(reference[mask])),
                                    "model": float(np.median(model[mask])), "bias": float(diff.mean()),
                                    "mae": float(np.abs(diff).mean())}
        r = results["regions"][name]
        lines.append(f"| {name} | {r['frames']} | {r['reference']:.2f} | {r['model']:.2f} | {r['bias']:+.2f} | "
                     f"{r['mae']:.2f} |")
    lines += ["", "At the reference's first hop down of each trajectory (the recorded frame nearest to it):", "",
              "| trajectory | time (fs) | twist (°) | pyramidalization (°) | reference gap | model gap |", "|---" * 6 + "|"]
    for key, time in hops:
        candidates = [i for i, a in enumerate(frames) if a.info["trajectory"] == key]
        i = min(candidates, key=lambda k: abs(frames[k].info["time_fs"] - time))
        t, p = geometry[i]
        results["hops"].append({"trajectory": key, "time_fs": time, "twist": t, "pyramidalization": p,
                                "reference_gap": float(reference[i]), "model_gap": float(model[i])})
        lines.append(f"| {key} | {time:.1f} | {t:.0f} | {p:.0f} | {reference[i]:.2f} | {model[i]:.2f} |")
    if results["hops"]:
        ref_gaps = [h["reference_gap"] for h in results["hops"]]
        model_gaps = [h["model_gap"] for h in results["hops"]]
        lines += ["", f"Median gap at the hops: reference {np.median(ref_gaps):.2f} eV, model {np.median(model_gaps):.2f} eV."]
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).with_suffix(".md").write_text(text + "\n")
        Path(args.output).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
