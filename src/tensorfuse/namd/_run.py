"""``run_namd``: an ensemble of surface-hopping trajectories on a learned multi-state model, from
initial conditions to the files photochemists read (eV, Å and fs outside)."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from tensorfuse.model import Committee, UncertaintyLimits
from tensorfuse.namd._analysis import Criterion, Lifetime, fit_lifetime, state_fractions
from tensorfuse.namd._hopping import METHODS, Ensemble, SurfaceHopping, _hops_from_state, _Recorder
from tensorfuse.namd._initial import hessian, minimize, normal_modes, wigner_sample
from tensorfuse.namd._model_surface import ModelSurface
from tensorfuse.namd._surfaces import BOHR, FS, HARTREE
from tensorfuse.utils._files import atomic_write
from tensorfuse.utils._progress import progress_bar

SAMPLINGS = ("wigner", "file")
OUTPUTS = ("trajectories", "populations.csv", "populations.png", "hops.csv", "hops.xyz", "summary.json",
           "initial_conditions.xyz", "uncertain.xyz", "namd.json", "checkpoint.pt")


@dataclass
class NamdResult:
    """The numbers of a run (eV, Å, fs); the files are in ``output``."""

    output: Path
    method: str
    states: tuple[str, ...]
    trajectories: int
    steps: int
    timestep_fs: float
    times_fs: np.ndarray = field(repr=False)
    fractions: np.ndarray = field(repr=False)  # [R, S] fraction of the finished trajectories on each state
    fraction_errors: np.ndarray = field(repr=False)  # [R, S] binomial standard error
    lifetime: Lifetime | None  # of the initial state
    yields: dict[str, tuple[float, float]]  # product -> (fraction, standard error) of finished trajectories
    hops_accepted: int  # of the finished trajectories
    hops_frustrated: int
    finished: int  # trajectories that ran to the end: every statistic above is over these
    stopped: list[dict]  # the others: trajectory, time_fs, reason, state, energy_change_ev
    max_energy_change_ev: float  # over the finished trajectories and steps, |E_tot(t) - E_tot(0)|
    steps_per_second: float
    uncertain: dict | None  # a committee's limits and which trajectories crossed them (None: one model)
    ensemble: Ensemble = field(repr=False)


@dataclass(frozen=True)
class NamdSettings:
    """What a run was asked to do, stored as ``namd.json`` in its folder so that ``--resume`` needs
    nothing else (the model as a file path; ``None`` for a model given as an object)."""

    model: str | list[str] | None  # a file, or a committee's files
    initial_state: int
    method: str = "fssh"
    trajectories: int = 100
    steps: int = 1000
    timestep: float = 0.5
    temperature: float = 0.0
    seed: int = 0
    sampling: str = "wigner"
    products: tuple[str, ...] = ()
    interval: int = 2
    decoherence: float | None = None
    reverse_frustrated: bool = False
    min_distance: float = 0.5
    energy_tolerance: float | None = 1.0  # eV
    dtype: str = "float64"
    device: str = "cpu"
    optimize: bool = True
    checkpoint_every: int = 100
    max_energy_spread: float | None = 0.2
    max_gap_spread: float | None = 0.2
    max_forces_spread: float | None = 1.0
    stop_uncertain: bool = False
    chunk: int | None = None  # trajectories per model call (None: all)
    share: list[int] | None = None  # [rank, size]: this run is that share of the ensemble (see run_namd)
    trajectory_offset: int = 0  # the first trajectory's number in the whole ensemble

    def __post_init__(self):
        object.__setattr__(self, "products", tuple(self.products))
        self.limits()  # checked here
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        for name in ("trajectories", "steps", "interval", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (math.isfinite(self.timestep) and self.timestep > 0):
            raise ValueError(f"timestep must be a positive number of fs, got {self.timestep}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a number of K >= 0, got {self.temperature}")
        if self.decoherence is not None and not (math.isfinite(self.decoherence) and self.decoherence >= 0):
            raise ValueError(f"the decoherence constant must be a number of hartree >= 0, got {self.decoherence}")
        if self.energy_tolerance is not None and not self.energy_tolerance > 0:
            raise ValueError(f"the energy tolerance must be a positive number of eV, got {self.energy_tolerance}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.chunk is not None and self.chunk < 1:
            raise ValueError(f"chunk must be a number of trajectories >= 1, got {self.chunk}")
        if self.share is not None:
            rank, size = self.share
            if not 0 <= rank < size:
                raise ValueError(f"share {rank} of {size}: the rank must be between 0 and {size - 1}")

    def limits(self) -> UncertaintyLimits:
        return UncertaintyLimits(self.max_energy_spread, self.max_gap_spread, self.max_forces_spread,
                                 self.stop_uncertain)


def run_namd(model, atoms, initial_state: int | str = 1, method: str = "fssh", trajectories: int = 100,
             steps: int = 1000, timestep: float = 0.5, temperature: float = 0.0, seed: int = 0,
             output="namd", sampling: str = "wigner", products: tuple[str, ...] = (), interval: int = 2,
             decoherence: float | None = None, reverse_frustrated: bool = False, min_distance: float = 0.5,
             energy_tolerance: float | None = 1.0, dtype: str = "float64", device="cpu", optimize: bool = True,
             overwrite: bool = False, progress: bool = True, checkpoint_every: int = 100,
             uncertainty: UncertaintyLimits = UncertaintyLimits(), chunk: int | None = None,
             share: tuple[int, int] | None = None) -> NamdResult:
    """Surface hopping of ``trajectories`` copies of ``atoms`` (ASE ``Atoms``; a list of frames with
    velocities for ``sampling="file"``) on ``model`` (a multi-state model or its file), all advanced
    together with one batched model call per step.

    ``sampling="wigner"``: positions and velocities from the harmonic Wigner distribution at
    ``temperature`` K (0: zero-point) of the ground state's normal modes (the model's Hessian at the
    minimum nearest to ``atoms``, found first unless ``optimize=False``); ``"file"``: the frames'
    own positions and velocities, trajectory ``k`` from frame ``k mod len(atoms)``. Every
    trajectory starts on ``initial_state`` (index or name). ``method``: ``"fssh"`` (the model's
    coupling vectors), ``"lz"`` (Landau–Zener) or ``"fssh-ba"`` (Baeck–An couplings). ``timestep``
    in fs; every ``interval`` steps a frame is recorded. ``products``: criteria such as
    ``"trans: dihedral 2 0 1 4 > 90"`` (see :class:`~tensorfuse.namd.Criterion`), counted at the
    end and measured at every hop. A trajectory whose energies or positions stop being finite, whose
    atoms come closer than ``min_distance`` Å, or whose total energy moves more than
    ``energy_tolerance`` eV from its start (``None``: no limit), is stopped and kept; the others go on.
    Every statistic (populations, the plot, the lifetime fit, yields, hops, the largest energy
    change) is over the trajectories that ran to the end; the stopped ones are reported apart
    (when, why, on which state).

    ``model`` may be a list (files or models): a committee, whose mean is the surface and whose
    spreads (per step: of every state's energy, of the gaps and of the forces) are recorded; a
    recorded frame where a spread crosses ``uncertainty``'s limits goes to ``uncertain.xyz`` (ready
    for labelling), and with ``uncertainty.stop`` its trajectory is stopped.
    Files in ``output`` (existing ones are an error unless ``overwrite``): ``trajectories/NNNN.xyz``,
    ``populations.csv``/``.png``, ``hops.csv`` and ``hops.xyz`` (each hop's geometry), ``summary.json``,
    ``initial_conditions.xyz``,
    ``uncertain.xyz`` (committees), and ``namd.json`` and ``checkpoint.pt`` (every
    ``checkpoint_every`` steps), from which :func:`resume_namd` goes on after a kill.

    ``chunk``: at most so many trajectories per model call. ``share=(rank, size)``: this process
    runs one of ``size`` contiguous blocks of the ensemble (``trajectories`` in all; the initial
    conditions of the whole, then its block) in ``output/share_<rank>_of_<size>``; rank 0 then
    waits for the others and merges the shares into ``output`` (:func:`merge_namd`). The hops'
    random numbers depend on the trajectory and the step alone, so the merged files equal those of
    one process run with ``chunk`` equal to a block's size (a batch's rounding depends on its size).
    """
    from ase import Atoms

    frames = [atoms] if isinstance(atoms, Atoms) else list(atoms)
    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    settings = NamdSettings(_model_paths(model), 0, method, trajectories, steps, timestep, temperature, seed,
                            sampling, tuple(products), interval, decoherence, reverse_frustrated, min_distance,
                            energy_tolerance, dtype, str(device), optimize, checkpoint_every, uncertainty.energy,
                            uncertainty.gap, uncertainty.forces, uncertainty.stop, chunk,
                            list(share) if share is not None else None)  # checked before any work
    _check_frames(frames, sampling)
    loaded = _load(model, settings)
    settings = replace(settings, initial_state=_state_index(initial_state, loaded.names))
    numbers = frames[0].get_atomic_numbers()
    if any(not np.array_equal(f.get_atomic_numbers(), numbers) for f in frames):
        raise ValueError("all initial frames must be the same molecule (the same elements in the same order)")
    unknown = sorted(set(numbers.tolist()) - set(loaded.model.config.species))
    if unknown:
        raise ValueError(f"element(s) with atomic number {unknown} are not in the model's species "
                         f"{sorted(loaded.model.config.species)}")
    surface = ModelSurface(loaded.model, numbers, frames[0].cell.array, frames[0].pbc, chunk=settings.chunk)
    return _start(settings, surface, loaded.names, frames, output, overwrite, progress)


def run_ensemble(surface, names, atoms, initial_state: int | str = 1, method: str = "fssh", trajectories: int = 100,
                 steps: int = 1000, timestep: float = 0.5, seed: int = 0, output="namd", products: tuple[str, ...] = (),
                 interval: int = 2, decoherence: float | None = None, reverse_frustrated: bool = False,
                 min_distance: float = 0.5, energy_tolerance: float | None = 1.0, overwrite: bool = False,
                 progress: bool = True, checkpoint_every: int = 100) -> NamdResult:
    """:func:`run_namd` on any ``surface`` (a callable ``x [T, 3N] bohr -> SurfacePoint`` with
    ``masses``, ``numbers`` and ``reset()``, e.g. :class:`tensorfuse.qm.CasscfSurface` for ab
    initio dynamics), its states named ``names``, from the frames and velocities of ``atoms``
    (trajectory ``k`` from frame ``k mod len(atoms)``). The same files; :func:`resume_namd` goes on
    with ``surface=`` the same surface."""
    from ase import Atoms

    frames = [atoms] if isinstance(atoms, Atoms) else list(atoms)
    settings = NamdSettings(None, 0, method, trajectories, steps, timestep, 0.0, seed, "file", tuple(products),
                            interval, decoherence, reverse_frustrated, min_distance, energy_tolerance,
                            checkpoint_every=checkpoint_every, max_energy_spread=None, max_gap_spread=None,
                            max_forces_spread=None)
    _check_frames(frames, "file")
    if method == "fssh" and not getattr(surface, "has_couplings", False):
        raise ValueError("FSSH needs the couplings between states: this surface has none (use method='lz')")
    settings = replace(settings, initial_state=_state_index(initial_state, tuple(names)))
    return _start(settings, surface, tuple(names), frames, output, overwrite, progress)


def _start(settings: NamdSettings, surface, names, frames, output, overwrite: bool, progress: bool) -> NamdResult:
    """Initial conditions, the run's folder, then the ensemble (or this process's share of it)."""
    numbers = frames[0].get_atomic_numbers()
    criteria = _criteria(settings, surface)
    whole, output = settings, Path(output)
    if settings.share is not None:
        rank, size = settings.share
        low, high = _block(rank, size, settings.trajectories)
        settings = replace(settings, trajectories=high - low, trajectory_offset=low)
        output = output / f"share_{rank}_of_{size}"
    existing = [name for name in OUTPUTS if (output / name).exists()]
    if existing and not overwrite:
        raise ValueError(f"{output} already holds a run ({', '.join(existing)}): give --overwrite to replace it, "
                         "--resume to go on with it, or another --output")

    sampler = torch.Generator().manual_seed(_seeds(settings.seed)[0])
    x, v = _initial_conditions(surface, frames, whole.trajectories, settings.sampling, settings.temperature,
                               sampler, settings.optimize)  # the whole ensemble's, then this share's
    block = slice(settings.trajectory_offset, settings.trajectory_offset + settings.trajectories)
    x, v = x[block], v[block]

    output.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:  # nothing of an earlier run stays to be mixed with this one
        _remove(output / name)
    atomic_write(output / "namd.json", lambda f: f.write(json.dumps(asdict(settings), indent=1) + "\n"),
                 binary=False)
    _write_initial(output / "initial_conditions.xyz", numbers, frames[0], x, v)
    result = _propagate(settings, surface, names, criteria, output, progress, x=x, v=v)
    if settings.share is not None and settings.share[0] == 0:
        return merge_namd(output.parent, settings.share[1])
    return result


def resume_namd(output, steps: int | None = None, model=None, progress: bool = True, surface=None,
                names=None) -> NamdResult:
    """Go on with the run in ``output`` from its last checkpoint, with its stored settings (``namd.json``);
    the result is the same as if it had never stopped. ``steps`` may extend a run (not shorten it);
    ``model``: only for a run started with a model object rather than a file; ``surface`` and
    ``names``: for a run of :func:`run_ensemble`."""
    from ase.io import read

    output = Path(output)
    for name in ("namd.json", "checkpoint.pt", "initial_conditions.xyz"):
        if not (output / name).exists():
            raise ValueError(f"cannot resume: {output / name} does not exist (no run was started in {output})")
    try:
        stored = json.loads((output / "namd.json").read_text())
        settings = NamdSettings(**stored)
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"cannot resume: {output / 'namd.json'} is not a tensorfuse namd settings file ({error})") from None
    if steps is not None:
        if steps < settings.steps:
            raise ValueError(f"--steps {steps} is fewer than the run's {settings.steps}: a run can be extended, not "
                             "shortened")
        settings = replace(settings, steps=steps)
    if settings.model is None and model is None and surface is None:
        raise ValueError("this run was started with a model object, not a file: give the model to resume it")
    if isinstance(settings.model, list):
        settings = replace(settings, model=list(settings.model))
    try:
        snapshot = torch.load(output / "checkpoint.pt", weights_only=True)
    except Exception as error:  # truncated, foreign or not a checkpoint at all  # noqa: BLE001
        raise ValueError(f"cannot resume: {output / 'checkpoint.pt'} is not a readable checkpoint "
                         f"({type(error).__name__})") from None
    first = read(output / "initial_conditions.xyz", index=0)
    if surface is None:
        loaded = _load(model if model is not None else settings.model, settings)
        surface = ModelSurface(loaded.model, first.get_atomic_numbers(), first.cell.array, first.pbc,
                               chunk=settings.chunk)
        names = loaded.names
    if tuple(snapshot["x"].shape) != (settings.trajectories, 3 * len(first)):
        raise ValueError(f"cannot resume: {output / 'checkpoint.pt'} does not belong to the run in {output}")
    result = _propagate(settings, surface, tuple(names), _criteria(settings, surface), output, progress,
                        resume=snapshot)
    if settings.share is not None and settings.share[0] == 0:  # the shares' files, merged
        return merge_namd(output.parent, settings.share[1])
    return result


@dataclass
class _Loaded:
    model: torch.nn.Module
    names: tuple[str, ...]
    committee: bool = False


def _model_paths(model) -> str | list[str] | None:
    """The file(s) of ``model`` as stored in ``namd.json`` (``None`` where a model object was given)."""
    if isinstance(model, (str, Path)):
        return str(Path(model).resolve())
    if isinstance(model, (list, tuple)) and model and all(isinstance(m, (str, Path)) for m in model):
        return [str(Path(m).resolve()) for m in model]
    return None


def _load(model, settings: NamdSettings) -> _Loaded:
    from tensorfuse.model import load_potential

    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("an empty committee: give at least one model")
    loaded = [load_potential(m, settings.device, getattr(torch, settings.dtype)) for m in models]
    model = Committee(loaded) if len(loaded) > 1 else loaded[0]
    model.eval()
    names = _state_names(model)
    if settings.method == "fssh" and model.config.couplings is None:
        raise ValueError("FSSH needs coupling vectors, and this model has no coupling head (train it with "
                         "--model.couplings diabatic): use --method lz or fssh-ba")
    if settings.stop_uncertain and len(loaded) < 2:
        raise ValueError("stopping uncertain trajectories needs a committee (two or more models): the spread of one "
                         "model is not defined")
    return _Loaded(model, names, len(loaded) > 1)


def _state_names(model) -> tuple[str, ...]:
    if model.config.num_states < 2:
        raise ValueError("surface hopping needs a model of two or more electronic states (trained with "
                         "--data.states), and this model has one")
    return tuple(model.config.states) or tuple(f"S{s}" for s in range(model.config.num_states))


def _criteria(settings: NamdSettings, surface: ModelSurface) -> list[Criterion]:
    criteria = [Criterion.parse(p, len(surface.numbers)) for p in settings.products]
    if len({c.name for c in criteria}) != len(criteria):
        raise ValueError("two product criteria have the same name")
    return criteria


def _propagate(settings: NamdSettings, surface, names, criteria, output: Path, progress: bool, x=None, v=None,
               resume=None) -> NamdResult:
    """Run (or go on with) the ensemble, checkpointing as it goes, then write the outputs."""
    engine = SurfaceHopping(surface, surface.masses, method=settings.method, dt=settings.timestep * FS,
                            seed=_seeds(settings.seed)[1], decoherence=settings.decoherence,
                            reverse_frustrated=settings.reverse_frustrated,
                            energy_tolerance=(None if settings.energy_tolerance is None
                                              else settings.energy_tolerance / HARTREE))

    def checkpoint(snapshot: dict) -> None:
        atomic_write(output / "checkpoint.pt", lambda f: torch.save(snapshot, f))

    done = int(resume["step"]) if resume is not None else 0
    start = time.perf_counter()
    surface.reset()
    # one bar for the whole ensemble: its trajectories advance together, one batched step at a time
    with progress_bar(f"NAMD {settings.method}", total=settings.steps, initial=done, enabled=progress,
                      unit="step") as bar:

        def show(step: int, running: torch.Tensor) -> None:
            if step % 10 == 0 or step == settings.steps:  # counting the running ones only now and then
                bar.set_postfix_str(f"{int(running.sum())}/{settings.trajectories} running", refresh=False)
            bar.update(step - bar.n)

        ensemble = engine.run(x, v, settings.initial_state, settings.steps, record_every=settings.interval,
                              stop=_stop_check(len(surface.numbers), settings),
                              callback=None if bar.disable else show, checkpoint=checkpoint,
                              checkpoint_every=settings.checkpoint_every, resume=resume,
                              trajectory_ids=torch.arange(settings.trajectories) + settings.trajectory_offset,
                              end_when_all_stopped=settings.share is None)
    elapsed = time.perf_counter() - start
    result = _summarise(ensemble, names, settings, criteria, (settings.steps - done) / max(elapsed, 1e-9), output)
    _write_outputs(result, ensemble, surface.numbers, names, criteria, settings.limits())
    return result


def _block(rank: int, size: int, trajectories: int) -> tuple[int, int]:
    """The trajectories ``[low, high)`` of share ``rank`` of ``size``: contiguous, sizes differing by one at most."""
    return rank * trajectories // size, (rank + 1) * trajectories // size


def merge_namd(output, size: int, timeout: float = 7 * 24 * 3600.0, poll: float = 2.0) -> NamdResult:
    """The files of the whole ensemble in ``output`` from its ``size`` shares (``share_<r>_of_<size>``,
    see :func:`run_namd`), waiting (up to ``timeout`` seconds) for the shares still running."""
    from ase.io import read, write

    output = Path(output)
    folders = [output / f"share_{r}_of_{size}" for r in range(size)]
    deadline = time.monotonic() + timeout
    while not all((f / "summary.json").exists() for f in folders):
        if time.monotonic() > deadline:
            missing = [str(f) for f in folders if not (f / "summary.json").exists()]
            raise ValueError(f"the shares {missing} did not finish within {timeout:.0f} s: merge later with merge_namd")
        time.sleep(poll)
    parts = []
    for folder in folders:
        settings = NamdSettings(**json.loads((folder / "namd.json").read_text()))
        snapshot = torch.load(folder / "checkpoint.pt", weights_only=True)
        record = _Recorder.from_state(snapshot["record"])
        parts.append((settings, record.ensemble(_hops_from_state(snapshot["hops"]), snapshot["stopped"],
                                                snapshot.get("reasons", [""] * len(snapshot["stopped"])))))
    first = parts[0][0]
    whole = replace(first, trajectories=sum(p.trajectories for p, _ in parts), share=None, trajectory_offset=0)
    ensemble = _concatenate([(p.trajectory_offset, e) for p, e in parts])
    frames = [a for folder in folders for a in read(folder / "initial_conditions.xyz", ":")]
    numbers = frames[0].get_atomic_numbers()
    names = tuple(json.loads((folders[0] / "summary.json").read_text())["states"])
    criteria = [Criterion.parse(p, len(numbers)) for p in whole.products]
    speeds = [json.loads((f / "summary.json").read_text())["steps_per_second"] for f in folders]
    for name in OUTPUTS:
        if name != "checkpoint.pt":
            _remove(output / name)
    atomic_write(output / "namd.json", lambda f: f.write(json.dumps(asdict(whole), indent=1) + "\n"), binary=False)
    write(output / "initial_conditions.xyz", frames, format="extxyz")
    result = _summarise(ensemble, names, whole, criteria, min(speeds), output)
    _write_outputs(result, ensemble, numbers, names, criteria, whole.limits())
    return result


def load_ensemble(output) -> tuple[Ensemble, NamdSettings]:
    """The ensemble recorded so far in a run folder (from its checkpoint: a finished run, one still
    going or a killed one) and the run's settings; times in atomic units, as the engine's."""
    output = Path(output)
    try:
        settings = NamdSettings(**json.loads((output / "namd.json").read_text()))
        snapshot = torch.load(output / "checkpoint.pt", weights_only=True)
        record = _Recorder.from_state(snapshot["record"])
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as error:
        raise ValueError(f"{output} holds no readable surface-hopping run: {error}") from None
    ensemble = record.ensemble(_hops_from_state(snapshot["hops"]), snapshot["stopped"],
                               snapshot.get("reasons", [""] * len(snapshot["stopped"])))
    return ensemble, settings


def _concatenate(parts: list[tuple[int, Ensemble]]) -> Ensemble:
    """Shares of an ensemble (their first trajectory's number, their ensemble) as one ensemble."""
    ensembles = [e for _, e in parts]
    times = ensembles[0].times
    if any(not torch.equal(e.times, times) for e in ensembles):
        raise ValueError("the shares recorded different steps: they are not shares of one run")

    def joined(name):
        values = [getattr(e, name) for e in ensembles]
        return None if values[0] is None else torch.cat(values, dim=1)

    hops = [replace(h, trajectory=h.trajectory + offset) for offset, e in parts for h in e.hops]
    hops.sort(key=lambda h: (h.step, h.trajectory))
    return Ensemble(times, joined("positions"), joined("velocities"), joined("active"), joined("populations"),
                    joined("energies"), joined("total_energy"), hops, torch.cat([e.stopped for e in ensembles]),
                    [r for e in ensembles for r in e.reasons], joined("spreads"))


def _seeds(seed: int) -> tuple[int, int]:
    """Independent seeds of the run's two random streams: the initial conditions and the hops."""
    sampling, hops = np.random.SeedSequence(seed).spawn(2)
    return int(sampling.generate_state(1)[0]), int(hops.generate_state(1)[0])


def _initial_conditions(surface, frames, count, sampling, temperature, generator, optimize):
    """``x, v`` ``[count, 3N]`` (atomic units) by Wigner sampling or from the frames."""
    if sampling == "file":
        chosen = [frames[k % len(frames)] for k in range(count)]
        x = np.stack([f.positions.reshape(-1) for f in chosen]) / BOHR
        v = np.stack([_velocities_fs(f).reshape(-1) for f in chosen]) / (BOHR * FS)
        return torch.tensor(x, dtype=torch.float64), torch.tensor(v, dtype=torch.float64)
    x0 = torch.tensor(frames[0].positions.reshape(-1) / BOHR, dtype=torch.float64)
    if optimize:
        x0 = minimize(surface, x0, state=0)
    try:
        modes = normal_modes(x0, surface.masses, hessian(surface, x0, state=0))
    except ValueError as error:
        where = "at the model's ground-state minimum nearest to the structure" if optimize else "at the structure"
        raise ValueError(f"{error} ({where}); give frames with velocities (--sampling file)") from None
    return wigner_sample(modes, count, temperature, generator)


def _check_frames(frames, sampling) -> None:
    if not frames:
        raise ValueError("no initial structure")
    if len(frames[0]) < 2:
        raise ValueError("surface hopping needs a molecule of two or more atoms")
    if sampling == "file":
        for k, frame in enumerate(frames):
            if not (frame.has("momenta") or "velocities" in frame.arrays):
                raise ValueError(f"--sampling file needs frames with velocities (momenta, or a 'velocities' array "
                                 f"in Å/fs as tensorfuse namd writes them): frame {k} has none; use --sampling "
                                 "wigner to sample them")


def _state_index(state, names) -> int:
    if isinstance(state, str) and not state.lstrip("-").isdigit():
        if state not in names:
            raise ValueError(f"unknown state {state!r}: the model has the states {list(names)}")
        return names.index(state)
    index = int(state)
    if not 0 <= index < len(names):
        raise ValueError(f"state index {index} out of range: the model has {len(names)} states "
                         f"(0 to {len(names) - 1}: {', '.join(names)})")
    return index


def _velocities_fs(atoms) -> np.ndarray:
    """Å/fs: ASE's momenta, or a ``velocities`` array (Å/fs, this module's trajectory files)."""
    from ase import units

    if atoms.has("momenta"):
        return atoms.get_velocities() * units.fs
    return np.asarray(atoms.arrays["velocities"], dtype=np.float64)


def _stop_check(n: int, settings: NamdSettings):
    """``stop(point, x) -> {reason: [T] bool}``: explosions, and a committee's spreads beyond the limits
    when they stop trajectories."""
    limits = settings.limits()

    def stop(point, x):
        finite = torch.isfinite(point.energies).all(1) & torch.isfinite(x).all(1) & torch.isfinite(point.forces).flatten(1).all(1)
        positions = (x * BOHR).reshape(len(x), n, 3)
        distances = torch.cdist(positions, positions) + 1e9 * torch.eye(n, dtype=x.dtype)
        close = distances.flatten(1).min(1).values < settings.min_distance
        causes = {"not finite": ~finite, f"atoms closer than {settings.min_distance} Å": close & finite}
        if limits.stop and point.spreads is not None:
            causes["committee spread beyond the limits"] = limits.exceeded(point.spreads)
        return causes

    return stop


def _summarise(ensemble, names, settings: NamdSettings, criteria, steps_per_second: float, output) -> NamdResult:
    """Every statistic over the trajectories that ran to the end; the stopped ones reported apart."""
    times = ensemble.times.numpy() / FS
    stopped = ensemble.stopped.numpy()
    finished = stopped < 0
    active = ensemble.active.numpy()[:, finished]
    if finished.any():
        fractions, errors = state_fractions(active, len(names))
    else:
        fractions = errors = np.full((len(times), len(names)), np.nan)
    final = ensemble.positions[-1].numpy().reshape(settings.trajectories, -1, 3) * BOHR
    yields = {}
    for criterion in criteria:
        holds = criterion.holds(final[finished])
        p = float(holds.mean()) if finished.any() else float("nan")
        yields[criterion.name] = (p, math.sqrt(p * (1 - p) / max(int(finished.sum()), 1)))
    change = (ensemble.total_energy[:, finished] - ensemble.total_energy[0, finished]).abs()
    change = float(change.max()) * HARTREE if change.numel() else float("nan")
    kept = [h for h in ensemble.hops if finished[h.trajectory]]
    accepted = sum(h.accepted for h in kept)
    state = settings.initial_state
    lifetime = None
    if state > 0 and finished.any():
        lifetime = fit_lifetime(times, fractions[:, state], samples=(active == state).astype(float))
    report = []
    for k in np.nonzero(~finished)[0].tolist():
        row = min(int(np.searchsorted(times, stopped[k] * settings.timestep - 1e-6)), len(times) - 1)
        energy_change = float(ensemble.total_energy[row, k] - ensemble.total_energy[0, k]) * HARTREE
        report.append({"trajectory": k, "time_fs": float(stopped[k] * settings.timestep),
                       "reason": ensemble.reasons[k] if ensemble.reasons else "stopped",
                       "state": names[int(ensemble.active[row, k])], "energy_change_ev": energy_change})
    return NamdResult(output, settings.method, names, settings.trajectories, settings.steps, settings.timestep, times,
                      fractions, errors, lifetime, yields, accepted, len(kept) - accepted, int(finished.sum()), report,
                      change, steps_per_second, _uncertain(ensemble, settings, times), ensemble)


def _uncertain(ensemble: Ensemble, settings: NamdSettings, times: np.ndarray) -> dict | None:
    """A committee's limits, and per trajectory that crossed them the first recorded time it did."""
    if ensemble.spreads is None:
        return None
    limits = settings.limits()
    over = _uncertain_frames(ensemble, limits, times, settings.timestep)  # [R, T]
    first = {k: float(times[over[:, k].argmax()]) for k in range(over.shape[1]) if over[:, k].any()}
    largest = ensemble.spreads.amax((0, 1)).tolist()
    return {"limits": {"energy_ev": limits.energy, "gap_ev": limits.gap, "forces_ev_per_a": limits.forces,
                       "stop": limits.stop},
            "trajectories": len(first), "frames": int(over.sum()), "first_time_fs": first,
            "largest": {"energy_ev": largest[0], "gap_ev": largest[1], "forces_ev_per_a": largest[2]}}


def _write_outputs(result: NamdResult, ensemble: Ensemble, numbers, names, criteria, limits) -> None:
    output = result.output
    finished = ensemble.stopped.numpy() < 0
    _write_trajectories(output / "trajectories", ensemble, numbers, names, result.timestep_fs)
    header = (["time_fs"] + [f"fraction_{s}" for s in names] + [f"error_{s}" for s in names]
              + [f"population_{s}" for s in names] + ["stopped"])
    # |c|^2 averaged (FSSH) or the fractions (LZ), over the finished trajectories as every other column
    populations = ensemble.populations.numpy()[:, finished].mean(1) if finished.any() else result.fractions
    stopped_by = np.array([[(0 <= step <= t / result.timestep_fs + 1e-6) for step in ensemble.stopped.tolist()]
                           for t in result.times_fs]).sum(1)  # how many trajectories had been stopped by then
    table = np.column_stack([result.times_fs, result.fractions, result.fraction_errors, populations, stopped_by])
    np.savetxt(output / "populations.csv", table, delimiter=",", header=",".join(header), comments="", fmt="%.6g")
    with open(output / "hops.csv", "w") as f:
        f.write(",".join(["trajectory", "time_fs", "from", "to", "accepted", "gap_eV", "total_energy_before_eV",
                          "total_energy_after_eV", "finished"] + [f"{c.name}_{c.kind}" for c in criteria]) + "\n")
        for hop in ensemble.hops:
            position = hop.position.numpy().reshape(-1, 3) * BOHR
            measured = [f"{float(c.measure(position)):.4f}" for c in criteria]
            f.write(",".join([str(hop.trajectory), f"{hop.step * result.timestep_fs:.3f}", names[hop.source],
                              names[hop.target], str(int(hop.accepted)), f"{hop.gap * HARTREE:.6f}",
                              f"{hop.energy_before * HARTREE:.8f}", f"{hop.energy_after * HARTREE:.8f}",
                              str(int(finished[hop.trajectory]))] + measured) + "\n")
    _write_hop_geometries(output / "hops.xyz", ensemble, numbers, names, result.timestep_fs, finished)
    summary = {key: value for key, value in asdict(result).items()
               if key not in ("times_fs", "fractions", "fraction_errors", "ensemble", "output")}
    summary["lifetime"] = asdict(result.lifetime) if result.lifetime else None
    summary["final_fractions"] = dict(zip(names, result.fractions[-1].tolist()))
    (output / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if ensemble.spreads is not None:
        _write_uncertain(output / "uncertain.xyz", ensemble, numbers, names, result, limits)
    _plot_populations(output / "populations.png", result, populations, names)


def _write_hop_geometries(path: Path, ensemble: Ensemble, numbers, names, timestep: float, finished) -> None:
    """Every hop's geometry (extxyz), to check the surfaces where they hop (e.g. against a reference)."""
    from ase import Atoms
    from ase.io import write

    frames = []
    for hop in ensemble.hops:
        atoms = Atoms(numbers=numbers, positions=hop.position.numpy().reshape(-1, 3) * BOHR)
        atoms.info.update(trajectory=hop.trajectory, time_fs=hop.step * timestep, source=names[hop.source],
                          target=names[hop.target], accepted=int(hop.accepted), gap_eV=hop.gap * HARTREE,
                          finished=int(finished[hop.trajectory]))
        frames.append(atoms)
    write(path, frames, format="extxyz")


def _uncertain_frames(ensemble: Ensemble, limits, times: np.ndarray, timestep: float) -> np.ndarray:
    """``[R, T]``: recorded frames whose spreads cross the limits (a stopped trajectory's up to its stop)."""
    over = np.stack([limits.exceeded(ensemble.spreads[r]).numpy() for r in range(len(times))])
    stopped = ensemble.stopped.numpy()
    alive = (stopped[None, :] < 0) | (times[:, None] <= stopped[None, :] * timestep + 1e-6)
    return over & alive


def _write_uncertain(path: Path, ensemble: Ensemble, numbers, names, result: NamdResult, limits) -> None:
    """The recorded frames where the committee's spread crossed a limit, for labelling."""
    from ase import Atoms
    from ase.io import write

    frames = []
    over = _uncertain_frames(ensemble, limits, result.times_fs, result.timestep_fs)
    for r, time_fs in enumerate(result.times_fs):
        for k in np.nonzero(over[r])[0].tolist():
            atoms = Atoms(numbers=numbers, positions=ensemble.positions[r, k].numpy().reshape(-1, 3) * BOHR)
            spread = ensemble.spreads[r, k].tolist()
            atoms.info.update(trajectory=k, time_fs=float(time_fs), state=names[int(ensemble.active[r, k])],
                              energy_spread=spread[0], gap_spread=spread[1], forces_spread=spread[2],
                              **{f"model_energy_{s}": float(ensemble.energies[r, k, i]) * HARTREE
                                 for i, s in enumerate(names)})
            frames.append(atoms)
    write(path, frames, format="extxyz")


def _write_trajectories(folder: Path, ensemble: Ensemble, numbers, names, timestep: float) -> None:
    """One extxyz file per trajectory: positions, velocities (Å/fs), active state, every state's
    energy (eV) and electronic population, total energy, per recorded step."""
    from ase.data import chemical_symbols

    folder.mkdir(parents=True, exist_ok=True)
    symbols = [chemical_symbols[z] for z in numbers]
    positions = ensemble.positions.numpy() * BOHR  # [R, T, D]
    velocities = ensemble.velocities.numpy() * BOHR * FS
    energies = ensemble.energies.numpy() * HARTREE
    totals = ensemble.total_energy.numpy() * HARTREE
    times = ensemble.times.numpy() / FS
    stopped = ensemble.stopped.numpy()
    spreads = ensemble.spreads.numpy() if ensemble.spreads is not None else None
    n = len(numbers)
    for k in range(positions.shape[1]):
        lines = []
        last = len(times) if stopped[k] < 0 else int((times <= stopped[k] * timestep + 1e-6).sum())
        for r in range(last):  # a stopped trajectory: the frames up to its stop
            info = " ".join([f"time_fs={times[r]:.4f}", f"state={names[int(ensemble.active[r, k])]}"]
                            + [f"energy_{s}={energies[r, k, i]:.8f}" for i, s in enumerate(names)]
                            + [f"population_{s}={float(ensemble.populations[r, k, i]):.6f}" for i, s in enumerate(names)]
                            + [f"total_energy={totals[r, k]:.8f}"]
                            + ([] if spreads is None else [f"{name}={spreads[r, k, i]:.6f}" for i, name in
                                                           enumerate(("energy_spread", "gap_spread", "forces_spread"))]))
            lines.append(f"{n}\nProperties=species:S:1:pos:R:3:velocities:R:3 {info} pbc=\"F F F\"")
            block = np.column_stack([positions[r, k].reshape(n, 3), velocities[r, k].reshape(n, 3)])
            lines.extend(f"{sym:<2s} " + " ".join(f"{value:.8f}" for value in row) for sym, row in zip(symbols, block))
        (folder / f"{k:04d}.xyz").write_text("\n".join(lines) + "\n")


def _write_initial(path: Path, numbers, structure, x, v) -> None:
    """The sampled initial conditions, readable as ``--sampling file`` (ASE momenta)."""
    from ase import Atoms, units
    from ase.io import write

    frames = []
    for xk, vk in zip(x.numpy(), v.numpy()):
        atoms = Atoms(numbers=numbers, positions=xk.reshape(-1, 3) * BOHR, cell=structure.cell, pbc=structure.pbc)
        atoms.set_velocities(vk.reshape(-1, 3) * BOHR * FS / units.fs)
        frames.append(atoms)
    write(path, frames, format="extxyz")


def _plot_populations(path: Path, result: NamdResult, populations, names) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    t = result.times_fs
    for i, s in enumerate(names):
        line, = ax.plot(t, result.fractions[:, i], label=f"{s} (fraction on state)")
        ax.fill_between(t, result.fractions[:, i] - result.fraction_errors[:, i],
                        result.fractions[:, i] + result.fraction_errors[:, i], color=line.get_color(), alpha=0.25)
        if result.method != "lz":
            ax.plot(t, populations[:, i], "--", color=line.get_color(), lw=1, label=f"{s} (|c|², mean)")
    if result.lifetime is not None:
        ax.plot(t, result.lifetime(t), ":", color="k", label=f"fit: {result.lifetime.describe()}")
    ax.set_xlabel("time (fs)")
    ax.set_ylabel("population")
    ax.set_ylim(-0.02, 1.02)
    left_out = result.trajectories - result.finished
    ax.set_title(f"{result.method.upper()}, {result.finished} trajectories"
                 f"{f' ({left_out} stopped, left out)' if left_out else ''} (band: ±1 standard error)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
