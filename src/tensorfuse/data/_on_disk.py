"""Labelled frames on disk (HDF5, written by ``tensorfuse preprocess``), read lazily by frame.

Why HDF5 (h5py) rather than LMDB: one self-describing file (attributes say what it holds and how
it was made; ``h5ls -r`` shows it), random access to any frame through per-frame atom offsets into
concatenated per-atom arrays, appends of chunks while streaming the input, and no map size to
guess up front. It is an optional dependency: ``pip install 'tensorfuse[data]'``.

Layout (format version 1); every label in eV and Å, whatever the input's unit:

* ``atoms/numbers [N] uint8``, ``atoms/positions [N, 3]``, ``atoms/forces [N, 3]`` (NaN rows: no forces);
* ``frames/atom_offset [F + 1]`` (frame ``i`` owns atoms ``offset[i]:offset[i+1]``),
  ``frames/energy [F]`` (NaN: none), ``frames/cell [F, 3, 3]``, ``frames/pbc [F, 3]``,
  ``frames/has_forces [F]``, and where any frame has them ``frames/stress``, ``frames/virial``
  ``[F, 3, 3]`` (NaN: none) and ``frames/weight [F]``;
* attributes: the format and its version, the source file, its energy unit and the factor to eV,
  the label keys, and what was read (frames, atoms, elements, label counts, isolated atoms).

Neighbour lists are not stored: they are computed when a batch is loaded (a few tens of µs per
frame), so one file serves every cutoff. Frames keep the input's order, isolated atoms included.
h5py handles must not cross a fork: a :class:`FrameStore` opens the file in the process that reads
(again after a fork, e.g. in a DataLoader worker) and pickles without its handle.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from tensorfuse.data._io import DataError, Frame, ReadReport

FORMAT = "tensorfuse-dataset"
FORMAT_VERSION = 1
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SUFFIXES = (".h5", ".hdf5")
ROWS_PER_CHUNK = 4096  # rows of an HDF5 chunk (<= 300 kB): reading one frame reads little
BLOCK_FRAMES, BLOCK_ATOMS = 4096, 262144  # what a sequential pass holds at once (~12 MB of atoms)
OPTIONAL = {"forces": ("atoms", (3,), np.nan), "stress": ("frames", (3, 3), np.nan),
            "virial": ("frames", (3, 3), np.nan), "weight": ("frames", (), 1.0)}
"""Arrays written only when some frame has them: (group, shape per row, value of the frames without)."""


def h5py_module():
    try:
        import h5py
    except ImportError:
        raise DataError("on-disk data sets (.h5) need h5py: pip install 'tensorfuse[data]' (or pip install h5py)") \
            from None
    return h5py


def is_hdf5(path) -> bool:
    """Whether ``path`` is an HDF5 file (by its signature, whatever its name)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    except OSError:
        return False


