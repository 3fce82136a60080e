"""The adaptive-sampling loop's configuration: typed, frozen, checked once (one YAML file)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

LABELLERS = ("model", "casscf", "command", "python")


def _fail(name: str, value: Any, why: str):
    raise ValueError(f"invalid adaptive-sampling configuration: {name}={value!r}: {why}")


def _section(cls, value, name: str):
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        _fail(name, value, f"expected a mapping of {cls.__name__} fields")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        _fail(name, dict(value), f"unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**value)


@dataclass(frozen=True)
class DynamicsOptions:
    """The ensemble run on each iteration's committee (see :func:`tensorfuse.namd.run_namd`):
    ``start`` is a structure (Wigner sampling of the model's minimum) or, with ``sampling: file``, a
    file of frames with velocities (e.g. initial conditions shared with a reference run)."""

    # a structure (Wigner sampling of the model's minimum) or, with sampling: file, frames with velocities
    start: str = ""
    sampling: str = "wigner"  # wigner or file
    initial_state: str = "S1"  # the state every trajectory starts on
    trajectories: int = 50  # trajectories per iteration
    steps: int = 400  # steps per trajectory
    timestep: float = 0.5  # fs
    temperature: float = 0.0  # K, of the Wigner sampling (0: zero-point motion only)
    method: str = "fssh"  # fssh, fssh-ba or lz
    seed: int = 0  # seed of the initial conditions and the hops
    interval: int = 2  # steps between recorded frames

    def __post_init__(self):
        if not self.start or not Path(self.start).exists():
            _fail("dynamics.start", self.start, "no such file (a structure, or frames with velocities)")
        for name in ("trajectories", "steps", "interval"):
            if getattr(self, name) < 1:
                _fail(f"dynamics.{name}", getattr(self, name), "must be >= 1")


@dataclass(frozen=True)
class SelectionOptions:
    """Which frames of an ensemble are labelled: those where a committee spread crosses a limit
    (eV, eV, eV/Å), ranked by how far (the largest spread/limit ratio, doubled where the gap to a
    neighbouring state is below ``small_gap`` eV), at most ``frames`` of them, at most one per
    trajectory per ``separation_fs``, and none within ``min_distance`` Å (RMS of the interatomic
    distances) of one already chosen: one event does not fill the batch. ``max_neighbor_distance``
    (Å) skips frames where some atom's nearest neighbour is farther than that: a fragment has flown
    off, a geometry the labeller's method may not describe (SA-CASSCF(2,2) of a dissociated hydrogen)
    and whose few labels would dominate an energy loss."""

    frames: int = 20  # at most this many frames labelled per iteration
    energy_spread: float | None = 0.2  # eV: committee spread of a state's energy that flags a frame; null: not checked
    gap_spread: float | None = 0.2  # eV: committee spread of a gap that flags a frame; null: not checked
    forces_spread: float | None = 1.0  # eV/Å: committee spread of the forces that flags a frame; null: not checked
    small_gap: float = 0.5  # eV: a flagged frame's rank is doubled where a gap is below this
    separation_fs: float = 10.0  # at most one frame per trajectory per this many fs
    min_distance: float = 0.05  # Å (RMS of interatomic distances): no two chosen frames closer than this
    max_neighbor_distance: float | None = None  # Å: skip frames with an atom this far from all others; null: keep

    def __post_init__(self):
        if self.frames < 1:
            _fail("selection.frames", self.frames, "must be >= 1")
        for name in ("small_gap", "separation_fs", "min_distance"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                _fail(f"selection.{name}", value, "must be a number >= 0")
        limit = self.max_neighbor_distance
        if limit is not None and not (math.isfinite(limit) and limit > 0):
            _fail("selection.max_neighbor_distance", limit, "must be a distance > 0 in Å, or null")


@dataclass(frozen=True)
class LabellerOptions:
    """``kind``: ``model`` (``model``: a multi-state model file as the reference surface),
    ``casscf`` (PySCF SA-CASSCF: ``ncas``, ``nelecas``, ``basis``, ``workers``; ``average``: states
    sharing the orbitals, if more than the labelled ones, see :class:`tensorfuse.qm.CasscfSettings`), ``command``
    (``command`` with ``{input}`` and ``{output}``) or ``python`` (``function``: "module:name")."""

    kind: str = "model"  # model, casscf, command or python
    model: str | None = None  # the reference model file (kind: model)
    command: str | None = None  # a program with {input} and {output} (kind: command)
    function: str | None = None  # module:name of a Python labeller (kind: python)
    ncas: int = 2  # active orbitals (casscf)
    nelecas: int = 2  # active electrons (casscf)
    basis: str = "6-31g*"  # basis set (casscf)
    workers: int = 1  # single-thread labelling processes
    average: int | None = None  # states sharing the orbitals, if more than the labelled ones (casscf)

    def __post_init__(self):
        if self.kind not in LABELLERS:
            _fail("labeller.kind", self.kind, f"expected one of {LABELLERS}")
        needed = {"model": "model", "command": "command", "python": "function"}.get(self.kind)
        if needed and not getattr(self, needed):
            _fail(f"labeller.{needed}", getattr(self, needed), f"a {self.kind} labeller needs it")
        if self.kind == "model" and not Path(self.model).exists():
            _fail("labeller.model", self.model, "no such file")
        if self.workers < 1:
            _fail("labeller.workers", self.workers, "must be >= 1")


@dataclass(frozen=True)
class StopOptions:
    """The loop ends after ``max_iterations``, or earlier once fewer than ``flagged_fraction`` of the
    trajectories cross a spread limit and the initial state's population at each of ``times_fs``
    changed by less than its standard error since the previous iteration."""

    max_iterations: int = 5  # the loop ends after this many iterations
    flagged_fraction: float = 0.05  # converged when fewer than this fraction of trajectories are flagged ...
    # ... and the initial state's population at these times moved less than its standard error
    times_fs: tuple[float, ...] = (25.0, 50.0, 100.0)

    def __post_init__(self):
        object.__setattr__(self, "times_fs", tuple(float(t) for t in self.times_fs))
        if self.max_iterations < 1:
            _fail("stop.max_iterations", self.max_iterations, "must be >= 1")
        if not 0 <= self.flagged_fraction <= 1:
            _fail("stop.flagged_fraction", self.flagged_fraction, "must be between 0 and 1")


@dataclass(frozen=True)
class AdaptiveConfig:
    """Adaptive sampling: iterate {train a committee (or fine-tune the last one) -> run an ensemble
    -> select the frames it disagrees on -> label them -> add them} until the stop rule holds.

    ``data``: the labelled file to start from, with ``states`` (and the data section's other keys
    in ``data_options``); ``model``, ``training``: the sections of ``tensorfuse train`` (every
    member the same, with seeds ``0 .. committee - 1``); ``fine_tune``: later iterations start from
    the previous iteration's members. ``output``: the run folder (one subfolder per iteration).
    """

    data: str = ""  # the labelled file to start from
    states: tuple[str, ...] = ("S0", "S1")  # the electronic states
    data_options: Mapping[str, Any] = field(default_factory=dict)  # other keys of the training data section
    # the model section of tensorfuse train (every member the same)
    model: Mapping[str, Any] = field(default_factory=dict)
    # the training section of tensorfuse train (seeds 0 .. committee - 1)
    training: Mapping[str, Any] = field(default_factory=dict)
    committee: int = 2  # members of the committee
    fine_tune: bool = True  # later iterations start from the previous iteration's members
    # the ensemble run on each iteration's committee
    dynamics: DynamicsOptions = field(default_factory=DynamicsOptions)
    selection: SelectionOptions = field(default_factory=SelectionOptions)  # which frames are labelled
    labeller: LabellerOptions = field(default_factory=LabellerOptions)  # how frames are labelled
    stop: StopOptions = field(default_factory=StopOptions)  # when the loop ends
    output: str = "runs/adaptive"  # the run folder (one subfolder per iteration, summary.csv)

    def __post_init__(self):
        if not self.data or not Path(self.data).exists():
            _fail("data", self.data, "no such file (the labelled data to start from)")
        if isinstance(self.states, str) or len(tuple(self.states)) < 2:
            _fail("states", self.states, "name two or more states, e.g. [S0, S1]")
        object.__setattr__(self, "states", tuple(self.states))
        if self.committee < 2:
            _fail("committee", self.committee, "two or more members: the spread of one model is not defined")
        for name, cls in (("dynamics", DynamicsOptions), ("selection", SelectionOptions),
                          ("labeller", LabellerOptions), ("stop", StopOptions)):
            object.__setattr__(self, name, _section(cls, getattr(self, name), name))
        for name in ("data_options", "model", "training"):
            if not isinstance(getattr(self, name), Mapping):
                _fail(name, getattr(self, name), "expected a mapping")
        if self.dynamics.initial_state not in self.states:
            _fail("dynamics.initial_state", self.dynamics.initial_state, f"not one of the states {list(self.states)}")
        self.train_config(self.data, "check", None, 0)  # the training sections, checked now

    def train_config(self, data: str, output: str, init_model: str | None, seed: int):
        """The :class:`~tensorfuse.TrainConfig` of one member."""
        from tensorfuse.train import TrainConfig

        training = {**self.training, "seed": seed}
        if init_model is not None:
            training["init_model"] = init_model
        sections = {} if init_model is not None else {"model": dict(self.model)}  # else the file's architecture
        try:
            return TrainConfig(data={**self.data_options, "train_file": data, "states": list(self.states)},
                               training=training, output=output, **sections)
        except ValueError as error:
            raise ValueError(f"invalid adaptive-sampling configuration: {error}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdaptiveConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            _fail("", sorted(unknown), f"unknown key(s); known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["states"] = list(self.states)
        out["stop"]["times_fs"] = list(self.stop.times_fs)
        return out
