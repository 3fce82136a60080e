"""Typed training configuration: data, model and optimization sections, as in the YAML file."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tensorfuse.data._io import ENERGY_UNITS, DataKeys
from tensorfuse.data._states import COUPLING_KINDS, COUPLING_PROJECTIONS, StateKeys
from tensorfuse.model._config import LEGACY_KEYS, PRESETS, ModelConfig
from tensorfuse.utils._dataclasses import check_field_types

DTYPES = ("float32", "float64")
BEST_BY = ("loss", "forces", "last")
SCHEDULERS = ("plateau", "cosine")
TOP_LEVEL = ("data", "model", "training", "output", "resume", "overwrite")
RESUMABLE_CHANGES = ("training.max_epochs", "training.time_budget", "training.early_stopping_patience",
                     "training.compile", "training.device")
"""Settings a resumed run may change (to train longer or shorter); every other one must match."""


def _fail(section: str, name: str, value: Any, why: str):
    key = f"{section}.{name}" if section else name
    raise ValueError(f"invalid training configuration: {key}={value!r}: {why}")


@dataclass(frozen=True)
class DataConfig:
    """Where the data come from and how to read them.

    ``train_file=None`` uses the small dataset bundled with tensorfuse (rMD17 ethanol). The
    validation set is ``valid_file`` or, without it, a random ``valid_fraction`` of the training
    file. ``test_fraction`` holds out a random fraction of the training file as the test set
    (before the validation set is drawn; the same frames whatever ``training.seed``, so that the
    members of a committee share them), and the run writes those frames, labels as read, to
    ``test.xyz`` in its folder (for ``tensorfuse eval``). Any of the files may be a data set written
    by ``tensorfuse preprocess`` (HDF5), read
    from disk as training goes rather than into memory. ``e0s``: ``"auto"`` (isolated-atom frames
    when the training file has them, else a least-squares fit), ``"isolated"``, ``"average"``
    (least squares) or ``{atomic number: eV}``.

    Label keys: ``energy_key`` is required in every frame. ``forces_key``, ``stress_key`` and
    ``virial_key`` left unset read ``forces``/``stress``/``virial`` where frames have them (a file
    without forces then trains on energies only, with a warning); a key given explicitly must
    match at least one frame of every file read, or it is an error (a typo must not silently train
    an energy-only model).

    Several electronic states: ``states`` names them (e.g. ``[S0, S1]``); each frame's labels are
    then read from the templates ``state_energy_key`` (default ``energy_{state}``),
    ``state_forces_key`` (``forces_{state}``) and ``coupling_key`` (``nac_{i}_{j}``), the couplings
    as derivative couplings in 1/Å (``coupling_kind: nac``) or as ``ΔE·d`` in the energy unit per Å
    (``scaled``), by default without their components along rigid translations and rotations
    (``coupling_projection: rigid``; ``none`` keeps them); see :mod:`tensorfuse.data._states`.
    Every state's energy key must match some frame.
    """

    # extxyz (any file ASE reads), rMD17 .npz or a preprocessed .h5; unset: the bundled ethanol data
    train_file: str | None = None
    valid_file: str | None = None  # validation frames; unset: a random valid_fraction of the training file
    test_file: str | None = None  # test frames, evaluated once at the end
    valid_fraction: float = 0.05  # of the training file held out for validation when there is no valid_file
    test_fraction: float = 0.0  # of the training file held out as test frames (written to test.xyz in the run folder)
    max_train_frames: int | None = None  # use at most this many training frames (the first after shuffling)
    max_valid_frames: int | None = None  # use at most this many validation frames
    energy_key: str = "energy"  # key of the energy in every frame's info (or its ASE calculator)
    forces_key: str | None = None  # per-atom key of the forces; unset: 'forces' where frames have them
    stress_key: str | None = None  # key of the stress (3x3 or Voigt 6); unset: 'stress' where frames have it
    virial_key: str | None = None  # key of the virial (eV); unset: 'virial' where frames have it
    # unit of the file's energies (eV, kcal/mol, ...; unset: eV, kcal/mol for rMD17 .npz)
    energy_unit: str | None = None
    # reference energies: auto (isolated-atom frames, else least squares; the minimum-norm split, with a warning, where
    # the compositions do not tell the elements apart), isolated, average or {Z: eV}
    e0s: Any = "auto"
    min_distance: float = 0.5  # atoms closer than this (Å) in a frame are an error
    allow_missing_labels: bool = False  # train on frames that lack some labels (masked) instead of refusing them
    states: tuple[str, ...] = ()  # names of the electronic states, lowest first (e.g. [S0, S1]); empty: one surface
    state_energy_key: str = "energy_{state}"  # template of each state's energy key
    state_forces_key: str = "forces_{state}"  # template of each state's forces key
    coupling_key: str = "nac_{i}_{j}"  # template of each pair's coupling key
    coupling_kind: str = "nac"  # nac (derivative couplings, 1/Å) or scaled (ΔE·d in the energy unit per Å)
    coupling_projection: str = "rigid"  # rigid (components along rigid translations and rotations removed) or none

    def __post_init__(self):
        check_field_types(self, functools.partial(_fail, "data"))
        if not 0.0 <= self.valid_fraction < 1.0:
            _fail("data", "valid_fraction", self.valid_fraction, "must be in [0, 1)")
        if not 0.0 <= self.test_fraction < 1.0 or self.valid_fraction + self.test_fraction >= 1.0:
            _fail("data", "test_fraction", self.test_fraction, "must be in [0, 1), and leave frames to train on "
                  "with the validation fraction")
        if self.test_fraction > 0 and self.test_file is not None:
            _fail("data", "test_fraction", self.test_fraction, "holds out test frames of the training file: give it "
                  "or data.test_file, not both")
        for name in ("max_train_frames", "max_valid_frames"):
            value = getattr(self, name)
            if value is not None and value < 1:
                _fail("data", name, value, "must be >= 1")
        if self.energy_unit is not None and self.energy_unit not in ENERGY_UNITS:
            _fail("data", "energy_unit", self.energy_unit, f"expected one of {sorted(ENERGY_UNITS)}")
        if isinstance(self.e0s, Mapping):
            object.__setattr__(self, "e0s", {int(z): float(v) for z, v in self.e0s.items()})
        elif self.e0s not in ("auto", "isolated", "average"):
            _fail("data", "e0s", self.e0s, "expected 'auto', 'isolated', 'average' or {Z: energy}")
        for name in ("train_file", "valid_file", "test_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).exists():
                _fail("data", name, value, "no such file")
        for name in ("energy_key", "forces_key", "stress_key", "virial_key"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                _fail("data", name, value, "must not be empty")
        if isinstance(self.states, str) or not all(isinstance(n, str) and n.strip() for n in self.states):
            _fail("data", "states", self.states, "expected a list of state names, e.g. [S0, S1]")
        object.__setattr__(self, "states", tuple(self.states))
        if len(set(self.states)) != len(self.states):
            _fail("data", "states", self.states, "state names must be distinct")
        for name, fields in (("state_energy_key", ("state",)), ("state_forces_key", ("state",)),
                             ("coupling_key", ("i", "j"))):
            template = getattr(self, name)
            wanted = " and ".join("{" + f + "}" for f in fields)
            try:
                template.format(**{f: "X" for f in fields})
            except (KeyError, IndexError, ValueError):
                _fail("data", name, template, f"expected a template with {wanted} and no other fields")
            if not all("{" + f + "}" in template for f in fields):
                _fail("data", name, template, f"expected a template with {wanted}")
        if self.coupling_kind not in COUPLING_KINDS:
            _fail("data", "coupling_kind", self.coupling_kind, f"expected one of {COUPLING_KINDS}")
        if self.coupling_projection not in COUPLING_PROJECTIONS:
            _fail("data", "coupling_projection", self.coupling_projection, f"expected one of {COUPLING_PROJECTIONS}")

    def state_keys(self) -> StateKeys | None:
        """Where the labels of each state are (``None`` for single-state data)."""
        if not self.states:
            return None
        return StateKeys(self.states, self.state_energy_key, self.state_forces_key, self.coupling_key,
                         self.coupling_kind, self.coupling_projection)

    def keys(self) -> DataKeys:
        """The keys labels are read from (the defaults where unset)."""
        return DataKeys(energy=self.energy_key, forces=self.forces_key or "forces",
                        stress=self.stress_key or "stress", virial=self.virial_key or "virial")

    def explicit_keys(self) -> dict[str, str]:
        """``{label: key}`` for the label keys given explicitly (each must match some frame)."""
        named = {"energy": self.energy_key, "forces": self.forces_key, "stress": self.stress_key,
                 "virial": self.virial_key}
        return {label: key for label, key in named.items() if key is not None}


@dataclass(frozen=True)
class OptimConfig:
    """The optimization: loss weights, Adam (AMSGrad), learning-rate schedule, EMA, budget."""

    max_epochs: int = 100  # stop after this many epochs
    time_budget: float | None = None  # minutes of wall clock for the whole run
    batch_size: int = 5  # training frames per batch
    # training batches filled up to this many atoms instead of batch_size frames (data of mixed sizes)
    batch_atoms: int | None = None
    valid_batch_size: int = 10  # frames per evaluation batch
    lr: float = 0.01  # learning rate of Adam (AMSGrad)
    weight_decay: float = 5e-7  # Adam's L2 weight decay
    energy_weight: float = 1.0  # loss weight of the energy per atom
    forces_weight: float = 100.0  # MACE's default weighting (energy per atom : force components)
    stress_weight: float = 1.0  # loss weight of the stress
    state_energy_weights: tuple[float, ...] | None = None  # per state (default: energy_weight for every state)
    state_forces_weights: tuple[float, ...] | None = None  # per state (default: forces_weight)
    couplings_weight: float = 10.0  # of the coupling loss (ΔE·d, eV/Å, better sign per frame and pair)
    refit_energy_shift: bool = True  # after training: per-element energy shift by least squares
    # decay of the exponential moving average of the weights (used to validate and save); null: none
    ema_decay: float | None = 0.99
    clip_grad: float | None = None  # gradient norm clipping; null: none
    # "plateau" (MACE's: lower the rate when the validation loss stalls) or "cosine" (half a cosine from lr
    # down to lr * final_lr_factor over the run's max_epochs or time_budget, whichever ends it first)
    scheduler: str = "plateau"
    scheduler_patience: int = 5  # plateau: epochs without improvement before the learning rate is lowered
    scheduler_factor: float = 0.8  # plateau: the factor it is lowered by
    final_lr_factor: float = 0.01  # cosine: the last epochs' learning rate, as a fraction of lr
    early_stopping_patience: int | None = None  # stop after this many epochs without improvement; null: never
    # which epoch's model is kept (and what early stopping watches): "loss" (the validation loss), "forces" (the
    # validation force MAE, averaged over states, plus the coupling MAE of a multi-state model with couplings: errors
    # the final energy-shift refit cannot change, where the loss also counts energy offsets that the refit removes)
    # or "last" (the final epoch: no selection, for a validation split unlike the geometries that matter)
    best_by: str = "loss"
    seed: int = 0  # seed of the weights, the split into training and validation and the batches
    dtype: str = "float64"  # float64 or float32, of the model and the training
    compile: bool = False  # torch.compile energy and forces as one graph (compiles minutes at the start)
    # where to train: "auto" (the GPU when torch sees one, else the CPU; under torchrun each rank its
    # LOCAL_RANK's GPU), "cpu", "cuda" or "cuda:N" (one process), "mps"
    device: str = "auto"
    # fine-tuning: start from a trained model's weights (its architecture, normalization and the E0s
    # of elements the new data lack; E0s of the data's elements fitted anew; elements new to it get
    # fresh per-element rows), optionally with some parts frozen, named as in the model ("embedding",
    # "layers.0", "layers.1.product", "readouts")
    init_model: str | None = None
    freeze: tuple[str, ...] = ()  # model parts kept fixed while fine-tuning (e.g. [embedding, layers.0])

    def __post_init__(self):
        check_field_types(self, functools.partial(_fail, "training"))
        if isinstance(self.freeze, str) or not all(isinstance(n, str) and n.strip() for n in self.freeze):
            _fail("training", "freeze", self.freeze, "expected a list of model parts, e.g. [embedding, layers.0]")
        object.__setattr__(self, "freeze", tuple(self.freeze))
        if self.freeze and self.init_model is None:
            _fail("training", "freeze", list(self.freeze), "applies only with training.init_model (fine-tuning)")
        for name in ("max_epochs", "batch_size", "valid_batch_size"):
            if getattr(self, name) < 1:
                _fail("training", name, getattr(self, name), "must be >= 1")
        if self.batch_atoms is not None and self.batch_atoms < 1:
            _fail("training", "batch_atoms", self.batch_atoms, "must be >= 1, or null for batch_size frames")
        if self.time_budget is not None and not self.time_budget > 0:
            _fail("training", "time_budget", self.time_budget, "must be a positive number of minutes")
        if not self.lr > 0:
            _fail("training", "lr", self.lr, "must be positive")
        for name in ("energy_weight", "forces_weight", "stress_weight", "weight_decay", "couplings_weight"):
            if not getattr(self, name) >= 0:  # NaN too
                _fail("training", name, getattr(self, name), "must be >= 0")
        for name in ("state_energy_weights", "state_forces_weights"):
            value = getattr(self, name)
            if value is not None:
                if isinstance(value, (str, bytes)) or not all(isinstance(w, (int, float)) and not isinstance(w, bool)
                                                             and w >= 0 for w in value):
                    _fail("training", name, value, "expected a list of weights >= 0, one per state")
                object.__setattr__(self, name, tuple(float(w) for w in value))
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            _fail("training", "ema_decay", self.ema_decay, "must be in (0, 1), or null for no EMA")
        if self.clip_grad is not None and not self.clip_grad > 0:
            _fail("training", "clip_grad", self.clip_grad, "must be positive, or null")
        if self.best_by not in BEST_BY:
            _fail("training", "best_by", self.best_by, f"expected one of {BEST_BY}")
        if self.best_by == "last" and self.early_stopping_patience is not None:
            _fail("training", "early_stopping_patience", self.early_stopping_patience,
                  "watches the kept epoch's measure; best_by: last keeps the final epoch (set null)")
        if self.dtype not in DTYPES:
            _fail("training", "dtype", self.dtype, f"expected one of {DTYPES}")
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            _fail("training", "device", self.device, "expected auto, cpu, cuda, cuda:N or mps")
        if not 0.0 < self.scheduler_factor < 1.0:
            _fail("training", "scheduler_factor", self.scheduler_factor, "must be in (0, 1)")
        if self.scheduler not in SCHEDULERS:
            _fail("training", "scheduler", self.scheduler, f"expected one of {SCHEDULERS}")
        if not 0.0 <= self.final_lr_factor <= 1.0:
            _fail("training", "final_lr_factor", self.final_lr_factor, "must be in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``model`` holds :class:`~tensorfuse.ModelConfig` fields plus an optional
    ``preset``; ``species`` and ``statistics`` default to what the training data give. The model
    section is checked here, before any data are read.

    ``output`` is the run folder. A new run refuses a folder that already holds a run, unless
    ``overwrite`` (which deletes that run's files); ``resume`` continues the run in ``output`` with
    the configuration stored there, and refuses settings that differ from it except those in
    :data:`RESUMABLE_CHANGES`.
    """

    data: DataConfig = field(default_factory=DataConfig)  # the data section (DataConfig)
    # the model section: a preset and any ModelConfig field
    model: Mapping[str, Any] = field(default_factory=lambda: {"preset": "small"})
    training: OptimConfig = field(default_factory=OptimConfig)  # the training section (OptimConfig)
    output: str = "runs/tensorfuse"  # the run folder
    resume: bool = False  # continue the run in output with its stored configuration
    overwrite: bool = False  # replace a run already in output (its files are deleted)

    def __post_init__(self):
        if isinstance(self.data, Mapping):
            object.__setattr__(self, "data", _build(DataConfig, self.data, "data"))
        if isinstance(self.training, Mapping):
            object.__setattr__(self, "training", _build(OptimConfig, self.training, "training"))
        model = dict(self.model or {})
        preset = model.get("preset")
        if preset is not None and preset not in PRESETS:
            _fail("model", "preset", preset, f"expected one of {sorted(PRESETS)}")
        known = {f.name for f in dataclasses.fields(ModelConfig)} | {"preset"}
        unknown = sorted(set(model) - known)
        if unknown:
            moved = [k for k in unknown if k in LEGACY_KEYS]
            hint = (f" ({', '.join(moved)} moved into the architecture's section: model.mace.<key> or "
                    "model.cormorant.<key>)") if moved else ""
            raise ValueError(f"invalid training configuration: unknown key(s) model.{', model.'.join(unknown)}; "
                             f"known: {sorted(known)}{hint}")
        object.__setattr__(self, "model", model)
        if not isinstance(self.output, str) or not self.output.strip():
            _fail("", "output", self.output, "must be a folder name")
        for name in ("resume", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                _fail("", name, getattr(self, name), "expected true or false")
        if self.resume and self.overwrite:
            raise ValueError("invalid training configuration: resume and overwrite exclude each other")
        self._check_model_section()

    def _check_model_section(self) -> None:
        """Build the model configuration once with stand-in species, so that a bad model setting
        fails now rather than after all data are read."""
        from tensorfuse.model._config import Statistics

        statistics = self.model.get("statistics") or {}
        if isinstance(statistics, Statistics):
            statistics = dataclasses.asdict(statistics)
        named = {int(z) for part in ("atomic_energies", "energy_shift") for z in dict(statistics.get(part) or {})} \
            if isinstance(statistics, Mapping) else set()
        self.model_config(sorted(named) or [1], Statistics())

    def model_config(self, species, statistics) -> ModelConfig:
        """The :class:`ModelConfig` for these species and statistics (unless given explicitly)."""
        fields = {k: v for k, v in self.model.items() if k != "preset"}
        fields.setdefault("species", tuple(species))
        if self.data.states:
            fields.setdefault("states", tuple(self.data.states))
        fields.setdefault("statistics", statistics)
        preset = self.model.get("preset")
        return ModelConfig.preset(preset, **fields) if preset else ModelConfig(**fields)

    # -- (de)serialization -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "data": dataclasses.asdict(self.data),
            "model": dict(self.model),
            "training": dataclasses.asdict(self.training),
            "output": self.output,
            "resume": self.resume,
            "overwrite": self.overwrite,
        }

    def settings(self) -> dict[str, Any]:
        """Every setting as ``{"section.key": value}`` (top-level ones without a section)."""
        flat: dict[str, Any] = {}
        for section, values in self.to_dict().items():
            if isinstance(values, Mapping):
                flat.update({f"{section}.{k}": v for k, v in values.items()})
            else:
                flat[section] = values
        return flat

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - set(TOP_LEVEL))
        if unknown:
            raise ValueError(f"invalid training configuration: unknown section(s) {unknown}; "
                             f"expected {', '.join(TOP_LEVEL)}")
        for section in ("data", "model", "training"):
            if section in data and data[section] is not None and not isinstance(data[section], Mapping):
                raise ValueError(f"invalid training configuration: {section} must be a mapping, got {data[section]!r}")
        return cls(**{k: v for k, v in data.items() if v is not None})

    @classmethod
    def from_yaml(cls, path) -> "TrainConfig":
        return cls.from_dict(read_yaml_sections(path))

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """Apply ``{"section.key": value}`` overrides (``model.mace.correlation`` reaches into the
        model's architecture sections; ``output``, ``resume`` and ``overwrite`` have no section)."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if not key:
                if section not in ("output", "resume", "overwrite"):
                    raise ValueError(f"unknown setting {dotted!r}: use section.key (data., model., training.)")
                data[section] = value
                continue
            if section not in ("data", "model", "training"):
                raise ValueError(f"unknown setting {dotted!r}: sections are data, model and training")
            target, *path = key.split(".")
            if path and section != "model":
                raise ValueError(f"unknown setting {dotted!r}: {section} settings have no subsections")
            if not path:
                data[section][target] = value
                continue
            node = data[section].setdefault(target, {})
            if not isinstance(node, dict):
                raise ValueError(f"unknown setting {dotted!r}: {section}.{target} is not a section")
            node = data[section][target] = dict(node)
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = value
        return TrainConfig.from_dict(data)


def read_yaml_sections(path) -> dict:
    """The mapping of sections in a YAML configuration file, with one-line errors."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"configuration file {path} does not exist")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"configuration file {path} is not valid YAML: {' '.join(str(error).split())}") from None
    except UnicodeDecodeError:
        raise ValueError(f"configuration file {path} is not a text file") from None
    if content is not None and not isinstance(content, Mapping):
        raise ValueError(f"configuration file {path} must hold a mapping of sections, got {type(content).__name__}")
    return dict(content or {})


def _build(cls, values: Mapping[str, Any], section: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"invalid training configuration: unknown key(s) "
                         f"{', '.join(section + '.' + k for k in unknown)}; known: {sorted(known)}")
    return cls(**values)
