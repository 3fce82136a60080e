"""The `tensorfuse` command line: a thin layer over the Python API.

    tensorfuse train [CONFIG.yaml] [--train-file F] [--max-epochs N] ... [--section.key VALUE ...]
    tensorfuse eval MODEL DATA [--output DIR]
    tensorfuse selfcheck [--lmax L]
"""

from __future__ import annotations

import argparse
import sys

# plain flags -> configuration keys
TRAIN_FLAGS = {
    "train_file": "data.train_file",
    "valid_file": "data.valid_file",
    "test_file": "data.test_file",
    "energy_key": "data.energy_key",
    "forces_key": "data.forces_key",
    "stress_key": "data.stress_key",
    "energy_unit": "data.energy_unit",
    "basis": "model.basis",
    "architecture": "model.architecture",
    "product_basis": "model.product_basis",
    "preset": "model.preset",
    "max_epochs": "training.max_epochs",
    "time_budget": "training.time_budget",
    "batch_size": "training.batch_size",
    "seed": "training.seed",
    "dtype": "training.dtype",
    "output": "output",
}


def _parse_value(text: str):
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _generic_overrides(extra: list[str]) -> dict:
    """``--section.key value`` pairs (``--section.key=value`` too) from the unrecognized arguments."""
    overrides, i = {}, 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or "." not in token.split("=")[0]:
            raise ValueError(f"unknown argument {token!r} (settings without a flag are given as --section.key VALUE)")
        key, _, value = token[2:].partition("=")
        if not value:
            if i + 1 >= len(extra):
                raise ValueError(f"argument {token!r} needs a value")
            value = extra[i + 1]
            i += 1
        overrides[key.replace("-", "_")] = _parse_value(value)
        i += 1
    return overrides


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.train import TrainConfig, train

    config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
    overrides = {TRAIN_FLAGS[name]: value for name, value in vars(args).items()
                 if name in TRAIN_FLAGS and value is not None}
    if args.resume:
        overrides["resume"] = True
    overrides.update(_generic_overrides(extra))
    config = config.with_overrides(overrides)
    result = train(config)
    if result.output is not None:
        print(f"model written to {result.output / 'model.pt'}")
    return 0


