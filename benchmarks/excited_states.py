"""The fusion-block paper's experiment on our data: multi-state models of ethylene's S0 and S1.

    python benchmarks/excited_states.py --budget 8 --models mace-standard mace-fusion ...   # train (a lane)
    python benchmarks/excited_states.py --table                                            # print the table

Data: ``src/tensorfuse/datasets/ethylene_casscf.xyz`` (SA3-CASSCF(2,2)/6-31G*, S0 and S1 energies,
forces and derivative couplings), split once with seed 0 into 15 % test and, of the rest, 10 %
validation. Every model is trained by the same pipeline for the same wall-clock budget (minutes,
``--budget``) in a single thread, then tested on the test split:

* ``mace-standard``: MACE-style, symmetric product basis (correlation 3), vector coupling head;
* ``mace-gradient``: the same with SchNarc's coupling head (gradient of a learned scalar);
* ``mace-fusion``: the fusion product basis (distinct leaves, internal degrees capped at 1);
* ``cormorant-fusion``: Cormorant-style levels with a fusion block;
* ``single-S0``, ``single-S1``: single-state MACE-style models of S0 and of S1 alone.

Channels are chosen per model so that the parameter counts are as close as possible to
``mace-standard``'s (equal parameters); the budget makes the time equal. Loss: energy per atom 1,
forces 100 (each state), couplings (ΔE·d, eV/Å) 10; batch 5, lr 0.01, EMA 0.99, float64.
Results: ``--work`` (default ``runs/excited``), one folder per model with ``result.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1] / "src" / "tensorfuse" / "datasets" / "ethylene_casscf.xyz"
STATES = ["S0", "S1"]
BASE = {"l_max": 1, "l_max_edge": 2, "num_layers": 2, "r_max": 5.0, "num_bessel": 8, "radial_mlp": [32, 32],
        "basis": "cartesian"}
MODELS = {
    "mace-standard": {"couplings": "vector", "state_energies": "independent"},
    "mace-gaps": {"couplings": "vector", "state_energies": "gaps"},
    "mace-diabatic-vector": {"couplings": "vector", "state_energies": "diabatic"},
    "mace-diabatic": {"couplings": "diabatic", "state_energies": "diabatic"},
    "cormorant-diabatic": {"couplings": "diabatic", "architecture": "cormorant", "num_layers": 3,
                           "cormorant": {"fusion": True, "second_message": "distinct"}},
    "mace-gradient": {"couplings": "gradient", "state_energies": "independent"},
    "mace-fusion": {"couplings": "vector", "state_energies": "independent",
                    "mace": {"product_basis": "fusion", "fusion_leaves": "distinct", "l_internal": 1}},
    "cormorant-fusion": {"couplings": "vector", "state_energies": "independent", "architecture": "cormorant",
                         "num_layers": 3, "cormorant": {"fusion": True, "second_message": "distinct"}},
    "single-S0": {"state": "S0"},
    "single-S1": {"state": "S1"},
}
REFERENCE_CHANNELS = 32


def splits(work: Path, data: Path = DATA, extra_train: tuple[Path, ...] = ()) -> dict[str, Path]:
    """The test split (15 %, seed 0) and the rest for training, plus ``extra_train`` frames (more
    labels of the same kind: the test split stays the same)."""
    from ase.io import read, write

    frames = read(data, ":")
    order = np.random.default_rng(0).permutation(len(frames))
    n_test = int(round(0.15 * len(frames)))
    paths = {"test": work / "data" / "test.xyz", "train": work / "data" / "train.xyz"}
    paths["test"].parent.mkdir(parents=True, exist_ok=True)
    record, named = work / "data" / "extra_train.txt", "".join(f"{path}\n" for path in extra_train)
    if paths["train"].exists():  # written once (lanes running side by side read the same split)
        if (record.read_text() if record.exists() else "") != named:
            raise SystemExit(f"{paths['train']}: written with other --extra-train files ({record}); use another --work")
    else:
        record.write_text(named)
        write(paths["test"], [frames[i] for i in order[:n_test]])
        extra = [atoms for path in extra_train for atoms in read(path, ":")]
        write(paths["train"], [frames[i] for i in order[n_test:]] + extra)
    return paths


def model_section(name: str, channels: int) -> dict:
    settings = {k: v for k, v in MODELS[name].items() if k != "state"}
    return {**BASE, **settings, "channels": channels}


def parameters(name: str, channels: int) -> int:
    from tensorfuse import ModelConfig

    section = model_section(name, channels)
    states = {} if "state" in MODELS[name] else {"states": tuple(STATES)}
    return ModelConfig(species=(1, 6), **states, **section).num_parameters()


def matched_channels(name: str) -> int:
    """The channel count whose parameter count is closest to the reference model's."""
    target = parameters("mace-standard", REFERENCE_CHANNELS)
    return min(range(8, 65, 2), key=lambda c: abs(parameters(name, c) - target))


