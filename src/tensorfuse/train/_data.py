"""The data of a training run: read, split, validated, with a summary a checkpoint can check."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from tensorfuse.data._io import DataError, Frame, ReadReport, read_frames, validate_frames
from tensorfuse.data._on_disk import FrameStore, OnDiskFrames, is_hdf5
from tensorfuse.train._config import DataConfig


def bundled_dataset(split: str) -> Path:
    """The demo data shipped with tensorfuse (rMD17 ethanol, eV): ``"train"`` or ``"test"``."""
    from tensorfuse.datasets import path

    return path(f"ethanol_{split}")


TEST_SPLIT_SEED = 20261204


@dataclass
class TrainingData:
    """Frames per split (isolated atoms apart) and what was read from each file. A split is a list
    of frames, or an :class:`~tensorfuse.data._on_disk.OnDiskFrames` for a data set on disk (``.h5``,
    from ``tensorfuse preprocess``), whose frames are read when needed."""

    train: Sequence[Frame]
    valid: Sequence[Frame]
    test: Sequence[Frame]
    isolated: list[Frame]
    reports: list[ReadReport]
    held_out: list[int] | None = None  # frames of the training file held out as the test set (file order)

    @property
    def species(self) -> list[int]:
        return sorted(set().union(*(_elements(frames) for frames in (self.train, self.valid, self.test, self.isolated))))

    @property
    def has_forces(self) -> bool:
        return _has_label(self.train, "forces")

    @property
    def has_couplings(self) -> bool:
        if isinstance(self.train, OnDiskFrames):  # one state on disk
            return False
        return any(f.states is not None and f.states.has_couplings.any() for f in self.train)

    @property
    def has_stress(self) -> bool:
        return _has_label(self.train, "stress") or _has_label(self.train, "virial")

    def summary(self) -> dict:
        """Frame and atom counts per split: a resumed run checks that its data did not change."""
        return {split: [len(frames), _total_atoms(frames)]
                for split, frames in (("train", self.train), ("valid", self.valid), ("test", self.test),
                                      ("isolated", self.isolated))}


def _elements(frames) -> set[int]:
    if isinstance(frames, OnDiskFrames):
        return frames.elements()
    return {int(z) for f in frames for z in f.numbers}


def _has_label(frames, name: str) -> bool:
    if isinstance(frames, OnDiskFrames):
        return frames.has_label(name)
    return any(getattr(f, name) is not None for f in frames)


def _total_atoms(frames) -> int:
    if isinstance(frames, OnDiskFrames):
        return frames.total_atoms()
    return int(sum(f.num_atoms for f in frames))


def _split_isolated(frames) -> tuple[Sequence[Frame], list[Frame]]:
    """``(frames, isolated atoms)``: single atoms apart, for the reference energies."""
    if isinstance(frames, OnDiskFrames):
        if not frames.has_isolated_atoms():
            return frames, []
        isolated = frames.isolated_mask()
        return frames[~isolated], list(frames[isolated])
    return [f for f in frames if not f.is_isolated_atom], [f for f in frames if f.is_isolated_atom]


def _take(frames, positions: np.ndarray) -> Sequence[Frame]:
    if isinstance(frames, OnDiskFrames):
        return frames[positions]
    return [frames[i] for i in positions]


def load_training_data(data: DataConfig, seed: int) -> TrainingData:
    """Read the training (and validation/test) files, hold out the validation split and check the
    labels; every problem names the file, the frame and the key. A data set on disk (``.h5``) stays
    there: its splits are lists of frame indices."""
    keys = data.keys()
    train_path = data.train_file or bundled_dataset("train")
    test_path = data.test_file or (bundled_dataset("test") if data.train_file is None else None)
    frames, report = read_labelled(train_path, data)
    reports = [report]
    file_index = np.arange(len(frames))
    if data.test_fraction > 0:
        if isinstance(frames, OnDiskFrames):
            raise DataError(f"{train_path}: data.test_fraction holds out frames of an extxyz file; split a data set on "
                            "disk when preprocessing it, and give data.test_file")
        file_index = np.array([k for k, f in enumerate(frames) if not f.is_isolated_atom])
    frames, isolated = _split_isolated(frames)
    if not len(frames):
        raise DataError(f"{train_path}: no training frames besides isolated atoms")
    held_out, test = None, []
    if data.test_fraction > 0:
        # a fixed draw, whatever training.seed: the members of a committee hold out the same test frames
        order = np.random.default_rng(TEST_SPLIT_SEED).permutation(len(frames))
        n_test = min(max(1, int(round(data.test_fraction * len(frames)))), len(frames) - 2)
        if n_test < 1:
            raise DataError(f"{train_path}: {len(frames)} frames are too few to hold out a test set")
        held_out = sorted(int(file_index[i]) for i in order[:n_test])
        test = [frames[i] for i in sorted(order[:n_test])]
        frames = [frames[i] for i in sorted(order[n_test:])]
    if data.valid_file:
        valid, r = read_labelled(data.valid_file, data)
        reports.append(r)
        valid = _split_isolated(valid)[0]
    else:
        order = np.random.default_rng(seed).permutation(len(frames))
        n_valid = max(1, int(round(data.valid_fraction * len(frames)))) if data.valid_fraction > 0 else 0
        if data.max_valid_frames is not None:
            n_valid = min(n_valid, data.max_valid_frames) if data.valid_fraction > 0 else data.max_valid_frames
        n_valid = min(n_valid, len(frames) - 1)  # keep at least one training frame
        if data.valid_fraction > 0 and n_valid == 0:
            warnings.warn(f"{train_path}: only {len(frames)} training frame: no validation set is held out "
                          "(give data.valid_file to validate)", stacklevel=2)
        valid = _take(frames, order[:n_valid])
        frames = _take(frames, order[n_valid:])
    if data.max_train_frames is not None:
        frames = frames[: data.max_train_frames]
    if data.max_valid_frames is not None:
        valid = valid[: data.max_valid_frames]
    if test_path:
        test, r = read_labelled(test_path, data)
        reports.append(r)
        test = _split_isolated(test)[0]
    result = TrainingData(frames, valid, test, isolated, reports, held_out)
    if not result.has_forces and data.states:
        warnings.warn(f"{train_path}: no training frame has forces of the first state: training on energies only",
                      stacklevel=2)
    elif not result.has_forces:
        warnings.warn(f"{train_path}: no training frame has forces ({keys.forces!r}): training on energies only",
                      stacklevel=2)
    return result


def write_held_out(data: TrainingData, config: DataConfig, path: Path) -> None:
    """The test frames held out of the training file (``data.test_fraction``), as they are there."""
    from ase.io import read, write

    from tensorfuse.utils._files import atomic_write

    if data.held_out is None:
        return
    wanted = set(data.held_out)
    frames = [atoms for k, atoms in enumerate(read(config.train_file or bundled_dataset("train"), ":")) if k in wanted]
    atomic_write(path, lambda f: write(f, frames, format="extxyz"), binary=False)


def read_labelled(path, data: DataConfig) -> tuple[Sequence[Frame], ReadReport]:
    """``read_frames`` with ``data``'s keys and unit; a key given explicitly must match some frame.
    A data set written by ``tensorfuse preprocess`` is opened, not read (:func:`open_labelled`)."""
    if is_hdf5(path):
        return open_labelled(path, data)
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


def open_labelled(path, data: DataConfig) -> tuple[OnDiskFrames, ReadReport]:
    """The frames of a data set on disk. Its labels were read with the keys and unit given to
    ``tensorfuse preprocess``: settings of this run that name others are refused, not ignored."""
    store = FrameStore(path)
    if data.states:
        raise DataError(f"{path}: a data set on disk holds the labels of one state (tensorfuse preprocess does not "
                        f"store several states' labels yet), but data.states={list(data.states)}; train from the "
                        "extxyz file")
    given = {f"data.{label}_key": key for label, key in data.explicit_keys().items()
             if not (label == "energy" and key == DataConfig.energy_key)}  # the default is no choice
    stored = {f"data.{label}_key": store.keys.get(label) for label in ("energy", "forces", "stress", "virial")}
    if data.energy_unit is not None:
        given["data.energy_unit"], stored["data.energy_unit"] = data.energy_unit, store.energy_unit
    differ = [name for name, value in given.items() if value != stored[name]]
    if differ:
        raise DataError(f"{path} was written by tensorfuse preprocess with " + ", ".join(
            f"{name}={stored[name]!r}" for name in differ) + " (now " + ", ".join(
            f"{given[name]!r}" for name in differ) + "): its labels are fixed; preprocess the source again "
            "with these settings, or leave them out")
    return OnDiskFrames(store), store.report


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
            # on disk, this pass also counts the edges: the neighbour statistics then need no pass of their own
            counted = frames.neighbour_counts.setdefault(r_max, {}) if isinstance(frames, OnDiskFrames) else None
            validate_frames(frames, species=species, r_max=r_max, min_distance=config.min_distance,
                            require=require, keys=config.keys(), allow_missing=config.allow_missing_labels,
                            neighbours=counted)
