"""Reading labelled structures (extxyz or anything ASE reads, rMD17 npz) with validation.

Every problem is reported with the file, the frame index and the key, before any training starts.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tensorfuse.data._neighbors import MAX_COORDINATE
from tensorfuse.data._states import StateKeys, StateLabels, read_state_labels, state_order_warning

ENERGY_UNITS = {"eV": 1.0, "meV": 1e-3, "kcal/mol": 0.0433641043, "kJ/mol": 0.0103642688, "Hartree": 27.211386246}
"""Factors to eV. Forces use the same unit per Å, stress the same unit per Å^3."""

RMD17_KEYS = ("nuclear_charges", "coords", "energies", "forces")

# |E| per atom in eV that no element's total energy reaches: twice the Thomas-Fermi energy
# 20.8 Z^(7/3) eV (all-electron totals stay below it) plus 100 eV. Energies in kcal/mol or kJ/mol
# read as eV exceed it by an order of magnitude for light elements.
def _energy_bound(numbers: np.ndarray) -> float:
    return float(np.sum(2 * 20.8 * numbers.astype(np.float64) ** (7 / 3) + 100.0))


class DataError(ValueError):
    """Bad input data; the message names the file, the frame and the key."""


@dataclass
class Frame:
    """One labelled structure, in eV and Å. Missing labels are ``None``.

    ``stress`` is the 3x3 stress in eV/Å^3 with ASE's sign convention (positive under tension);
    ``virial`` is ``-stress * volume`` in eV (one of them is enough).
    """

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    virial: np.ndarray | None = None
    source: str = ""
    config_type: str = "Default"
    weight: float = 1.0
    states: "StateLabels | None" = None  # several electronic states; energy/forces are then the first state's

    @property
    def num_atoms(self) -> int:
        return len(self.numbers)

    @property
    def is_isolated_atom(self) -> bool:
        return self.num_atoms == 1 and not self.pbc.any()

    def to_atoms(self):
        from ase import Atoms

        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)


@dataclass(frozen=True)
class DataKeys:
    """Where labels are read from (``atoms.info`` / ``atoms.arrays``, or ASE's calculator results).

    ASE >= 3.23 moves ``energy``, ``forces`` and ``stress`` of an extxyz file into a
    ``SinglePointCalculator`` rather than ``info``/``arrays``; both places are searched. Keys with a
    prefix (MACE's ``REF_energy``) avoid the ambiguity altogether.
    """

    energy: str = "energy"
    forces: str = "forces"
    stress: str = "stress"
    virial: str = "virial"
    config_type: str = "config_type"
    weight: str = "config_weight"


@dataclass
class ReadReport:
    """What was read from one file (printed as a table before training)."""

    path: str
    frames: int = 0
    atoms: int = 0
    elements: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)  # key -> number of frames that have it
    isolated_atoms: int = 0
    energy_unit: str = "eV"
    keys_seen: set = field(default_factory=set)  # info/arrays/calculator keys of the frames, for error messages

    def row(self) -> str:
        elements = " ".join(f"{_symbol(z)}:{n}" for z, n in sorted(self.elements.items()))
        labels = ", ".join(f"{k} {v}/{self.frames}" for k, v in self.labels.items())
        return (f"{self.path}: {self.frames} frames, {self.atoms} atoms, elements {elements}; "
                f"labels: {labels}; isolated atoms: {self.isolated_atoms}; energy unit {self.energy_unit}")


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)


def read_frames(
    path,
    keys: DataKeys = DataKeys(),
    energy_unit: str | None = None,
    index: str = ":",
    states: StateKeys | None = None,
) -> tuple[list[Frame], ReadReport]:
    """Read every frame of ``path`` (extxyz or any ASE format; rMD17 ``.npz``), converted to eV/Å.

    ``energy_unit`` is the unit of energies (and forces per Å, stress per Å^3) in the file; the
    default is eV, except for rMD17 ``.npz`` files, whose documented unit is kcal/mol. With
    ``states`` the frames carry the labels of several electronic states (``Frame.states``; its
    ``energy``/``forces`` are then those of the first state, for the reference energies).
    Raises :class:`DataError` for an empty or unreadable file and for malformed labels.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".npz":
        if states is not None:
            raise DataError(f"{path}: an rMD17 .npz file has one state; multi-state data are read from extxyz")
        return _read_npz(path, energy_unit)
    unit = energy_unit or "eV"
    factor = _unit_factor(unit, path)
    try:
        from ase.io import read

        images = read(str(path), index=index)
    except Exception as error:  # ASE raises many types; the user needs the file, frame and reason
        raise DataError(f"{_locate_unreadable(path)}: cannot be read by ASE ({type(error).__name__}: {error})") from None
    if not isinstance(images, list):
        images = [images]
    if not images:
        raise DataError(f"{path}: the file contains no structures")
    frames = [_frame_from_atoms(atoms, keys, factor, f"{path}, frame {i}", states) for i, atoms in enumerate(images)]
    report = _report(path, frames, [keys.energy, keys.forces, keys.stress, keys.virial], unit)
    if states is not None:
        report.labels = _state_label_counts(frames, states)
        order = state_order_warning(frames, states, path)
        if order is not None:
            warnings.warn(order, stacklevel=2)
    for atoms in images[:100]:  # enough to list what the file holds
        calc = getattr(atoms, "calc", None)
        report.keys_seen.update(atoms.info, set(atoms.arrays) - {"numbers", "positions"},
                                getattr(calc, "results", None) or {})
    _check_energy_scale(path, frames, unit)
    return frames, report


def _locate_unreadable(path: Path) -> str:
    """``path`` or ``path, frame k``: the first frame ASE fails on, found by reading one at a time."""
    from ase.io import iread

    k = 0
    try:
        for _ in iread(str(path), index=":"):
            k += 1
    except Exception:
        return f"{path}, frame {k}"
    return str(path)


def _unit_factor(unit: str, path) -> float:
    if unit not in ENERGY_UNITS:
        raise DataError(f"{path}: unknown energy unit {unit!r}; expected one of {sorted(ENERGY_UNITS)}")
    return ENERGY_UNITS[unit]


def _read_npz(path: Path, energy_unit: str | None) -> tuple[list[Frame], ReadReport]:
    data = np.load(path)
    missing = [k for k in RMD17_KEYS if k not in data.files]
    if missing:
        raise DataError(f"{path}: an .npz file must have the rMD17 keys {list(RMD17_KEYS)}; missing {missing}")
    unit = energy_unit or "kcal/mol"
    factor = _unit_factor(unit, path)
    numbers = data["nuclear_charges"].astype(np.int64)
    coords, energies, forces = data["coords"], data["energies"], data["forces"]
    n = len(energies)
    if n == 0:
        raise DataError(f"{path}: the file contains no structures")
    if coords.shape != (n, len(numbers), 3) or forces.shape != (n, len(numbers), 3):
        raise DataError(f"{path}: key 'coords'/'forces' must have shape ({n}, {len(numbers)}, 3), "
                        f"got {coords.shape} and {forces.shape}")
    frames = []
    for i in range(n):
        source = f"{path}, frame {i}"
        frame = Frame(numbers=numbers.copy(), positions=coords[i].astype(np.float64), cell=np.zeros((3, 3)),
                      pbc=np.zeros(3, dtype=bool), energy=float(energies[i]) * factor,
                      forces=forces[i].astype(np.float64) * factor, source=source)
        check_frame(frame, source)
        frames.append(frame)
    report = _report(path, frames, ["energies", "forces"], unit)
    report.keys_seen.update(data.files)
    _check_energy_scale(path, frames, unit)
    return frames, report


def _label(atoms, key: str, per_atom: bool):
    """A label from info/arrays, or from the calculator results (ASE >= 3.23 extxyz)."""
    store = atoms.arrays if per_atom else atoms.info
    if key in store:
        return store[key]
    if not per_atom and key in atoms.arrays:
        return atoms.arrays[key]
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None) or {}
    aliases = {"energy": ("energy", "free_energy"), "free_energy": ("free_energy",), "forces": ("forces",),
               "stress": ("stress",)}
    for name in aliases.get(key, ()):
        if name in results:
            return results[name]
    return None


def _state_label_counts(frames, states: StateKeys) -> dict:
    counts = {}
    for s in range(len(states.names)):
        counts[states.energy_key(s)] = sum(bool(f.states.has_energy[s]) for f in frames)
        counts[states.forces_key(s)] = sum(bool(f.states.has_forces[s]) for f in frames)
    for p, (i, j) in enumerate(states.pairs):
        counts[states.coupling_key(i, j)] = sum(bool(f.states.has_couplings[p]) for f in frames)
    return counts


def _frame_from_atoms(atoms, keys: DataKeys, factor: float, source: str, states: StateKeys | None = None) -> Frame:
    n = len(atoms)
    frame = Frame(
        numbers=atoms.get_atomic_numbers().astype(np.int64),
        positions=np.asarray(atoms.get_positions(), dtype=np.float64),
        cell=np.asarray(atoms.cell.array, dtype=np.float64),
        pbc=np.asarray(atoms.pbc, dtype=bool),
        source=source,
        config_type=str(atoms.info.get(keys.config_type, "Default")),
    )
    weight = atoms.info.get(keys.weight, 1.0)
    try:
        frame.weight = float(weight)
    except (TypeError, ValueError):
        raise DataError(f"{source}: key {keys.weight!r} must be a number, got {weight!r}") from None
    if states is not None:
        frame.states = read_state_labels(atoms, states, factor, source, _label)
        if frame.states.has_energy[0]:
            frame.energy = float(frame.states.energies[0])
        if frame.states.has_forces[0]:
            frame.forces = frame.states.forces[0]
    energy = _label(atoms, keys.energy, per_atom=False) if states is None else None
    if energy is not None:
        try:
            frame.energy = float(np.asarray(energy).reshape(())) * factor
        except (TypeError, ValueError):
            raise DataError(f"{source}: key {keys.energy!r} must be one number, got {energy!r}") from None
    forces = _label(atoms, keys.forces, per_atom=True) if states is None else None
    if forces is not None:
        forces = np.asarray(forces, dtype=np.float64)
        if forces.shape != (n, 3):
            raise DataError(f"{source}: key {keys.forces!r} must have shape ({n}, 3), got {forces.shape}")
        frame.forces = forces * factor
    for name, key in (("stress", keys.stress), ("virial", keys.virial)):
        value = _label(atoms, key, per_atom=False)
        if value is None:
            continue
        try:
            matrix = _as_matrix(np.asarray(value, dtype=np.float64))
        except ValueError:
            raise DataError(f"{source}: key {key!r} must have 9 or 6 (Voigt) components, "
                            f"got shape {np.shape(value)}") from None
        setattr(frame, name, matrix * factor)
    check_frame(frame, source, keys)
    return frame


def _as_matrix(value: np.ndarray) -> np.ndarray:
    if value.size == 9:
        return value.reshape(3, 3)
    if value.size == 6:  # Voigt: xx yy zz yz xz xy
        xx, yy, zz, yz, xz, xy = value.reshape(6)
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError


def check_structure(numbers, positions, cell, pbc, source: str) -> None:
    """Raise :class:`DataError` (naming ``source``) for a structure no potential can evaluate: no
    atoms, NaN/infinite or absurdly large coordinates (see ``MAX_COORDINATE``), a degenerate or
    huge periodic cell."""
    if len(numbers) == 0:
        raise DataError(f"{source}: the structure has no atoms")
    positions = np.asarray(positions)
    if not np.all(np.isfinite(positions)):
        atom = int(np.argwhere(~np.isfinite(positions))[0, 0])
        raise DataError(f"{source}: positions contain NaN or infinite values (atom {atom})")
    largest = np.abs(positions).max()
    if largest > MAX_COORDINATE:
        atom = int(np.abs(positions).max(axis=1).argmax())
        raise DataError(f"{source}: atom {atom} has a coordinate of {largest:.4g} Å; coordinates beyond "
                        f"{MAX_COORDINATE:g} Å are not supported (a unit mistake?)")
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.any():
        cell = np.asarray(cell, dtype=np.float64)
        if not np.all(np.isfinite(cell)):
            raise DataError(f"{source}: the cell contains NaN or infinite values")
        lengths = np.linalg.norm(cell, axis=1)
        if lengths.max() > MAX_COORDINATE:
            raise DataError(f"{source}: a cell vector is {lengths.max():.4g} Å long; more than "
                            f"{MAX_COORDINATE:g} Å is not supported")
        if abs(np.linalg.det(cell)) < 1e-12:
            raise DataError(f"{source}: the structure is periodic (pbc={pbc.tolist()}) but its cell has no volume")


def check_frame(frame: Frame, source: str, keys: DataKeys = DataKeys()) -> None:
    """:func:`check_structure`, and finite labels."""
    check_structure(frame.numbers, frame.positions, frame.cell, frame.pbc, source)
    for name, key in (("energy", keys.energy), ("forces", keys.forces), ("stress", keys.stress),
                      ("virial", keys.virial)):
        value = getattr(frame, name)
        if value is not None and not np.all(np.isfinite(value)):
            raise DataError(f"{source}: key {key!r} contains NaN or infinite values")


def _check_energy_scale(path, frames: Sequence[Frame], unit: str) -> None:
    """Warn (with counts) when energies exceed any element's total energy in eV: wrong unit."""
    implausible = implausible_energies(frames)
    if implausible:
        warnings.warn(energy_scale_message(path, len(implausible), len(frames), implausible[0], unit), stacklevel=3)


def implausible_energies(frames: Sequence[Frame]) -> list[Frame]:
    """The frames whose energy exceeds any total energy in eV of their atoms (see ``_energy_bound``)."""
    return [f for f in frames if f.energy is not None and abs(f.energy) > _energy_bound(f.numbers)]


def energy_scale_message(path, count: int, total: int, first: Frame, unit: str) -> str:
    return (f"{path}: {count} of {total} frames have energies larger in magnitude than any "
            f"total energy in eV of their atoms (first: {first.source}, {first.energy:.6g} eV for "
            f"{first.num_atoms} atoms after reading the file as {unit}); if the file is in kcal/mol or kJ/mol, "
            "give the unit (--energy-unit, data.energy_unit)")


def _report(path, frames: Sequence[Frame], key_names, unit: str) -> ReadReport:
    report = ReadReport(str(path), frames=len(frames), energy_unit=unit)
    for f in frames:
        report.atoms += f.num_atoms
        for z in f.numbers.tolist():
            report.elements[z] = report.elements.get(z, 0) + 1
        report.isolated_atoms += int(f.is_isolated_atom)
    names = ("energy", "forces", "stress", "virial")
    for key, name in zip(key_names, names):
        report.labels[key] = sum(getattr(f, name) is not None for f in frames)
    return report


def validate_frames(
    frames: Sequence[Frame],
    species: Sequence[int] | None = None,
    r_max: float | None = None,
    min_distance: float = 0.5,
    require: Sequence[str] = ("energy",),
    keys: DataKeys = DataKeys(),
    allow_missing: bool = False,
    neighbours: dict | None = None,
) -> list[str]:
    """Check frames before training; raise :class:`DataError` or return warnings (with counts).

    Errors: a required label missing (unless ``allow_missing``: then a warning with counts), an
    element the model does not know, two atoms closer than ``min_distance`` Å. Warnings: atoms
    without any neighbour within ``r_max`` in frames of several atoms. ``frames`` is iterated once
    per required label and once for the rest (it may be read from disk). A ``neighbours`` dict gets
    ``edges`` (directed pairs within ``r_max``, periodic images included) and ``atoms``: the
    neighbour statistics of the frames, counted by the same pass.
    """
    messages: list[str] = []
    key_of = {"energy": keys.energy, "forces": keys.forces, "stress": keys.stress, "virial": keys.virial}
    for name in require:
        missing, first = 0, None
        for f in frames:
            if getattr(f, name) is None and not (name == "stress" and f.virial is not None):
                missing, first = missing + 1, first or f.source
        if missing:
            text = (f"{missing} of {len(frames)} frames have no {key_of[name]!r} label "
                    f"(first: {first})")
            if not allow_missing:
                raise DataError(text + "; set the right key, or allow missing labels to train without them")
            messages.append(text + ": those frames are trained without it")
    known = set(species) if species is not None else None
    lonely_frames, lonely_atoms, first_lonely, edges, atoms = 0, 0, None, 0, 0
    for f in frames:
        if known is not None:
            unknown = sorted(set(f.numbers.tolist()) - known)
            if unknown:
                raise DataError(f"{f.source}: element(s) {[_symbol(z) for z in unknown]} (Z={unknown}) are not "
                                f"in the model's species {[_symbol(z) for z in sorted(known)]}")
        atoms += f.num_atoms
        if f.num_atoms < 2:
            if neighbours is not None and r_max is not None:  # a periodic atom sees its own images
                edges += len(_neighbor_list(f, r_max)[0])
            continue
        receiver, sender, lengths, within_r_max = _pair_distances(f, max(min_distance, r_max or 0.0), r_max)
        edges += within_r_max
        close = lengths < min_distance
        if close.any():
            k = int(np.argmin(np.where(close, lengths, np.inf)))  # the first of the closest pairs
            i, j, d = int(receiver[k]), int(sender[k]), float(lengths[k])
            raise DataError(f"{f.source}: atoms {i} and {j} are {d:.3f} Å apart, closer than {min_distance} Å")
        if r_max is not None:
            has_neighbour = np.zeros(f.num_atoms, dtype=bool)
            within = lengths < r_max
            has_neighbour[receiver[within]] = True
            has_neighbour[sender[within]] = True
            if not has_neighbour.all():
                lonely_frames, first_lonely = lonely_frames + 1, first_lonely or f.source
                lonely_atoms += int((~has_neighbour).sum())
    if lonely_frames:
        messages.append(f"{lonely_atoms} atoms in {lonely_frames} frames have no neighbour within "
                        f"r_max={r_max} Å (first: {first_lonely})")
    if neighbours is not None:
        neighbours.update(edges=edges, atoms=atoms)
    for message in messages:
        warnings.warn(message, stacklevel=2)
    return messages


def _neighbor_list(frame: Frame, cutoff: float):
    from tensorfuse.data._neighbors import neighbor_list

    return neighbor_list(frame.positions, frame.cell, frame.pbc, cutoff)


def _pair_distances(frame: Frame, cutoff: float, r_max: float | None = None):
    """``(i, j, |r_ij|)`` of the pairs ``i < j`` within ``cutoff`` (arrays: validating millions of
    frames stays fast), and how many directed edges lie within ``r_max`` (images included)."""
    sender, receiver, shifts = _neighbor_list(frame, cutoff)
    vectors = frame.positions[sender] - frame.positions[receiver] + shifts @ frame.cell
    lengths = np.linalg.norm(vectors, axis=1)
    # the same list as the graphs' when the cutoff is r_max (the usual case: r_max > min_distance)
    within_r_max = 0 if r_max is None else len(sender) if cutoff == r_max else int((lengths < r_max).sum())
    keep = sender > receiver
    return receiver[keep], sender[keep], lengths[keep], within_r_max


def isolated_atom_energies(frames: Sequence[Frame]) -> dict[int, float]:
    """E0 per element from single, non-periodic atoms with an energy (e.g. config_type IsolatedAtom)."""
    energies: dict[int, list[float]] = {}
    for f in frames:
        if f.is_isolated_atom and f.energy is not None:
            energies.setdefault(int(f.numbers[0]), []).append(f.energy)
    return {z: float(np.mean(v)) for z, v in energies.items()}


def write_frames(path, frames: Sequence[Frame], predictions: Sequence[dict] | None = None) -> None:
    """Write frames (and optional predictions under ``pred_*`` keys) as extxyz."""
    from ase.io import write

    images = []
    for k, f in enumerate(frames):
        atoms = f.to_atoms()
        if f.energy is not None:
            atoms.info["REF_energy"] = f.energy
        if f.forces is not None:
            atoms.arrays["REF_forces"] = f.forces
        if predictions is not None:
            for key, value in predictions[k].items():
                value = np.asarray(value)
                if value.ndim == 2 and value.shape[0] == f.num_atoms:
                    atoms.arrays[f"pred_{key}"] = value
                else:
                    atoms.info[f"pred_{key}"] = value.tolist() if value.ndim else float(value)
        images.append(atoms)
    write(str(path), images, format="extxyz")