def _best_epoch(folder) -> int | None:
    results = Path(folder) / "results.json"
    return json.loads(results.read_text())["best_epoch"] if results.exists() else None


def run(name: str, paths: dict, budget: float, work: Path, energy_weight: float = 1.0, best_by: str = "loss",
        couplings_weight: float = 10.0, channels: int | None = None, l_max: int | None = None,
        lr: float = 0.01, seed: int = 0, scheduler: str = "plateau", ema_decay: float = 0.99) -> dict:
    from tensorfuse import TrainConfig, train

    channels = channels or matched_channels(name)
    section = {**model_section(name, channels), **({"l_max": l_max} if l_max is not None else {})}
    state = MODELS[name].get("state")
    if state:
        data = {"energy_key": f"energy_{state}", "forces_key": f"forces_{state}"}
        weights = {}
    else:
        data = {"states": STATES}
        weights = {"couplings_weight": couplings_weight}
    start = time.perf_counter()
    result = train(TrainConfig(
        data={"train_file": str(paths["train"]), "test_file": str(paths["test"]), "valid_fraction": 0.1, **data},
        model=section,
        training={"max_epochs": 100000, "time_budget": budget, "batch_size": 5, "lr": lr, "energy_weight": energy_weight,
                  "forces_weight": 100.0, "ema_decay": ema_decay, "dtype": "float64", "best_by": best_by, "seed": seed,
                  "scheduler": scheduler, **weights},
        output=str(work / name), overwrite=True,
    ))
    summary = {"model": name, "channels": channels, "parameters": sum(p.numel() for p in result.model.parameters()),
               "epochs": len(result.history), "minutes": (time.perf_counter() - start) / 60,
               "test": result.metrics["test"], "state": state, "energy_weight": energy_weight, "best_by": best_by,
               "couplings_weight": couplings_weight if not state else None,
               "best_epoch": _best_epoch(result.output), "l_max": section["l_max"], "lr": lr, "seed": seed,
               "scheduler": scheduler, "ema_decay": ema_decay}
    if not state:  # the couplings against the file's own vectors, rigid-body parts included
        from tensorfuse import DataConfig, evaluate

        raw = evaluate(work / name / "model.pt", paths["test"], work / name / "eval_raw", progress=False,
                       data=DataConfig(states=tuple(STATES), coupling_projection="none"))
        summary["test_raw_couplings"] = {k: v for k, v in raw.metrics.items() if k.startswith("c_")}
    (work / name / "result.json").write_text(json.dumps(summary, indent=1))
    return summary


def reference_scale(work: Path) -> dict:
    """The mean |component| of the test split's ΔE·d (meV/Å), projected (what is learned) and raw."""
    from tensorfuse import DataConfig
    from tensorfuse.train._data import read_labelled

    scale = {}
    for projection in ("rigid", "none"):
        frames, _ = read_labelled(work / "data" / "test.xyz", DataConfig(states=tuple(STATES),
                                                                          coupling_projection=projection))
        scale[projection] = 1000 * float(np.mean([np.abs(f.states.couplings[0]).mean() for f in frames]))
    return scale


def by_sampling(work: Path) -> None:
    """The coupling error of each multi-state run on the test split, by how the frames were made
    (`sampling`: Wigner points, scans, dynamics), from the run's saved test predictions."""
    from ase.io import read

    from tensorfuse import DataConfig
    from tensorfuse.train._data import read_labelled

    test = work / "data" / "test.xyz"
    reference, _ = read_labelled(test, DataConfig(states=tuple(STATES), coupling_projection="rigid"))
    kinds = [atoms.info.get("sampling", "-") for atoms in read(test, ":")]
    print("| run | sampling | frames | coupling MAE | mean |ΔE·d| | MAE / mean | share of the error |")
    print("|" + "---|" * 7)
    for path in sorted(work.glob("*/eval_raw/predictions_test.xyz")):
        predicted = [atoms.arrays["pred_coupling_S0_S1"] for atoms in read(path, ":")]
        rows = []
        for frame, p in zip(reference, predicted):
            r = np.asarray(frame.states.couplings[0])
            sign = 1.0 if ((p - r) ** 2).sum() <= ((p + r) ** 2).sum() else -1.0  # the better sign, as training's
            rows.append((np.abs(p - sign * r).mean(), np.abs(r).mean()))
        rows = np.array(rows)
        for kind in sorted(set(kinds)) + ["all"]:
            mine = rows[[k == kind or kind == "all" for k in kinds]]
            print(f"| {path.parts[-3]} | {kind} | {len(mine)} | {1000 * mine[:, 0].mean():.1f} | "
                  f"{1000 * mine[:, 1].mean():.0f} | {mine[:, 0].mean() / mine[:, 1].mean():.3f} | "
                  f"{mine[:, 0].sum() / rows[:, 0].sum():.2f} |")


