"""The adaptive-sampling loop: committee -> ensemble -> disagreement -> labels -> data, until it settles.

Every iteration lives in ``output/iteration_<i>``: ``train.xyz`` (the data it trains on),
``member_<k>`` (training runs), ``namd`` (the ensemble), ``selected.xyz`` (the frames to label),
``labels/<n>.xyz`` (one file per label, written as it completes) and a row of ``summary.csv`` in
``output``. Each stage is skipped when its files say it is done and resumed where it stopped
otherwise (training and the ensemble from their checkpoints, labelling at the first frame without
a label file), so a kill at any moment loses no finished label or training step.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from tensorfuse.adaptive._config import AdaptiveConfig
from tensorfuse.adaptive._labellers import (
    CasscfLabeller,
    CommandLabeller,
    Labeller,
    ModelLabeller,
    callable_labeller,
)
from tensorfuse.utils._files import atomic_write

SUMMARY_FIELDS = ("iteration", "train_frames", "selected", "labelled", "trajectories", "flagged_trajectories",
                  "flagged_fraction", "median_energy_spread_eV", "median_gap_spread_eV", "median_forces_spread_eVA",
                  "lifetime_fs", "lifetime_error_fs", "populations", "population_errors", "converged")


@dataclass
class AdaptiveResult:
    output: Path
    rows: list[dict]  # one per iteration (summary.csv)
    converged: bool  # the stop rule held (else: max_iterations ran out)
    data: Path  # every labelled frame: the start data and all labels (all_data.xyz)


def make_labeller(config: AdaptiveConfig) -> Labeller:
    options = config.labeller
    if options.kind == "model":
        return ModelLabeller(options.model, config.states)
    if options.kind == "casscf":
        from tensorfuse.qm import CasscfSettings

        settings = CasscfSettings(ncas=options.ncas, nelecas=options.nelecas, nstates=len(config.states),
                                  basis=options.basis, average=options.average)
        return CasscfLabeller(settings, config.states, options.workers)
    if options.kind == "command":
        return CommandLabeller(options.command, config.states)
    return callable_labeller(options.function, config.states)


def run_adaptive(config: AdaptiveConfig, labeller: Labeller | None = None, progress: bool = False) -> AdaptiveResult:
    """Run (or go on with) the loop in ``config.output``; see the module's description."""
    from ase.io import read

    folder = Path(config.output)
    stored = folder / "adaptive.json"
    if stored.exists():
        previous = json.loads(stored.read_text())
        try:  # a setting added since the loop began reads as its default
            previous = json.loads(json.dumps(AdaptiveConfig.from_dict(previous).to_dict()))
        except (TypeError, ValueError):
            pass
        if previous != json.loads(json.dumps(config.to_dict())):
            differ = sorted(k for k in set(previous) | set(config.to_dict())
                            if previous.get(k) != json.loads(json.dumps(config.to_dict())).get(k))
            raise ValueError(f"{folder} holds a loop with other settings ({', '.join(differ)}): give another output, "
                             "or the same settings to go on with it")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(stored, lambda f: f.write(json.dumps(config.to_dict(), indent=1) + "\n"), binary=False)
    labeller = labeller or make_labeller(config)
    rows = _read_rows(folder)
    converged = bool(rows) and rows[-1]["converged"] == "1"
    start = read(config.dynamics.start, ":")
    for i in range(len(rows), config.stop.max_iterations):
        if converged:
            break
        here = folder / f"iteration_{i}"
        here.mkdir(exist_ok=True)
        data = _training_data(config, folder, i)
        models = [_member(config, here, k, data, folder / f"iteration_{i - 1}" if i else None)
                  for k in range(config.committee)]
        result = _ensemble(config, here / "namd", models, start, progress)
        row = _row(config, i, data, result, rows[-1] if rows else None)
        converged = row["converged"] == "1"
        if not converged and i + 1 < config.stop.max_iterations:  # the next iteration's data
            selected = _selected(config, here, result)
            labelled = _label(labeller, here, selected)
            row.update(selected=len(selected), labelled=sum(a is not None for a in labelled))
        rows.append({k: str(v) for k, v in row.items()})
        _write_rows(folder, rows)
    everything = _all_data(config, folder, len(rows))
    return AdaptiveResult(folder, rows, converged, everything)


# -- data -------------------------------------------------------------------------------------------------
def _labels_of(here: Path) -> list:
    from ase.io import read

    files = sorted((here / "labels").glob("*.xyz")) if (here / "labels").exists() else []
    return [read(f) for f in files if f.stat().st_size]