class FrameStore:
    """Read side of a preprocessed file: frames by index, and sequential passes in file order."""

    def __init__(self, path):
        self.path = Path(path)
        self._file, self._pid, self._arrays = None, None, {}
        handle = self.file
        try:
            attrs = handle.attrs
            self.keys = json.loads(attrs["keys"])
            self.energy_unit, self.source = str(attrs["energy_unit"]), str(attrs["source"])
            self.report = ReadReport(
                str(self.path), frames=int(attrs["frames"]), atoms=int(attrs["atoms"]),
                elements={int(k): int(v) for k, v in json.loads(attrs["elements"]).items()},
                labels=json.loads(attrs["labels"]), isolated_atoms=int(attrs["isolated_atoms"]),
                energy_unit=f"eV (from {self.energy_unit} in {Path(self.source).name})",
                keys_seen=set(json.loads(attrs["keys_seen"])))
            self.offsets = np.asarray(handle["frames/atom_offset"][:], dtype=np.int64)
            self.optional = {name for name, (group, _, _) in OPTIONAL.items() if f"{group}/{name}" in handle}
            for name in ("atoms/numbers", "atoms/positions", "frames/energy", "frames/cell", "frames/pbc",
                         "frames/has_forces"):
                handle[name]
        except (KeyError, ValueError) as error:  # a missing array or attribute, an attribute that is not JSON
            raise DataError(f"{self.path}: a damaged tensorfuse data set ({type(error).__name__}: "
                            f"{' '.join(str(error).split())}); write it again with tensorfuse preprocess") from None
        if len(self.offsets) != self.report.frames + 1 or self.offsets[-1] != self.report.atoms:
            raise DataError(f"{self.path}: holds {len(self.offsets) - 1} frames and {self.offsets[-1]} atoms but says "
                            f"{self.report.frames} and {self.report.atoms}: the file is damaged or incomplete")

    # -- the handle, one per process ------------------------------------------------------------
    @property
    def file(self):
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open_store(self.path), os.getpid()
            self._arrays = {}
        return self._file

    def array(self, name: str):
        """The dataset ``name`` ("atoms/positions"), kept: looking one up costs more than reading a frame."""
        handle = self.file
        if name not in self._arrays:
            self._arrays[name] = handle[name]
        return self._arrays[name]

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_file", "_pid", "_arrays")}

    def __setstate__(self, state):
        self.__dict__.update(state, _file=None, _pid=None, _arrays={})

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file, self._arrays = None, {}

    # -- reading ----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.offsets) - 1

    def atom_counts(self, indices: np.ndarray) -> np.ndarray:
        """Atoms of the frames ``indices`` (int32), computed a block at a time: no temporary array per frame."""
        counts = np.empty(len(indices), dtype=np.int32)
        for start in range(0, len(indices), BLOCK_FRAMES * 16):
            block = indices[start : start + BLOCK_FRAMES * 16]
            counts[start : start + len(block)] = self.offsets[block + 1] - self.offsets[block]
        return counts

    def frame(self, index: int) -> Frame:
        return self.frames_at([index])[0]

    def frames_at(self, indices: Sequence[int]) -> list[Frame]:
        """The frames ``indices`` (any order; a batch): one read per array of frame labels, and per
        frame one per atom array."""
        unique, inverse = np.unique(np.asarray(indices, dtype=np.int64), return_inverse=True)
        rows = {name: self.array(f"frames/{name}")[unique] for name in self._frame_arrays()}
        atom_arrays = ["numbers", "positions"] + (["forces"] if "forces" in self.optional else [])
        frames = []
        for row, index in enumerate(unique.tolist()):
            start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
            atoms = {name: self.array(f"atoms/{name}")[start:stop] for name in atom_arrays
                     if name != "forces" or rows["has_forces"][row]}
            frames.append(self._frame(index, atoms, {name: values[row] for name, values in rows.items()}))
        return [frames[k] for k in inverse.reshape(-1)]

    def frames(self, indices: Sequence[int]) -> Iterator[Frame]:
        """The frames ``indices`` (increasing) in that order, read block by block."""
        for block, atoms, rows in self.blocks(indices, with_atoms=True):
            first, base = int(block[0]), int(self.offsets[block[0]])
            for index in block.tolist():
                start, stop = int(self.offsets[index]) - base, int(self.offsets[index + 1]) - base
                yield self._frame(index, {name: values[start:stop] for name, values in atoms.items()},
                                  {name: values[index - first] for name, values in rows.items()})

    def blocks(self, indices: Sequence[int], with_atoms: bool = False, names: Sequence[str] | None = None):
        """``(indices of the block, atom arrays, frame arrays)`` over ``indices`` (increasing): contiguous
        reads of at most ``BLOCK_FRAMES`` frames and ``BLOCK_ATOMS`` atoms; the arrays cover the
        block's whole range of frames (``indices - block[0]`` picks rows, ``offsets - offsets[block[0]]`` atoms)."""
        indices = np.asarray(indices)
        names = list(self._frame_arrays() if names is None else names)
        k = 0
        while k < len(indices):
            first = int(indices[k])
            # the block ends before the frame that would take it past either bound (one frame at least);
            # increasing indices: the frames within BLOCK_FRAMES of the first are among the next BLOCK_FRAMES
            candidates = indices[k : k + BLOCK_FRAMES]
            stop_frames = np.searchsorted(candidates, first + BLOCK_FRAMES, side="left")
            ends = self.offsets[candidates[:stop_frames] + 1]
            stop_atoms = np.searchsorted(ends, self.offsets[first] + BLOCK_ATOMS, side="right")
            end = k + max(1, min(stop_frames, stop_atoms))
            block = indices[k:end]
            last = int(block[-1])
            rows = {name: self.array(f"frames/{name}")[first : last + 1] for name in names}
            atoms = {}
            if with_atoms:
                start, stop = int(self.offsets[first]), int(self.offsets[last + 1])
                atoms = {name: self.array(f"atoms/{name}")[start:stop] for name in ("numbers", "positions", "forces")
                         if name != "forces" or "forces" in self.optional}
            yield block, atoms, rows
            k = end

    def read_rows(self, name: str, indices: np.ndarray) -> np.ndarray:
        """``frames/name`` at ``indices`` (any order), the default value where the file lacks the array."""
        indices = np.asarray(indices, dtype=np.int64)
        if name in OPTIONAL and name not in self.optional:
            _, shape, fill = OPTIONAL[name]
            return np.full((len(indices), *shape), fill)
        if len(indices) == 0:
            return self.array(f"frames/{name}")[0:0]
        unique, inverse = np.unique(indices, return_inverse=True)
        return self.array(f"frames/{name}")[unique][inverse.reshape(-1)]  # h5py reads increasing indices only

    def _frame_arrays(self) -> list[str]:
        return ["energy", "cell", "pbc", "has_forces"] + [n for n in ("stress", "virial", "weight") if n in self.optional]

    def _frame(self, index: int, atoms: dict, row: dict) -> Frame:
        """Frame ``index`` from its atoms' arrays and its row of every frame array."""
        energy = float(row["energy"])
        frame = Frame(numbers=atoms["numbers"].astype(np.int64), positions=np.asarray(atoms["positions"], np.float64),
                      cell=np.asarray(row["cell"], dtype=np.float64), pbc=np.asarray(row["pbc"], dtype=bool),
                      energy=energy if np.isfinite(energy) else None, source=f"{self.path}, frame {index}")
        if "forces" in atoms and row["has_forces"]:
            frame.forces = np.asarray(atoms["forces"], dtype=np.float64)
        for name in ("stress", "virial"):
            if name in row and np.isfinite(row[name]).all():
                setattr(frame, name, np.asarray(row[name], dtype=np.float64))
        if "weight" in row:
            frame.weight = float(row["weight"])
        return frame


