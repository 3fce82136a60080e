"""Label the hot ground state that learned ethylene trajectories reach after their decay (issue 24).

The 64-channel model's trajectories stop on a hot, distorted S0 far from the crossing, where the
training data have no frames (``benchmarks/results/namd.md``). This picks geometries there from a
finished ``tensorfuse namd`` run — S0 frames in the last ``--window`` fs before each stopped
trajectory's stop, and one late S0 frame of each finished trajectory that decayed — skips
fragments (an atom farther than ``--max-neighbor`` Å from every other) and collapsed pairs, and
labels them with SA-CASSCF(2,2)/6-31G* averaged over three states (the bundled data's method),
``--workers`` single-thread processes, each label appended to the output as it completes:

    OMP_NUM_THREADS=1 python scripts/ethylene_hot_ground_state.py runs/learned_sa3_c64_30 runs/hot_s0/labels.xyz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from ase.io import read, write


def _sound(atoms, max_neighbor: float, min_distance: float) -> bool:
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    return bool(d.min(1).max() <= max_neighbor and d.min() >= min_distance)


def select(run: Path, window: float, per_stop: int, max_neighbor: float, min_distance: float, seed: int = 0):
    summary = json.loads((run / "summary.json").read_text())
    stopped = {row["trajectory"]: row for row in summary["stopped"]}
    rng = np.random.default_rng(seed)
    picked = []
    for path in sorted((run / "trajectories").glob("*.xyz")):
        index = int(path.stem)
        frames = [f for f in read(path, ":") if f.info.get("state") == "S0"
                  and _sound(f, max_neighbor, min_distance)]
        if not frames:
            continue
        if index in stopped:
            end = stopped[index]["time_fs"]
            near = [f for f in frames if end - window <= f.info["time_fs"] < end - 1.0]
            chosen = [near[k] for k in np.linspace(0, len(near) - 1, per_stop).round().astype(int)] if near else []
        else:
            late = frames[len(frames) // 2:]
            chosen = [late[int(rng.integers(len(late)))]]
        for atoms in {id(c): c for c in chosen}.values():  # one frame may be picked twice
            atoms = atoms.copy()
            atoms.info = {"sampling": "hot_s0", "group": index, "step": float(atoms.info["time_fs"])}
            atoms.set_velocities(np.zeros((len(atoms), 3)))
            picked.append(atoms)
    return picked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished tensorfuse namd output folder")
    parser.add_argument("output", help="labelled frames (extxyz), appended as they complete")
    parser.add_argument("--window", type=float, default=15.0, help="fs before a stop to pick from (default 15)")
    parser.add_argument("--per-stop", type=int, default=2, help="frames per stopped trajectory (default 2)")
    parser.add_argument("--max-neighbor", type=float, default=2.0, help="Å: skip fragments (default 2)")
    parser.add_argument("--min-distance", type=float, default=0.7, help="Å: skip collapsed pairs (default 0.7)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from tensorfuse.adaptive import CasscfLabeller
    from tensorfuse.qm import CasscfSettings

    frames = select(Path(args.run), args.window, args.per_stop, args.max_neighbor, args.min_distance)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    done = {(int(f.info["group"]), float(f.info["step"])) for f in read(output, ":")} if output.exists() else set()
    todo = [f for f in frames if (f.info["group"], f.info["step"]) not in done]  # resumable
    print(f"{len(frames)} geometries selected, {len(todo)} to label", flush=True)
    labeller = CasscfLabeller(CasscfSettings(nstates=2, average=3), names=("S0", "S1"), workers=args.workers)
    kept = 0
    for k, labelled in labeller.each(todo):
        if labelled is None:
            print(f"dropped: trajectory {todo[k].info['group']} at {todo[k].info['step']} fs", flush=True)
            continue
        labelled.info.update(todo[k].info)
        write(output, labelled, append=True)
        kept += 1
    print(f"labelled {kept} of {len(todo)}", flush=True)


if __name__ == "__main__":
    main()
