"""The data of a training run: read, split, validated, with a summary a checkpoint can check."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tensorfuse.data._io import DataError, Frame, ReadReport, read_frames, validate_frames
from tensorfuse.train._config import DataConfig


def bundled_dataset(split: str) -> Path:
    """The demo data shipped with tensorfuse (rMD17 ethanol, eV): ``"train"`` or ``"test"``."""
    from tensorfuse.datasets import path

    return path(f"ethanol_{split}")


@dataclass
class TrainingData:
    """Frames per split (isolated atoms apart) and what was read from each file."""

    train: list[Frame]
    valid: list[Frame]
    test: list[Frame]
    isolated: list[Frame]
    reports: list[ReadReport]

    @property
    def species(self) -> list[int]:
        frames = self.train + self.valid + self.test + self.isolated
        return sorted({int(z) for f in frames for z in f.numbers})

    @property
    def has_forces(self) -> bool:
        return any(f.forces is not None for f in self.train)

    @property
    def has_couplings(self) -> bool:
        return any(f.states is not None and f.states.has_couplings.any() for f in self.train)

    @property
    def has_stress(self) -> bool:
        return any(f.stress is not None or f.virial is not None for f in self.train)

    def summary(self) -> dict:
        """Frame and atom counts per split: a resumed run checks that its data did not change."""
        return {split: [len(frames), int(sum(f.num_atoms for f in frames))]
                for split, frames in (("train", self.train), ("valid", self.valid), ("test", self.test),
                                      ("isolated", self.isolated))}


def load_training_data(data: DataConfig, seed: int) -> TrainingData:
    """Read the training (and validation/test) files, hold out the validation split and check the
    labels; every problem names the file, the frame and the key."""
    keys = data.keys()
    train_path = data.train_file or bundled_dataset("train")
    test_path = data.test_file or (bundled_dataset("test") if data.train_file is None else None)
    frames, report = read_labelled(train_path, data)
    reports = [report]
    isolated = [f for f in frames if f.is_isolated_atom]
    frames = [f for f in frames if not f.is_isolated_atom]
    if not frames:
        raise DataError(f"{train_path}: no training frames besides isolated atoms")
    if data.valid_file:
        valid, r = read_labelled(data.valid_file, data)
        reports.append(r)
        valid = [f for f in valid if not f.is_isolated_atom]
    else:
        order = np.random.default_rng(seed).permutation(len(frames))
        n_valid = max(1, int(round(data.valid_fraction * len(frames)))) if data.valid_fraction > 0 else 0
        if data.max_valid_frames is not None:
            n_valid = min(n_valid, data.max_valid_frames) if data.valid_fraction > 0 else data.max_valid_frames
        n_valid = min(n_valid, len(frames) - 1)  # keep at least one training frame
        if data.valid_fraction > 0 and n_valid == 0:
            warnings.warn(f"{train_path}: only {len(frames)} training frame: no validation set is held out "
                          "(give data.valid_file to validate)", stacklevel=2)
        valid = [frames[i] for i in order[:n_valid]]
        frames = [frames[i] for i in order[n_valid:]]
    if data.max_train_frames is not None:
        frames = frames[: data.max_train_frames]
    if data.max_valid_frames is not None:
        valid = valid[: data.max_valid_frames]
    test = []
    if test_path:
        test, r = read_labelled(test_path, data)
        reports.append(r)
        test = [f for f in test if not f.is_isolated_atom]
    result = TrainingData(frames, valid, test, isolated, reports)
    if not result.has_forces and data.states:
        warnings.warn(f"{train_path}: no training frame has forces of the first state: training on energies only",
                      stacklevel=2)
    elif not result.has_forces:
        warnings.warn(f"{train_path}: no training frame has forces ({keys.forces!r}): training on energies only",
                      stacklevel=2)
    return result


def read_labelled(path, data: DataConfig) -> tuple[list[Frame], ReadReport]:
    """``read_frames`` with ``data``'s keys and unit; a key given explicitly must match some frame."""
    states = data.state_keys()
    frames, report = read_frames(path, data.keys(), data.energy_unit, states=states)
    if Path(path).suffix == ".npz":  # rMD17 files have fixed keys
        return frames, report
    explicit = data.explicit_keys() if states is None else {
        f"energy of state {name}": states.energy_key(s) for s, name in enumerate(states.names)}
    for label, key in explicit.items():
        if report.labels.get(key, 0) == 0:
            seen = sorted(str(k) for k in report.keys_seen)
            setting = f"data.{label}_key" if states is None else "data.state_energy_key"
            raise DataError(f"{path}: no frame has the key {key!r} given for the {label} "
                            f"({setting}); the file has the keys {seen}")
    return frames, report


def validate_training_data(data: TrainingData, config: DataConfig, species, r_max: float) -> None:
    """Labels the loss needs, elements the model knows, atoms not too close (see ``validate_frames``)."""
    require = ["energy"] + (["forces"] if data.has_forces else [])
    states = config.state_keys()
    if states is not None:  # every state's energy; the checks below read the first state's labels
        require = []
        for frames in (data.train, data.valid, data.test):
            for s in range(len(states.names)):
                missing = [f.source for f in frames if not f.states.has_energy[s]]
                if missing and not config.allow_missing_labels:
                    raise DataError(f"{len(missing)} of {len(frames)} frames have no {states.energy_key(s)!r} label "
                                    f"(first: {missing[0]}); set the right key, or allow missing labels")
    for frames in (data.train, data.valid, data.test):
        if frames:
            validate_frames(frames, species=species, r_max=r_max, min_distance=config.min_distance,
                            require=require, keys=config.keys(), allow_missing=config.allow_missing_labels)