def open_store(path):
    """The h5py file at ``path``, checked to be a tensorfuse data set of a version this reads."""
    h5py = h5py_module()
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: cannot be read as HDF5 ({' '.join(str(error).split())})") from None
    found = handle.attrs.get("format")
    if found != FORMAT:
        handle.close()
        raise DataError(f"{path}: an HDF5 file but not a tensorfuse data set (format attribute {found!r}, expected "
                        f"{FORMAT!r}); write one with tensorfuse preprocess IN.xyz OUT.h5")
    version = int(handle.attrs.get("format_version", 0))
    if version > FORMAT_VERSION:
        handle.close()
        raise DataError(f"{path}: data set format version {version} is newer than this tensorfuse reads "
                        f"({FORMAT_VERSION}): upgrade tensorfuse")
    return handle


class OnDiskFrames:
    """Frames of a :class:`FrameStore` chosen by index: a split of a data set, never in memory.

    Indexing follows the split's order (``frames[k]`` is a :class:`Frame`; a slice or an array of
    positions gives another split); iterating reads the file sequentially, so it yields the frames in
    the file's order. Counts and elements come from the offsets and one pass over the atomic numbers.
    """

    def __init__(self, store: FrameStore, indices: np.ndarray | None = None):
        self.store = store
        # frame indices as int32 where they fit: 4 bytes per frame of a split
        dtype = np.int32 if len(store) < 2**31 else np.int64
        self.indices = np.arange(len(store), dtype=dtype) if indices is None else np.asarray(indices, dtype)
        self._elements: set[int] | None = None
        self.neighbour_counts: dict[float, dict] = {}  # r_max -> edges and atoms, counted by a validation pass

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position):
        if isinstance(position, (int, np.integer)):
            return self.store.frame(self.indices[position])
        return OnDiskFrames(self.store, self.indices[position])

    def __iter__(self) -> Iterator[Frame]:
        return self.store.frames(np.sort(self.indices))

    def load(self, positions: Sequence[int]) -> list[Frame]:
        """The frames at ``positions`` of the split (a batch), in that order."""
        return self.store.frames_at(self.indices[np.asarray(positions, dtype=np.int64)])

    # -- what the split holds, without reading its frames ------------------------------------------
    def atom_counts(self) -> np.ndarray:
        return self.store.atom_counts(self.indices)

    def total_atoms(self) -> int:
        return int(self.atom_counts().sum())

    def has_isolated_atoms(self) -> bool:
        """Whether the file has any (preprocess counted them): most have none, and need no mask."""
        return self.store.report.isolated_atoms > 0

    def isolated_mask(self) -> np.ndarray:
        """Single atoms without periodicity (reference energies), as ``Frame.is_isolated_atom``."""
        mask = self.atom_counts() == 1
        if mask.any():
            mask[mask] = ~self.store.read_rows("pbc", self.indices[mask]).any(axis=1)
        return mask

    def elements(self) -> set[int]:
        if self._elements is None:
            found: set[int] = set()
            offsets = self.store.offsets
            wanted = np.zeros(len(self.store), dtype=bool)
            wanted[self.indices] = True
            for start in range(0, len(self.store), BLOCK_FRAMES * 16):
                stop = min(start + BLOCK_FRAMES * 16, len(self.store))
                if wanted[start:stop].any():
                    numbers = self.store.array("atoms/numbers")[offsets[start] : offsets[stop]]
                    selected = np.repeat(wanted[start:stop], np.diff(offsets[start : stop + 1]))
                    found.update(np.unique(numbers[selected]).tolist())
            self._elements = {int(z) for z in found}
        return self._elements

    def has_label(self, name: str) -> bool:
        """Whether any frame of the split has ``name`` (energy, forces, stress or virial)."""
        rows = {"energy": "energy", "forces": "has_forces", "stress": "stress", "virial": "virial"}[name]
        if name in OPTIONAL and name not in self.store.optional:
            return False
        for start in range(0, len(self.indices), BLOCK_FRAMES * 16):
            values = self.store.read_rows(rows, self.indices[start : start + BLOCK_FRAMES * 16])
            present = values if values.dtype == bool else np.isfinite(values.reshape(len(values), -1)).all(axis=1)
            if present.any():
                return True
        return False

    def energies(self, positions: np.ndarray) -> np.ndarray:
        """Energies (eV, NaN where missing) of the frames at ``positions`` of the split."""
        return self.store.read_rows("energy", self.indices[np.asarray(positions, dtype=np.int64)]).astype(np.float64)


