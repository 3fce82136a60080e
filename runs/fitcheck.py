"""issue 24: a model's S1-S0 gap on the labelled intersection-region and hot-ground-state frames
(most of them in the v3 + labels training split), binned by the reference gap.

    python runs/fitcheck.py MODEL.pt
"""
import glob
import sys

import numpy as np
from ase.io import read

from tensorfuse.calculator import Calculator

frames = []
for p in sorted(glob.glob("benchmarks/data/ethylene_adaptive_sa3/iteration_*/labels/*.xyz")) + [
        "benchmarks/data/ethylene_hot_s0/labels.xyz"]:
    frames += read(p, ":")
calc = Calculator(sys.argv[1])
rows = []
for a in frames:
    calc.calculate(a, ["energy"])
    energies = calc.results["state_energies"]
    rows.append((a.info["energy_S1"] - a.info["energy_S0"], energies[1] - energies[0]))
rows = np.array(rows)
for lo, hi in ((0, 1), (1, 2), (2, 4), (4, 20)):
    m = (rows[:, 0] >= lo) & (rows[:, 0] < hi)
    print(f"ref gap {lo}-{hi} eV: {m.sum()} frames, model gap median {np.median(rows[m, 1]):.2f}, "
          f"ref median {np.median(rows[m, 0]):.2f}, MAE {np.abs(rows[m, 1] - rows[m, 0]).mean():.2f}")