def _training_data(config: AdaptiveConfig, folder: Path, i: int) -> Path:
    """``iteration_<i>/train.xyz``: the start data and the labels of the iterations before."""
    from ase.io import read, write

    path = folder / f"iteration_{i}" / "train.xyz"
    if not path.exists():
        frames = read(config.data, ":")
        for j in range(i):
            frames += _labels_of(folder / f"iteration_{j}")
        atomic_write(path, lambda f: write(f, frames, format="extxyz"), binary=False)
    return path


def _all_data(config: AdaptiveConfig, folder: Path, iterations: int) -> Path:
    from ase.io import read, write

    frames = read(config.data, ":")
    for j in range(iterations):
        frames += _labels_of(folder / f"iteration_{j}")
    path = folder / "all_data.xyz"
    atomic_write(path, lambda f: write(f, frames, format="extxyz"), binary=False)
    return path


# -- the committee ------------------------------------------------------------------------------------
def _member(config: AdaptiveConfig, here: Path, k: int, data: Path, before: Path | None) -> Path:
    """Member ``k`` trained (or fine-tuned from the previous iteration's member ``k``); its model file."""
    from tensorfuse.train import train

    output = here / f"member_{k}"
    done = output / "done"
    if done.exists():
        return output / "model.pt"
    init = str(before / f"member_{k}" / "model.pt") if (before is not None and config.fine_tune) else None
    train_config = config.train_config(str(data), str(output), init, seed=k)
    resume = (output / "config.yaml").exists()  # a run killed part-way goes on from its checkpoint
    train(replace(train_config, resume=True) if resume else replace(train_config, overwrite=True))
    done.write_text("")
    return output / "model.pt"


# -- the ensemble -------------------------------------------------------------------------------------
def _ensemble(config: AdaptiveConfig, output: Path, models: list[Path], start: list, progress: bool):
    from tensorfuse.model import UncertaintyLimits
    from tensorfuse.namd import resume_namd, run_namd

    options, limits = config.dynamics, _limits(config)
    if (output / "checkpoint.pt").exists():  # killed, or finished (then read back: no step left to run)
        return resume_namd(output, progress=progress)
    frames = start if options.sampling == "file" else start[:1]
    return run_namd([str(m) for m in models], frames, initial_state=options.initial_state, method=options.method,
                    trajectories=options.trajectories, steps=options.steps, timestep=options.timestep,
                    temperature=options.temperature, seed=options.seed, output=output, sampling=options.sampling,
                    interval=options.interval, progress=progress, overwrite=True,
                    uncertainty=UncertaintyLimits(limits.energy, limits.gap, limits.forces))


def _limits(config: AdaptiveConfig):
    from tensorfuse.model import UncertaintyLimits

    s = config.selection
    return UncertaintyLimits(s.energy_spread, s.gap_spread, s.forces_spread)


# -- what to label ---------------------------------------------------------------------------------
def _selected(config: AdaptiveConfig, here: Path, result) -> list:
    """``selected.xyz``: the frames to label, written once and always read back, so that a resumed
    loop labels the very positions (as rounded in the file) an uninterrupted one does."""
    from ase.io import read, write

    path = here / "selected.xyz"
    if not path.exists():
        frames = select_frames(result, config)
        atomic_write(path, lambda f: write(f, frames, format="extxyz"), binary=False)
    return read(path, ":") if path.stat().st_size else []


def select_frames(result, config: AdaptiveConfig) -> list:
    """The recorded frames to label: over a spread limit, ranked, spread out (see
    :class:`~tensorfuse.adaptive.SelectionOptions`)."""
    from ase import Atoms

    from tensorfuse.namd import BOHR, HARTREE

    ensemble, options = result.ensemble, config.selection
    if ensemble.spreads is None:
        return []
    limits = _limits(config)
    spreads = ensemble.spreads.numpy()  # [R, T, 3]
    ratio = np.zeros(spreads.shape[:2])
    for column, limit in enumerate((limits.energy, limits.gap, limits.forces)):
        if limit is not None:
            ratio = np.maximum(ratio, spreads[..., column] / limit)
    energies = ensemble.energies.numpy() * HARTREE  # [R, T, S]
    small = (np.diff(energies, axis=-1).min(-1) < options.small_gap) if energies.shape[-1] > 1 else np.zeros_like(ratio, bool)
    score = ratio * np.where(small, 2.0, 1.0)
    stopped = ensemble.stopped.numpy()
    times = result.times_fs
    alive = (stopped[None, :] < 0) | (times[:, None] <= stopped[None, :] * result.timestep_fs + 1e-6)
    candidates = [(score[r, t], r, t) for r, t in zip(*np.nonzero((ratio > 1) & alive))]
    candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
    chosen, last_time, kept_distances = [], {}, []
    n = ensemble.positions.shape[-1] // 3
    for value, r, t in candidates:
        if len(chosen) == options.frames:
            break
        if t in last_time and any(abs(times[r] - s) < options.separation_fs for s in last_time[t]):
            continue
        positions = ensemble.positions[r, t].numpy().reshape(n, 3) * BOHR
        distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
        if options.max_neighbor_distance is not None and n > 1:
            nearest = (distances + np.diag(np.full(n, np.inf))).min(1)
            if nearest.max() > options.max_neighbor_distance:
                continue
        if any(np.sqrt(np.mean((distances - d) ** 2)) < options.min_distance for d in kept_distances):
            continue
        last_time.setdefault(t, []).append(times[r])
        kept_distances.append(distances)
        chosen.append((r, t, positions, value))
    symbols = _symbols(result)
    frames = []
    for r, t, positions, value in chosen:
        atoms = Atoms(symbols, positions=positions)
        atoms.info.update(trajectory=int(t), time_fs=float(times[r]), score=float(value),
                          energy_spread=float(spreads[r, t, 0]), gap_spread=float(spreads[r, t, 1]),
                          forces_spread=float(spreads[r, t, 2]))
        frames.append(atoms)
    return frames


