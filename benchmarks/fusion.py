"""Accuracy per parameter of fusion blocks at an equal training budget, on rMD17 aspirin.

Models (all share accuracy.py's size: 64 channels, hidden l_max 1, edge harmonics to 3, 2 layers,
r_max 5 Å, 8 Bessel functions; Cartesian basis unless ``--basis``):

* ``mace-standard``: MACE-style model, ICTP's symmetric product basis (correlation 3);
* ``mace-fusion-distinct``: the same with a fusion product basis whose leaves are three distinct
  densities (own radial weights each);
* ``mace-fusion-capped``: a density-mode fusion product basis with internal degrees capped at 1
  (fewer paths and parameters: the paper's lever);
* ``cormorant``: Cormorant-style CG levels (messages, own features, self-product), 3 levels;
* ``cormorant-fusion``: the same with a fusion block in the atom level (distinct messages).

Data as in accuracy.py: 950 train / 50 valid frames of ``rmd17_aspirin_train_01``, tested on the
1000 frames of ``rmd17_aspirin_test_01`` (kcal/mol converted to eV). Every model trains for the same
wall-clock budget on this machine (2 threads) with the same optimizer settings.

    python benchmarks/fusion.py [--budget 30] [--models ...] [--molecule aspirin] [--basis cartesian]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import run_tensorfuse, write_splits  # noqa: E402

MODELS = {
    "mace-standard": {"mace": {"product_basis": "symmetric"}},
    "mace-fusion-distinct": {"mace": {"product_basis": "fusion", "fusion_leaves": "distinct"}},
    "mace-fusion-capped": {"mace": {"product_basis": "fusion", "fusion_leaves": "density", "l_internal": 1}},
    "cormorant": {"architecture": "cormorant", "num_layers": 3},
    "cormorant-fusion": {"architecture": "cormorant", "num_layers": 3,
                         "cormorant": {"fusion": True, "second_message": "distinct"}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=30.0, help="minutes of training per model")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--molecule", default="aspirin")
    parser.add_argument("--basis", default="cartesian", choices=["cartesian", "spherical"])
    parser.add_argument("--work", default="runs/fusion", help="folder for data, runs and results")
    args = parser.parse_args()
    from tensorfuse.utils import tune_malloc

    tune_malloc()
    work = Path(args.work)
    paths = write_splits(args.molecule, work / args.molecule / "data")
    print(f"# rMD17 {args.molecule}, 950 train / 50 valid (train_01), tested on the 1000 frames of test_01; "
          f"{args.basis} basis; budget {args.budget:g} min of training per model, 2 CPU threads")
    print("| model | params | epochs | train min | E MAE meV | F MAE meV/Å | E RMSE | F RMSE | params vs standard | F MAE vs standard |")
    print("|" + "---|" * 10)
    reference = None
    for name in args.models:
        model = {"basis": args.basis, **MODELS[name]}
        try:
            r = run_tensorfuse(model, paths, args.budget, work / args.molecule / f"{name}-{args.basis}")
        except Exception as error:  # report and continue with the other models
            print(f"# {name} failed: {error}", file=sys.stderr)
            continue
        with open(work / "results.jsonl", "a") as f:
            f.write(json.dumps({"molecule": args.molecule, "model": name, **model, **r}) + "\n")
        reference = reference or (r if name == "mace-standard" else None)
        ratios = (f"{r['params'] / reference['params']:.2f} | {r['f_mae_mev'] / reference['f_mae_mev']:.2f}"
                  if reference else " | ")
        print(f"| {name} | {r['params']:,} | {r['epochs']} | {r['train_min']:.1f} | {r['e_mae_mev']:.1f} | "
              f"{r['f_mae_mev']:.1f} | {r['e_rmse_mev']:.1f} | {r['f_rmse_mev']:.1f} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
