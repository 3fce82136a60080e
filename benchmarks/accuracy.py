"""Accuracy at an equal wall-clock budget: tensorfuse (both bases) vs MACE on rMD17.

For each molecule: 950 training and 50 validation frames drawn (seed 0) from
``rmd17_<molecule>_train_01.npz``, test on the 1000 frames of ``rmd17_<molecule>_test_01.npz``
(energies converted from kcal/mol to eV). The models have the same size: 2 layers, 64 channels,
hidden l_max 1, edge harmonics to 3, correlation 3, r_max 5 Å, 8 Bessel functions; batch 5,
Adam (AMSGrad) at lr 0.01, EMA 0.99, float64; loss = 1 x MSE of energy per atom + 100 x MSE of
force components for both (MACE's defaults), MACE's defaults otherwise.

tensorfuse stops itself at the budget (``--time-budget``). MACE has no budget option, so a
one-epoch pilot run measures its epoch time (from the timestamps of its log: start of training to
the end of the first epoch, so start-up, saving and compiling are not counted) and the real run
gets as many epochs as fit in the budget. "train min" is the time spent in training epochs
(tensorfuse: the epoch times of ``metrics.csv``; MACE: its log from the start of training to the
last epoch). Both are then tested by the same code (tensorfuse's metrics on MACE's predictions
via its ASE calculator).

"E MAE, shift refit" is the test energy MAE after one least-squares energy shift per element is
fitted to each model's training-set residuals (see ``shift_refit_errors``), the same fit for every
code. ``--rescore`` tests the models of an earlier run again without training.

Whole epochs leave MACE part of the budget unused, so two more tables read each code's validation
curve (force RMSE on the 50 validation frames after every epoch, EMA weights, as both codes log
it): at the same minutes of training (the last validation at or before each minute; minutes from
the start of training, validation included, for both) and at the same epochs (speed is where an
equal-time advantage comes from; this table shows what an epoch buys).

``tensorfuse-<basis>-reduced5`` is the reduced product basis at correlation 5 (two copies per irrep
and level, intermediate degrees capped at the hidden l_max), beside correlation 3 at equal cost.
``--lmax`` sets the hidden l_max of every model (MACE's ``--max_L``).

    python benchmarks/accuracy.py [--molecules aspirin ethanol] [--budget 60] [--impls ...] [--lmax 1] [--rescore]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from systems import RMD17  # noqa: E402

KCAL = 0.0433641043
IMPLEMENTATIONS = ("tensorfuse-cartesian", "tensorfuse-spherical", "tensorfuse-cartesian-reduced5",
                   "tensorfuse-spherical-reduced5", "mace")


def tensorfuse_model(impl: str, lmax: int) -> dict:
    """The model settings of a ``tensorfuse-<basis>[-reduced5]`` implementation (on top of MODEL)."""
    parts = impl.split("-")
    model = {"basis": parts[1], "l_max": lmax}
    if parts[2:] == ["reduced5"]:
        model["mace"] = {"product_basis": "reduced", "correlation": 5, "level_copies": 2, "l_internal": lmax}
    return model


def write_splits(molecule: str, folder: Path) -> dict:
    """extxyz train/valid/test files in eV (REF_ keys) for this molecule."""
    from ase import Atoms
    from ase.io import write

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    train = np.load(RMD17 / f"rmd17_{molecule}_train_01.npz")
    test = np.load(RMD17 / f"rmd17_{molecule}_test_01.npz")
    order = np.random.default_rng(0).permutation(len(train["energies"]))
    for split, data, idx in (("train", train, order[:950]), ("valid", train, order[950:1000]),
                             ("test", test, np.arange(len(test["energies"])))):
        frames = []
        for i in idx:
            atoms = Atoms(numbers=data["nuclear_charges"].astype(int), positions=data["coords"][i])
            atoms.info["REF_energy"] = float(data["energies"][i]) * KCAL
            atoms.arrays["REF_forces"] = data["forces"][i] * KCAL
            frames.append(atoms)
        paths[split] = folder / f"{split}.xyz"
        write(paths[split], frames, format="extxyz")
    return paths


# the model size every implementation shares (MACE's flags in _mace_command say the same)
# (correlation 3 is the MACE-style default: MODEL holds no architecture section, so that the
# Cormorant-style models of benchmarks/fusion.py share it)
MODEL = {"channels": 64, "l_max": 1, "l_max_edge": 3, "num_layers": 2, "r_max": 5.0,
         "num_bessel": 8, "radial_mlp": [64, 64, 64]}


def run_tensorfuse(model: dict, paths: dict, budget: float, output: Path) -> dict:
    """Train ``{**MODEL, **model}`` for ``budget`` minutes and test it on ``paths["test"]``."""
    from tensorfuse import TrainConfig, train

    start = time.perf_counter()
    train(TrainConfig(
        data={"train_file": str(paths["train"]), "valid_file": str(paths["valid"]),
              "energy_key": "REF_energy", "forces_key": "REF_forces"},
        model={**MODEL, **model},
        training={"max_epochs": 100000, "time_budget": budget, "batch_size": 5, "valid_batch_size": 10,
                  "lr": 0.01, "energy_weight": 1.0, "forces_weight": 100.0, "ema_decay": 0.99, "dtype": "float64",
                  "scheduler_patience": 5},
        output=str(output), overwrite=True,
    ))
    wall = time.perf_counter() - start
    predict, params = tensorfuse_predictor(output)
    with open(output / "metrics.csv") as f:
        epoch_seconds = [float(row["time_s"]) for row in csv.DictReader(f)]
    return {"wall_min": wall / 60, "train_min": sum(epoch_seconds) / 60, "epochs": len(epoch_seconds),
            "params": params, **test_errors(predict, paths["test"]), **shift_refit_errors(predict, paths)}


def tensorfuse_curve(output: Path) -> list[tuple[float, int, float]]:
    """``(minutes since the start of training, epoch, validation force RMSE in meV/Å)`` per epoch."""
    points, minutes = [], 0.0
    with open(output / "metrics.csv") as f:
        for row in csv.DictReader(f):
            minutes += float(row["time_s"]) / 60
            points.append((minutes, int(row["epoch"]), float(row["valid_f_rmse"])))
    return points


def mace_curve(run_dir: Path) -> list[tuple[float, int, float]]:
    """The same curve from a mace_run_train log (its epochs count from 0; here from 1)."""
    import re
    from datetime import datetime

    def stamp(line: str) -> datetime:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")

    lines = open(next((run_dir / "logs").glob("*[0-9].log"))).read().splitlines()
    start = stamp(next(line for line in lines if "Started training" in line))
    points = []
    for line in lines:
        match = re.search(r" INFO: Epoch (\d+):.*RMSE_F=\s*([0-9.]+) meV / A", line)
        if match:
            points.append(((stamp(line) - start).total_seconds() / 60, int(match[1]) + 1, float(match[2])))
    return points


def curve_tables(molecule: str, curves: dict, budget: float) -> list[str]:
    """Markdown rows: validation force RMSE at matched minutes and at matched epochs."""
    impls = list(curves)
    minutes = [budget * k / 6 for k in range(1, 7)]
    rows = [f"| {molecule} | minute | " + " | ".join(impls) + " |", "|" + "---|" * (2 + len(impls))]
    for m in minutes:
        cells = []
        for impl in impls:
            done = [p for p in curves[impl] if p[0] <= m + 1e-9]
            cells.append(f"{done[-1][2]:.1f} (epoch {done[-1][1]})" if done else "-")
        rows.append(f"| | {m:.1f} | " + " | ".join(cells) + " |")
    epochs = sorted({e for impl in impls for _, e, _ in curves[impl]})
    common = [e for e in epochs if all(any(p[1] == e for p in curves[impl]) for impl in impls)]
    shown = sorted({e for e in common if e & (e - 1) == 0} | set(common[-1:]))  # powers of two and the last
    rows += ["", f"| {molecule} | epoch | " + " | ".join(impls) + " |", "|" + "---|" * (2 + len(impls))]
    for e in shown:
        at = [next(p for p in curves[impl] if p[1] == e) for impl in impls]
        cells = [f"{p[2]:.1f} ({p[0]:.1f} min)" for p in at]
        rows.append(f"| | {e} | " + " | ".join(cells) + " |")
    return rows


def _mace_command(paths: dict, output: Path, epochs: int, lmax: int = 1) -> list[str]:
    return [
        str(Path(sys.executable).parent / "mace_run_train"), "--name=mace", "--seed=0", f"--work_dir={output}",
        f"--train_file={paths['train']}", f"--valid_file={paths['valid']}",
        "--energy_key=REF_energy", "--forces_key=REF_forces", "--E0s=average",
        "--model=MACE", "--num_channels=64", f"--max_L={lmax}", "--num_interactions=2", "--correlation=3",
        "--max_ell=3", "--r_max=5.0", "--num_radial_basis=8", "--num_cutoff_basis=5",
        "--batch_size=5", "--valid_batch_size=10", "--lr=0.01", f"--max_num_epochs={epochs}",
        "--ema", "--ema_decay=0.99", "--amsgrad", "--default_dtype=float64", "--device=cpu",
        "--eval_interval=1", "--save_cpu",
    ]


def _mace_training_minutes(run_dir: Path) -> float:
    """Minutes from "Started training" to the last "Epoch N:" line of a mace_run_train log."""
    from datetime import datetime

    def stamp(line: str) -> datetime:
        return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")

    lines = open(next((run_dir / "logs").glob("*[0-9].log"))).read().splitlines()
    start = stamp(next(line for line in lines if "Started training" in line))
    last = stamp([line for line in lines if " INFO: Epoch " in line][-1])
    return (last - start).total_seconds() / 60


def run_mace(paths: dict, budget: float, output: Path, lmax: int = 1) -> dict:
    import os

    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    pilot_dir = output.parent / (output.name + "_pilot")
    subprocess.run(_mace_command(paths, pilot_dir, 1, lmax), check=True, capture_output=True, env=env)
    epoch_minutes = _mace_training_minutes(pilot_dir)
    epochs = max(1, int(budget // epoch_minutes))
    start = time.perf_counter()
    subprocess.run(_mace_command(paths, output, epochs, lmax), check=True, capture_output=True, env=env)
    wall = time.perf_counter() - start
    predict, params = mace_predictor(output)
    return {"wall_min": wall / 60, "train_min": _mace_training_minutes(output), "epochs": epochs,
            "pilot_epoch_min": epoch_minutes, "params": params, **test_errors(predict, paths["test"]),
            **shift_refit_errors(predict, paths)}


def mace_predictor(output: Path):
    """``(predict(atoms) -> {"energy", "forces"}, parameter count)`` for a mace_run_train run folder."""
    import torch
    from mace.calculators import MACECalculator

    calc = MACECalculator(model_paths=str(output / "mace.model"), device="cpu", default_dtype="float64")

    def predict(atoms):
        atoms.calc = calc
        return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}

    model = torch.load(output / "mace.model", weights_only=False)
    return predict, sum(p.numel() for p in model.parameters())


def tensorfuse_predictor(output: Path):
    """``(predict(atoms) -> {"energy", "forces"}, parameter count)`` for a tensorfuse run folder."""
    from tensorfuse import load_model

    model = load_model(output / "model.pt")
    return (lambda atoms: model.predict(atoms)), sum(p.numel() for p in model.parameters())


def test_errors(predict, test_path) -> dict:
    from ase.io import read

    e_err, f_err = [], []
    for atoms in read(test_path, ":"):
        reference_e, reference_f = atoms.info["REF_energy"], atoms.arrays["REF_forces"]
        out = predict(atoms.copy())
        e_err.append(out["energy"] - reference_e)
        f_err.append(np.asarray(out["forces"]) - reference_f)
    e_err, f_err = np.array(e_err), np.concatenate(f_err).ravel()
    return {"e_mae_mev": 1e3 * np.abs(e_err).mean(), "f_mae_mev": 1e3 * np.abs(f_err).mean(),
            "e_rmse_mev": 1e3 * np.sqrt((e_err**2).mean()), "f_rmse_mev": 1e3 * np.sqrt((f_err**2).mean())}


def shift_refit_errors(predict, paths: dict) -> dict:
    """Test energy errors after one least-squares energy shift per element, fitted to the training
    energies' residuals (minimum norm where compositions cannot tell elements apart).

    Training on forces at 100:1 leaves the constant part of the energy poorly learned in a short
    run, for every code; forces do not depend on it. tensorfuse re-fits it after training (so this
    changes its numbers little); applying the same fit to every model compares the energies' shape.
    """
    from ase.io import read

    def residuals_and_counts(path):
        frames = read(path, index=":")
        elements = sorted({int(z) for atoms in frames for z in atoms.numbers})
        counts = np.array([[np.sum(atoms.numbers == z) for z in elements] for atoms in frames], dtype=float)
        residual = np.array([atoms.info["REF_energy"] - predict(atoms.copy())["energy"] for atoms in frames])
        return elements, counts, residual

    elements, counts, residual = residuals_and_counts(paths["train"])
    shift = dict(zip(elements, np.linalg.lstsq(counts, residual, rcond=None)[0]))
    test_elements, test_counts, test_residual = residuals_and_counts(paths["test"])
    error = -(test_residual - test_counts @ np.array([shift.get(z, 0.0) for z in test_elements]))
    return {"e_mae_refit_mev": 1e3 * np.abs(error).mean(), "e_rmse_refit_mev": 1e3 * np.sqrt((error**2).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecules", nargs="+", default=["aspirin", "ethanol"])
    parser.add_argument("--budget", type=float, default=60.0, help="minutes of training per model")
    parser.add_argument("--impls", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--work", default="runs/accuracy", help="folder for data, runs and results")
    parser.add_argument("--lmax", type=int, default=1, help="hidden l_max of every model")
    parser.add_argument("--rescore", action="store_true",
                        help="train nothing: test the models already in --work again (latest results.jsonl "
                             "record of each) and print the table")
    args = parser.parse_args()
    import torch

    from tensorfuse.utils import tune_malloc

    tune_malloc()
    work = Path(args.work)
    budget = "the budget of each run" if args.rescore else f"budget {args.budget:g} min of training per model"
    print(f"# rMD17, 950 train / 50 valid (train_01), tested on the 1000 frames of test_01; {budget}, "
          f"{torch.get_num_threads()} CPU thread(s), hidden l_max {args.lmax}")
    print("| molecule | model | params | epochs | train min | E MAE meV | F MAE meV/Å | E RMSE | F RMSE "
          "| E MAE, shift refit | F MAE vs MACE |")
    print("|" + "---|" * 11)
    recorded = {}
    if args.rescore:
        for line in open(work / "results.jsonl"):
            record = json.loads(line)
            recorded[record.pop("molecule"), record.pop("impl")] = record
    for molecule in args.molecules:
        paths = write_splits(molecule, work / molecule / "data")
        results = {}
        for impl in args.impls:
            out = work / molecule / impl
            try:
                if args.rescore:
                    if (molecule, impl) not in recorded:
                        continue
                    predict, params = (mace_predictor if impl == "mace" else tensorfuse_predictor)(out)
                    results[impl] = {**recorded[molecule, impl], "params": params,
                                     **test_errors(predict, paths["test"]), **shift_refit_errors(predict, paths)}
                    continue
                if impl == "mace":
                    results[impl] = run_mace(paths, args.budget, out, args.lmax)
                else:
                    results[impl] = run_tensorfuse(tensorfuse_model(impl, args.lmax), paths, args.budget, out)
            except Exception as error:  # report and continue with the other models
                print(f"# {impl} on {molecule} failed: {error}", file=sys.stderr)
                continue
            with open(work / "results.jsonl", "a") as f:
                f.write(json.dumps({"molecule": molecule, "impl": impl, **results[impl]}) + "\n")
        mace = results.get("mace")
        for impl, r in results.items():
            ratio = f"{r['f_mae_mev'] / mace['f_mae_mev']:.2f}" if mace and impl != "mace" else ""
            print(f"| {molecule} | {impl} | {r['params']:,} | {r['epochs']} | {r['train_min']:.1f} | "
                  f"{r['e_mae_mev']:.1f} | {r['f_mae_mev']:.1f} | {r['e_rmse_mev']:.1f} | {r['f_rmse_mev']:.1f} | "
                  f"{r['e_mae_refit_mev']:.1f} | {ratio} |", flush=True)
        curves = {}
        for impl in results:
            try:
                out = work / molecule / impl
                curves[impl] = mace_curve(out) if impl == "mace" else tensorfuse_curve(out)
            except (OSError, StopIteration, KeyError, ValueError) as error:
                print(f"# no validation curve for {impl} on {molecule}: {error}", file=sys.stderr)
        if curves:
            print(f"\n# validation force RMSE (meV/Å) along training, {molecule}: at matched minutes, then at "
                  "matched epochs")
            print("\n".join(curve_tables(molecule, curves, args.budget)), flush=True)


if __name__ == "__main__":
    main()