def table(work: Path) -> None:
    rows = [json.loads(p.read_text()) for p in sorted(work.glob("*/result.json"))]
    order = {name: k for k, name in enumerate(MODELS)}
    rows.sort(key=lambda r: order.get(r["model"], 99))
    scale = reference_scale(work)
    print(f"mean |ΔE·d| component on the test split: {scale['rigid']:.0f} meV/Å without rigid-body parts (what is "
          f"learned), {scale['none']:.0f} with them\n")
    print("| model | params | epochs | E MAE S0 | E MAE S1 | F MAE S0 | F MAE S1 | gap MAE | coupling MAE | "
          "MAE / mean | coupling cos | cos (raw) |")
    print("|" + "---|" * 12)

    def cell(row, key, state=None):
        test = row["test"]
        if row["state"]:  # a single-state model: its own state's columns only
            if state != row["state"]:
                return "-"
            value = test.get(key.replace(f"_{state}", ""))
        else:
            value = test.get(key)
        return "-" if value is None or value != value else f"{value:.1f}" if "cos" not in key else f"{value:.3f}"

    for r in rows:
        mae = r["test"].get("c_mae_S0_S1")
        ratio = f"{mae / scale['rigid']:.2f}" if mae is not None and mae == mae and not r["state"] else "-"
        raw = r.get("test_raw_couplings", {}).get("c_cos_S0_S1")
        raw = f"{raw:.3f}" if raw is not None and raw == raw else "-"
        print(f"| {r['model']} | {r['parameters']:,} | {r['epochs']} | {cell(r, 'e_mae_S0', 'S0')} | "
              f"{cell(r, 'e_mae_S1', 'S1')} | {cell(r, 'f_mae_S0', 'S0')} | {cell(r, 'f_mae_S1', 'S1')} | "
              f"{cell(r, 'gap_mae_S0_S1')} | {cell(r, 'c_mae_S0_S1')} | {ratio} | {cell(r, 'c_cos_S0_S1')} | {raw} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=8.0, help="minutes of training per model")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--work", default="runs/excited")
    parser.add_argument("--data", default=str(DATA), help="the labelled file (split once into test and training)")
    parser.add_argument("--table", action="store_true", help="print the table of the finished runs")
    parser.add_argument("--by-sampling", action="store_true",
                        help="print the finished runs' test coupling errors by the frames' sampling")
    parser.add_argument("--energy-weight", type=float, default=1.0, help="of the energy per atom (forces: 100)")
    parser.add_argument("--couplings-weight", type=float, default=10.0, help="of the couplings (ΔE·d, eV/Å)")
    parser.add_argument("--best-by", choices=["loss", "forces", "last"], default="loss",
                        help="the epoch kept: lowest validation loss, lowest force (+ coupling) MAE, or the last")
    parser.add_argument("--channels", type=int, help="channels of every model (default: matched to the parameter "
                        f"count of mace-standard with {REFERENCE_CHANNELS})")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam's initial learning rate (default 0.01)")
    parser.add_argument("--l-max", type=int, help=f"of the node features (default {BASE['l_max']})")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed: the weights, the validation frames and the batches (the test split stays)")
    parser.add_argument("--scheduler", choices=["plateau", "cosine"], default="plateau",
                        help="learning-rate schedule: lowered on plateaus, or a cosine over the budget")
    parser.add_argument("--extra-train", nargs="+", default=[], type=Path,
                        help="labelled files added to the training split (the test split stays)")
    parser.add_argument("--ema-decay", type=float, default=0.99,
                        help="of the moving average of the weights that is validated and kept (default 0.99)")
    args = parser.parse_args()
    for path in args.extra_train:
        if not path.is_file():
            parser.error(f"--extra-train {path}: no such file")
    if not 0.0 < args.ema_decay < 1.0:
        parser.error(f"--ema-decay {args.ema_decay}: must be in (0, 1)")
    work = Path(args.work)
    if args.table or args.by_sampling:
        (by_sampling if args.by_sampling else table)(work)
        return
    import torch

    from tensorfuse.utils import tune_malloc

    torch.set_num_threads(1)
    tune_malloc()
    paths = splits(work, Path(args.data), tuple(args.extra_train))
    for name in args.models:
        summary = run(name, paths, args.budget, work, args.energy_weight, args.best_by, args.couplings_weight,
                      args.channels, args.l_max, args.lr, args.seed, args.scheduler, args.ema_decay)
        print(json.dumps({k: v for k, v in summary.items() if k != "test"}), flush=True)


if __name__ == "__main__":
    main()