def _eval(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.data._io import DataKeys
    from tensorfuse.train import evaluate, format_metrics

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    keys = DataKeys(energy=args.energy_key, forces=args.forces_key, stress=args.stress_key)
    result = evaluate(args.model, args.data, args.output, keys, args.energy_unit)
    print(format_metrics({"data": result.metrics}, f"{args.model} on {args.data}"))
    print(f"parity plot: {result.plot}\npredictions: {result.written}")
    return 0


def _md(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from ase.io import read

    from tensorfuse.calculator import Calculator
    from tensorfuse.md import MDExplosion, run_md

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    if not Path(args.structure).exists():
        raise ValueError(f"structure file {args.structure} does not exist")
    try:
        atoms = read(args.structure, index=args.frame)
    except Exception as error:
        raise ValueError(f"cannot read frame {args.frame} of {args.structure}: {error}") from None
    models = [args.model] + list(args.committee or [])
    calculator = Calculator(models if len(models) > 1 else args.model, device=args.device, dtype=args.dtype)
    log = args.log or str(Path(args.output).with_suffix(".log"))
    print(f"MD ({args.ensemble}) of {len(atoms)} atoms from {args.structure}: {args.steps} steps of "
          f"{args.timestep} fs at {args.temperature} K; trajectory {args.output}, log {log}")
    try:
        result = run_md(calculator, atoms, args.ensemble, args.steps, args.timestep, args.temperature,
                        args.pressure, args.friction, args.output, log, args.interval, args.seed)
    except MDExplosion as error:
        print(f"tensorfuse md: stopped: {error}. The trajectory up to there is in {args.output}.", file=sys.stderr)
        return 3
    print(f"done: {result.steps} steps, {result.ms_per_step:.1f} ms/step, total-energy change "
          f"{1000 * result.energy_drift:+.3f} meV/atom; {calculator.neighbor_list_builds} neighbour-list builds")
    return 0


def _export(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.export import export_model
    from tensorfuse.model._serialization import load_model

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    path = export_model(load_model(args.model), args.output)
    print(f"exported {args.model} to {path} (torch.export program; load with tensorfuse.export.load_exported "
          f"or pass it to tensorfuse.Calculator)")
    return 0


def _selfcheck(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse._selfcheck import algebra_selfcheck, format_selfcheck

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    text = format_selfcheck(algebra_selfcheck(args.lmax))
    print(text)
    return 0 if text.endswith("OK") else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tensorfuse", description="O(3)-equivariant interatomic potentials")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a potential (bundled ethanol data when no file is given)",
                           description="Train a potential. Any setting can also be given as --section.key VALUE, "
                                       "e.g. --model.channels 32 --training.lr 0.005.")
    train.add_argument("config", nargs="?", help="YAML file with data/model/training sections")
    train.add_argument("--train-file")
    train.add_argument("--valid-file")
    train.add_argument("--test-file")
    train.add_argument("--energy-key")
    train.add_argument("--forces-key")
    train.add_argument("--stress-key")
    train.add_argument("--energy-unit", help="unit of the file's energies (eV, kcal/mol, ...)")
    train.add_argument("--basis", choices=["cartesian", "spherical"])
    train.add_argument("--architecture", choices=["mace", "cormorant"])
    train.add_argument("--product-basis", help="symmetric, full, latent, contraction or fusion (MACE-style); "
                                               "power or fusion (Cormorant-style)")
    train.add_argument("--preset", choices=["small", "medium", "large"])
    train.add_argument("--max-epochs", type=int)
    train.add_argument("--time-budget", type=float, help="wall-clock budget in minutes")
    train.add_argument("--batch-size", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--dtype", choices=["float32", "float64"])
    train.add_argument("--output", help="output folder (model.pt, checkpoints, metrics.csv)")
    train.add_argument("--resume", action="store_true", help="continue from the output folder's last checkpoint")
    train.set_defaults(run=_train)

    ev = sub.add_parser("eval", help="errors of a model on labelled data, with a parity plot")
    ev.add_argument("model")
    ev.add_argument("data")
    ev.add_argument("--output", help="folder for the parity plot and predictions (default: the model's)")
    ev.add_argument("--energy-key", default="energy")
    ev.add_argument("--forces-key", default="forces")
    ev.add_argument("--stress-key", default="stress")
    ev.add_argument("--energy-unit")
    ev.set_defaults(run=_eval)

    md = sub.add_parser("md", help="run molecular dynamics with a trained model (ASE integrators)")
    md.add_argument("model", help="model file (model.pt)")
    md.add_argument("structure", help="structure file ASE can read (first frame unless --frame)")
    md.add_argument("--frame", type=int, default=0, help="which frame of the structure file (default 0)")
    md.add_argument("--ensemble", choices=["nve", "nvt", "npt"], default="nvt")
    md.add_argument("--steps", type=int, default=1000)
    md.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    md.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    md.add_argument("--pressure", type=float, default=1.0, help="bar, for NPT (default 1)")
    md.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)")
    md.add_argument("--output", default="md.xyz", help="trajectory (extxyz, default md.xyz)")
    md.add_argument("--log", help="log file (default: the trajectory name with .log)")
    md.add_argument("--interval", type=int, default=10, help="steps between frames and log lines")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--device", default="cpu")
    md.add_argument("--dtype", choices=["float32", "float64"])
    md.add_argument("--committee", nargs="+", metavar="MODEL", help="more models: report the committee spread")
    md.set_defaults(run=_md)

    ex = sub.add_parser("export", help="export a model as a torch.export program (.pt2) for deployment")
    ex.add_argument("model")
    ex.add_argument("output", help="output file, e.g. model.pt2")
    ex.set_defaults(run=_export)

    check = sub.add_parser("selfcheck", help="check the O(3) algebra in both bases and print a table")
    check.add_argument("--lmax", type=int, default=4, help="largest degree to check (default 4, at most 8)")
    check.set_defaults(run=_selfcheck)
    return parser


def _split_dotted(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separate ``--section.key VALUE`` settings from the arguments argparse knows."""
    known, dotted, i = [], [], 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--") and "." in token.split("=", 1)[0]:
            dotted.append(token)
            if "=" not in token and i + 1 < len(argv):
                dotted.append(argv[i + 1])
                i += 1
        else:
            known.append(token)
        i += 1
    return known, dotted


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    known, extra = _split_dotted(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(known)
    try:
        return args.run(args, extra)
    except KeyboardInterrupt:
        print(f"tensorfuse {args.command}: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as error:
        # user errors get one clear line, not a traceback
        print(f"tensorfuse {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