def _symbols(result) -> list[str]:
    from ase.io import read

    return read(Path(result.output) / "initial_conditions.xyz", index=0).get_chemical_symbols()


def _label(labeller: Labeller, here: Path, selected: list) -> list:
    """Labels of ``selected``, one file each as it completes; those already written are kept."""
    from ase.io import read, write

    folder = here / "labels"
    folder.mkdir(exist_ok=True)
    out = [None] * len(selected)
    todo = []
    for k in range(len(selected)):
        path = folder / f"{k:05d}.xyz"
        if path.exists():  # labelled before a kill (an empty file: the labeller gave up on it)
            out[k] = read(path) if path.stat().st_size else None
        else:
            todo.append(k)
    frames = [selected[k] for k in todo]
    for position, labelled in labeller.each(frames):
        k = todo[position]
        if labelled is not None:
            labelled.info.update({key: selected[k].info[key] for key in ("trajectory", "time_fs") if key in
                                  selected[k].info}, source_iteration=here.name)
        text = io.StringIO()
        if labelled is not None:
            write(text, labelled, format="extxyz")
        atomic_write(folder / f"{k:05d}.xyz", lambda f, body=text.getvalue(): f.write(body), binary=False)
        out[k] = labelled
    return out


# -- the summary and the stop rule -------------------------------------------------------------------
def _row(config: AdaptiveConfig, i: int, data: Path, result, previous: dict | None) -> dict:
    from ase.io import read

    state = config.states.index(config.dynamics.initial_state)
    uncertain = result.uncertain or {}
    trajectories = result.trajectories
    flagged = int(uncertain.get("trajectories", 0))
    spreads = result.ensemble.spreads.numpy().reshape(-1, 3) if result.ensemble.spreads is not None else np.zeros((1, 3))
    times = np.asarray(result.times_fs)
    at = [int(np.argmin(np.abs(times - t))) for t in config.stop.times_fs]
    populations = [float(result.fractions[k, state]) for k in at]
    errors = [float(result.fraction_errors[k, state]) for k in at]
    converged = flagged / max(trajectories, 1) < config.stop.flagged_fraction
    if previous is None:
        converged = False  # nothing to compare the populations with yet
    else:
        before = json.loads(previous["populations"])
        before_errors = json.loads(previous["population_errors"])
        converged &= all(abs(p - q) < math.hypot(e, f) for p, q, e, f in zip(populations, before, errors,
                                                                                before_errors))
    lifetime = result.lifetime
    return {"iteration": i, "train_frames": len(read(data, ":")), "selected": 0, "labelled": 0,
            "trajectories": trajectories, "flagged_trajectories": flagged,
            "flagged_fraction": round(flagged / max(trajectories, 1), 4),
            "median_energy_spread_eV": round(float(np.median(spreads[:, 0])), 5),
            "median_gap_spread_eV": round(float(np.median(spreads[:, 1])), 5),
            "median_forces_spread_eVA": round(float(np.median(spreads[:, 2])), 5),
            "lifetime_fs": round(lifetime.tau, 2) if lifetime else "",
            "lifetime_error_fs": round(lifetime.tau_error, 2) if lifetime and lifetime.tau_error is not None else "",
            "populations": json.dumps([round(p, 4) for p in populations]),
            "population_errors": json.dumps([round(e, 4) for e in errors]), "converged": int(converged)}


def _read_rows(folder: Path) -> list[dict]:
    path = folder / "summary.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def _write_rows(folder: Path, rows: list[dict]) -> None:
    def write(f):
        writer = csv.DictWriter(f, fieldnames=SUMMARY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(folder / "summary.csv", write, binary=False)
