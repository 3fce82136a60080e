"""``tensorfuse preprocess``: labelled structures (extxyz, any file ASE reads, rMD17 ``.npz``) to an
on-disk data set (:mod:`tensorfuse.data._on_disk`), read and written in chunks so that memory does
not grow with the input. Every frame goes through the checks training applies when it reads the
file itself (labels, shapes, NaN, coordinates), with the same messages naming file, frame and key.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tensorfuse.data._io import (
    DataError,
    DataKeys,
    Frame,
    ReadReport,
    _frame_from_atoms,
    _report,
    _unit_factor,
    energy_scale_message,
    implausible_energies,
    read_frames,
)
from tensorfuse.data._on_disk import SUFFIXES, FrameWriter, h5py_module, is_hdf5

CHUNK_FRAMES, CHUNK_ATOMS = 2048, 131072  # frames held before they are written (a few MB)
KEYS_LISTED = 100  # frames whose info/arrays keys are listed in errors about a key no frame has


@dataclass
class Preprocessed:
    path: Path
    report: ReadReport
    bytes: int
    seconds: float


def preprocess(source, output, keys: DataKeys = DataKeys(), energy_unit: str | None = None,
               explicit: dict[str, str] | None = None, overwrite: bool = False) -> Preprocessed:
    """Write the frames of ``source`` to the data set ``output`` (``.h5``), in eV and Å.

    ``keys`` say where labels are, ``energy_unit`` the unit of the file (default eV; kcal/mol for
    rMD17 ``.npz``); ``explicit`` maps labels to keys the user named (each must match some frame).
    ``output`` is written under a temporary name and renamed at the end: an error leaves no file,
    and an existing one is replaced only with ``overwrite`` and only after everything succeeded.
    """
    source, output = Path(source), Path(output)
    _check_paths(source, output, overwrite)
    h5py_module()  # a missing h5py is reported before reading anything
    unit = energy_unit or ("kcal/mol" if source.suffix == ".npz" else "eV")
    factor = _unit_factor(unit, source)
    started = time.perf_counter()
    report, implausible = ReadReport(str(source), energy_unit=unit), [0, None]
    _remove_stale_partials(output)
    temporary = output.with_name(f".{output.name}.partial-{os.getpid()}")
    writer = FrameWriter(temporary)
    try:
        for chunk in _chunks(_labelled_frames(source, keys, energy_unit, factor, report)):
            writer.append(chunk)
            _add(report, _report(source, chunk, [keys.energy, keys.forces, keys.stress, keys.virial], unit))
            bad = implausible_energies(chunk)
            implausible = [implausible[0] + len(bad), implausible[1] or (bad[0] if bad else None)]
        if report.frames == 0:
            raise DataError(f"{source}: the file contains no structures")
        _check_explicit_keys(source, report, explicit or {})
        writer.finish(report, source.resolve(), unit, factor, {
            "energy": keys.energy, "forces": keys.forces, "stress": keys.stress, "virial": keys.virial,
            "weight": keys.weight})
        os.replace(temporary, output)
    except BaseException:
        writer.discard()
        temporary.unlink(missing_ok=True)
        raise
    if implausible[0]:
        warnings.warn(energy_scale_message(source, implausible[0], report.frames, implausible[1], unit), stacklevel=2)
    return Preprocessed(output, report, output.stat().st_size, time.perf_counter() - started)


def _remove_stale_partials(output: Path) -> None:
    """Delete ``.NAME.partial-PID`` files of this output left by a killed run (``kill -9`` runs no
    clean-up); a partial file whose process still runs is another preprocess at work and is kept."""
    for partial in output.parent.glob(f".{output.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_alive(int(pid)):
            partial.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _check_paths(source: Path, output: Path, overwrite: bool) -> None:
    if not source.exists():
        raise DataError(f"{source}: no such file")
    if source.is_dir():
        raise DataError(f"{source} is a folder, not a file of structures")
    if is_hdf5(source):
        raise DataError(f"{source} is an HDF5 file already (a data set tensorfuse preprocess wrote?); preprocess "
                        "reads extxyz or any file ASE reads")
    if output.suffix.lower() not in SUFFIXES:
        raise DataError(f"{output}: the data set is written as HDF5: give a name ending in .h5")
    if output.exists() and output.resolve() == source.resolve():
        raise DataError(f"{output} is the input itself")
    if output.is_dir():
        raise DataError(f"{output} is a folder")
    if not output.parent.is_dir():
        raise DataError(f"{output}: the folder {output.parent} does not exist")
    if output.exists() and not overwrite:
        raise DataError(f"{output} already exists: give --overwrite to replace it")


def _labelled_frames(path: Path, keys: DataKeys, energy_unit: str | None, factor: float,
                     report: ReadReport) -> Iterator[Frame]:
    """The frames of ``path`` one by one (rMD17 ``.npz`` files are read whole: they are arrays already)."""
    if path.suffix == ".npz":
        frames, read = read_frames(path, keys, energy_unit)
        report.keys_seen.update(read.keys_seen)
        yield from frames
        return
    from ase.io import iread

    images = iread(str(path), index=":")
    k = 0
    while True:
        try:
            atoms = next(images)
        except StopIteration:
            return
        except Exception as error:  # ASE raises many types; the user needs the file, frame and reason
            raise DataError(f"{path}, frame {k}: cannot be read by ASE ({type(error).__name__}: {error})") from None
        if k < KEYS_LISTED:
            calc = getattr(atoms, "calc", None)
            report.keys_seen.update(atoms.info, set(atoms.arrays) - {"numbers", "positions"},
                                    getattr(calc, "results", None) or {})
        yield _frame_from_atoms(atoms, keys, factor, f"{path}, frame {k}")
        k += 1


def _chunks(frames: Iterator[Frame]) -> Iterator[list[Frame]]:
    chunk, atoms = [], 0
    for frame in frames:
        chunk.append(frame)
        atoms += frame.num_atoms
        if len(chunk) >= CHUNK_FRAMES or atoms >= CHUNK_ATOMS:
            yield chunk
            chunk, atoms = [], 0
    if chunk:
        yield chunk


def _add(total: ReadReport, part: ReadReport) -> None:
    total.frames += part.frames
    total.atoms += part.atoms
    total.isolated_atoms += part.isolated_atoms
    for z, n in part.elements.items():
        total.elements[z] = total.elements.get(z, 0) + n
    for key, n in part.labels.items():
        total.labels[key] = total.labels.get(key, 0) + n


def _check_explicit_keys(path: Path, report: ReadReport, explicit: dict[str, str]) -> None:
    """A key the user named that no frame has is an error (a typo must not drop a label silently)."""
    if path.suffix == ".npz":  # rMD17 files have fixed keys
        return
    for label, key in explicit.items():
        if report.labels.get(key, 0) == 0:
            raise DataError(f"{path}: no frame has the key {key!r} given for the {label} (--{label}-key); the file "
                            f"has the keys {sorted(str(k) for k in report.keys_seen)}")
