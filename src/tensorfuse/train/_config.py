"""Typed training configuration: data, model and optimization sections, as in the YAML file."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tensorfuse.data._io import ENERGY_UNITS
from tensorfuse.model._config import PRESETS, ModelConfig
from tensorfuse.utils._dataclasses import check_field_types

DTYPES = ("float32", "float64")


def _fail(section: str, name: str, value: Any, why: str):
    raise ValueError(f"invalid training configuration: {section}.{name}={value!r}: {why}")


@dataclass(frozen=True)
class DataConfig:
    """Where the data come from and how to read them.

    ``train_file=None`` uses the small dataset bundled with tensorfuse (rMD17 ethanol). The
    validation set is ``valid_file`` or, without it, a random ``valid_fraction`` of the training
    file. ``e0s``: ``"auto"`` (isolated-atom frames when the training file has them, else a least-
    squares fit), ``"isolated"``, ``"average"`` (least squares) or ``{atomic number: eV}``.
    """

    train_file: str | None = None
    valid_file: str | None = None
    test_file: str | None = None
    valid_fraction: float = 0.05
    max_train_frames: int | None = None
    max_valid_frames: int | None = None
    energy_key: str = "energy"
    forces_key: str = "forces"
    stress_key: str = "stress"
    virial_key: str = "virial"
    energy_unit: str | None = None
    e0s: Any = "auto"
    min_distance: float = 0.5
    allow_missing_labels: bool = False

    def __post_init__(self):
        check_field_types(self, functools.partial(_fail, "data"))
        if not 0.0 <= self.valid_fraction < 1.0:
            _fail("data", "valid_fraction", self.valid_fraction, "must be in [0, 1)")
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


@dataclass(frozen=True)
class OptimConfig:
    """The optimization: loss weights, Adam (AMSGrad), learning-rate schedule, EMA, budget."""

    max_epochs: int = 100
    time_budget: float | None = None  # minutes of wall clock for the whole run
    batch_size: int = 5
    valid_batch_size: int = 10
    lr: float = 0.01
    weight_decay: float = 5e-7
    energy_weight: float = 1.0
    forces_weight: float = 100.0  # MACE's default weighting (energy per atom : force components)
    stress_weight: float = 1.0
    refit_energy_shift: bool = True  # after training: per-element energy shift by least squares
    ema_decay: float | None = 0.99
    clip_grad: float | None = None
    scheduler_patience: int = 5
    scheduler_factor: float = 0.8
    early_stopping_patience: int | None = None
    seed: int = 0
    dtype: str = "float64"

    def __post_init__(self):
        check_field_types(self, functools.partial(_fail, "training"))
        for name in ("max_epochs", "batch_size", "valid_batch_size"):
            if getattr(self, name) < 1:
                _fail("training", name, getattr(self, name), "must be >= 1")
        if self.time_budget is not None and not self.time_budget > 0:
            _fail("training", "time_budget", self.time_budget, "must be a positive number of minutes")
        if not self.lr > 0:
            _fail("training", "lr", self.lr, "must be positive")
        for name in ("energy_weight", "forces_weight", "stress_weight", "weight_decay"):
            if getattr(self, name) < 0:
                _fail("training", name, getattr(self, name), "must be >= 0")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            _fail("training", "ema_decay", self.ema_decay, "must be in (0, 1), or null for no EMA")
        if self.clip_grad is not None and not self.clip_grad > 0:
            _fail("training", "clip_grad", self.clip_grad, "must be positive, or null")
        if self.dtype not in DTYPES:
            _fail("training", "dtype", self.dtype, f"expected one of {DTYPES}")
        if not 0.0 < self.scheduler_factor < 1.0:
            _fail("training", "scheduler_factor", self.scheduler_factor, "must be in (0, 1)")


@dataclass(frozen=True)
class TrainConfig:
    """A whole training run. ``model`` holds :class:`~tensorfuse.ModelConfig` fields plus an optional
    ``preset``; ``species`` and ``statistics`` default to what the training data give."""

    data: DataConfig = field(default_factory=DataConfig)
    model: Mapping[str, Any] = field(default_factory=lambda: {"preset": "small"})
    training: OptimConfig = field(default_factory=OptimConfig)
    output: str = "runs/tensorfuse"
    resume: bool = False

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
            raise ValueError(f"invalid training configuration: unknown key(s) model.{', model.'.join(unknown)}; "
                             f"known: {sorted(known)}")
        object.__setattr__(self, "model", model)

    def model_config(self, species, statistics) -> ModelConfig:
        """The :class:`ModelConfig` for these species and statistics (unless given explicitly)."""
        fields = {k: v for k, v in self.model.items() if k != "preset"}
        fields.setdefault("species", tuple(species))
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
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        data = dict(data or {})
        unknown = sorted(set(data) - {"data", "model", "training", "output", "resume"})
        if unknown:
            raise ValueError(f"invalid training configuration: unknown section(s) {unknown}; "
                             "expected data, model, training, output, resume")
        for section in ("data", "model", "training"):
            if section in data and data[section] is not None and not isinstance(data[section], Mapping):
                raise ValueError(f"invalid training configuration: {section} must be a mapping, got {data[section]!r}")
        return cls(**{k: v for k, v in data.items() if v is not None})

    @classmethod
    def from_yaml(cls, path) -> "TrainConfig":
        import yaml

        path = Path(path)
        if not path.exists():
            raise ValueError(f"configuration file {path} does not exist")
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ValueError(f"configuration file {path} is not valid YAML: {error}") from None
        if content is not None and not isinstance(content, Mapping):
            raise ValueError(f"configuration file {path} must hold a mapping of sections, got {type(content).__name__}")
        return cls.from_dict(content or {})

    def with_overrides(self, overrides: Mapping[str, Any]) -> "TrainConfig":
        """Apply ``{"section.key": value}`` (or top-level ``output``/``resume``) overrides."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if not key:
                if section not in ("output", "resume"):
                    raise ValueError(f"unknown setting {dotted!r}: use section.key (data., model., training.)")
                data[section] = value
                continue
            if section not in ("data", "model", "training"):
                raise ValueError(f"unknown setting {dotted!r}: sections are data, model and training")
            data[section][key] = value
        return TrainConfig.from_dict(data)


def _build(cls, values: Mapping[str, Any], section: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"invalid training configuration: unknown key(s) "
                         f"{', '.join(section + '.' + k for k in unknown)}; known: {sorted(known)}")
    return cls(**values)
