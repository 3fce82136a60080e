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