class FrameWriter:
    """Appends frames (already in eV and Å) to a new data set file, chunk by chunk; ``finish``
    records what was read and closes it. Arrays of labels no frame has so far are created on the
    first frame that has them (earlier frames read as missing)."""

    def __init__(self, path):
        h5py = h5py_module()
        self.file = h5py.File(path, "w")
        self.frames = self.atoms = 0
        self._create("atoms/numbers", (), np.uint8)
        self._create("atoms/positions", (3,), np.float64)
        self._create("frames/energy", (), np.float64, np.nan)
        self._create("frames/cell", (3, 3), np.float64)
        self._create("frames/pbc", (3,), bool)
        self._create("frames/has_forces", (), bool)
        offsets = self.file.create_dataset("frames/atom_offset", shape=(1,), maxshape=(None,), dtype=np.int64,
                                           chunks=(ROWS_PER_CHUNK,))
        offsets[0] = 0

    def _create(self, name: str, shape: tuple, dtype, fill=None):
        length = self.atoms if name.startswith("atoms/") else self.frames
        extra = {} if fill is None else {"fillvalue": fill}
        return self.file.create_dataset(name, shape=(length, *shape), maxshape=(None, *shape), dtype=dtype,
                                        chunks=(ROWS_PER_CHUNK, *shape), **extra)

    def append(self, frames: Sequence[Frame]) -> None:
        if not frames:
            return
        counts = np.array([f.num_atoms for f in frames], dtype=np.int64)
        arrays = {
            "atoms/numbers": np.concatenate([f.numbers for f in frames]).astype(np.uint8),
            "atoms/positions": np.concatenate([f.positions for f in frames]),
            "frames/energy": np.array([np.nan if f.energy is None else f.energy for f in frames]),
            "frames/cell": np.stack([f.cell for f in frames]),
            "frames/pbc": np.stack([f.pbc for f in frames]),
            "frames/has_forces": np.array([f.forces is not None for f in frames]),
        }
        if any(f.forces is not None for f in frames):
            arrays["atoms/forces"] = np.concatenate([f.forces if f.forces is not None else np.full((f.num_atoms, 3), np.nan)
                                                     for f in frames])
        for name in ("stress", "virial"):
            if any(getattr(f, name) is not None for f in frames):
                arrays[f"frames/{name}"] = np.stack([getattr(f, name) if getattr(f, name) is not None
                                                     else np.full((3, 3), np.nan) for f in frames])
        if any(f.weight != 1.0 for f in frames):
            arrays["frames/weight"] = np.array([f.weight for f in frames], dtype=np.float64)
        for name, (group, shape, fill) in OPTIONAL.items():
            if f"{group}/{name}" in arrays and f"{group}/{name}" not in self.file:
                self._create(f"{group}/{name}", shape, np.float64, fill)
        ends = {"atoms": self.atoms + int(counts.sum()), "frames": self.frames + len(frames)}
        for group in ("atoms", "frames"):
            start = self.atoms if group == "atoms" else self.frames
            for name, dataset in self.file[group].items():
                if name == "atom_offset":
                    continue
                dataset.resize(ends[group], axis=0)  # arrays this chunk lacks read as missing
                if f"{group}/{name}" in arrays:
                    dataset[start : ends[group]] = arrays[f"{group}/{name}"]
        offsets = self.file["frames/atom_offset"]
        offsets.resize(ends["frames"] + 1, axis=0)
        offsets[self.frames + 1 :] = self.atoms + np.cumsum(counts)
        self.frames, self.atoms = ends["frames"], ends["atoms"]

    def finish(self, report: ReadReport, source, energy_unit: str, factor: float, keys: dict) -> None:
        attrs = self.file.attrs
        attrs.update({
            "format": FORMAT, "format_version": FORMAT_VERSION, "source": str(source), "energy_unit": energy_unit,
            "energy_factor_to_eV": factor, "units": "eV and Å (forces eV/Å, stress eV/Å^3, virial eV)",
            "keys": json.dumps(keys), "frames": self.frames, "atoms": self.atoms,
            "elements": json.dumps({str(z): n for z, n in sorted(report.elements.items())}),
            "labels": json.dumps(report.labels), "isolated_atoms": report.isolated_atoms,
            "keys_seen": json.dumps(sorted(str(k) for k in report.keys_seen)),
        })
        self.file.close()

    def discard(self) -> None:
        self.file.close()
