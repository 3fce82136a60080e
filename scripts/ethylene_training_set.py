"""Training frames for ethylene: a base file plus labelled frames from elsewhere (issue 24).

Appends labels (the hot ground state's, the adaptive loop's) to a training split, skipping
fragments and collapsed pairs as the labelling scripts do (a hydrogen 7–9 Å away is dissociation,
outside what SA-CASSCF(2,2) describes), and writes one extxyz file with ``config_weight`` set per
source; each frame keeps its own ``info`` (where it came from):

    python scripts/ethylene_training_set.py runs/x/data/train.xyz \\
        benchmarks/data/ethylene_hot_s0/labels.xyz "benchmarks/data/ethylene_adaptive_sa3/iteration_*/labels/*.xyz" \\
        --output runs/y/data/train.xyz
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from ase.io import read, write
from ethylene_hot_ground_state import _sound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", help="the training split the labels are added to")
    parser.add_argument("labels", nargs="+", help="labelled files (glob patterns allowed)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--weight", type=float, default=1.0, help="config_weight of the added frames (default 1)")
    parser.add_argument("--max-neighbor", type=float, default=2.0, help="Å: skip fragments (default 2)")
    parser.add_argument("--min-distance", type=float, default=0.7, help="Å: skip collapsed pairs (default 0.7)")
    args = parser.parse_args()
    frames = read(args.base, ":")
    added = skipped = 0
    for pattern in args.labels:
        paths = sorted(glob.glob(pattern)) or [pattern]
        for path in paths:
            for atoms in read(path, ":"):
                if not _sound(atoms, args.max_neighbor, args.min_distance):
                    skipped += 1
                    continue
                if args.weight != 1.0:
                    atoms.info["config_weight"] = args.weight
                frames.append(atoms)
                added += 1
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    write(args.output, frames)
    print(f"{args.output}: {len(frames)} frames ({added} added, {skipped} fragments or collapsed pairs skipped)")


if __name__ == "__main__":
    main()
