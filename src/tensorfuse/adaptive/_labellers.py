"""Labellers: geometries in, per-state energies, forces and couplings out (a small plug-in interface).

A labeller is any callable ``labeller(frames) -> labelled`` that takes ASE ``Atoms`` and returns
labelled copies (``energy_<state>`` in ``info``, ``forces_<state>`` and ``nac_<i>_<j>`` (1/Å) in
``arrays``, eV and Å), ``None`` for a frame it could not label, one at a time through
``labeller.each(frames)`` so that every label can be written as it completes. Built in:

* :class:`ModelLabeller`: a multi-state model file as the reference (an analytic surface: fast,
  smooth, exact couplings; what the tests use);
* :class:`CasscfLabeller`: SA-CASSCF with PySCF in worker processes, orbitals carried from the
  nearest labelled geometry, continuity checks;
* :class:`CommandLabeller`: an external program (``"orca_wrapper {input} {output}"``) reading and
  writing extxyz;
* :func:`callable_labeller`: ``"package.module:function"``, a Python function ``frames -> labelled``.
"""

from __future__ import annotations

import importlib
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np


class Labeller:
    """The interface: ``names`` (the states, lowest first) and ``each(frames)`` yielding ``(k, labelled
    or None)`` as each frame is done (in any order); ``__call__`` collects them in order."""

    names: tuple[str, ...] = ()

    def each(self, frames: list) -> Iterator[tuple[int, object]]:
        raise NotImplementedError

    def __call__(self, frames: list) -> list:
        out = [None] * len(frames)
        for k, labelled in self.each(frames):
            out[k] = labelled
        return out


def _labelled_copy(atoms, names, energies, forces, couplings: dict) -> object:
    copy = atoms.copy()
    copy.calc = None
    for s, name in enumerate(names):
        copy.info[f"energy_{name}"] = float(energies[s])
        copy.arrays[f"forces_{name}"] = np.asarray(forces[s], dtype=np.float64)
    for (i, j), d in couplings.items():
        copy.arrays[f"nac_{names[i]}_{names[j]}"] = np.asarray(d, dtype=np.float64)
    return copy


class ModelLabeller(Labeller):
    """A multi-state model (file) as the reference surface: energies, forces and the derivative
    couplings ``d = h / ΔE`` of its coupling head, for every frame."""

    def __init__(self, model, names: Iterable[str] | None = None):
        import torch

        from tensorfuse.model._serialization import load_model

        self.model = load_model(model, dtype=torch.float64) if isinstance(model, (str, Path)) else model
        config = self.model.config
        if config.num_states < 2:
            raise ValueError("a reference model for labels needs two or more states")
        self.names = tuple(names or config.states)
        self.pairs = config.state_pairs

    def each(self, frames):
        for k, atoms in enumerate(frames):
            out = self.model.predict(atoms)
            energies = np.asarray(out["energy"])
            forces = np.asarray(out["forces"]).transpose(1, 0, 2)  # [S, N, 3]
            couplings = {}
            if "couplings" in out:
                for p, (i, j) in enumerate(self.pairs):
                    gap = energies[j] - energies[i]
                    couplings[(i, j)] = out["couplings"][:, p] / (gap if abs(gap) > 1e-9 else 1e-9)
            yield k, _labelled_copy(atoms, self.names, energies, forces, couplings)


class CasscfLabeller(Labeller):
    """SA-CASSCF labels with PySCF (:func:`tensorfuse.qm.label_sa_casscf`) in ``workers``
    single-thread processes. Each frame starts from the orbitals of the nearest geometry labelled
    so far (by the distances between its atoms), else from the RHF guess; a frame is dropped
    (``None``) where CASSCF does not converge, a state is not a singlet (⟨S²⟩ > 0.01) or the states
    are out of order — the continuity checks of the bundled data."""

    def __init__(self, settings=None, names: Iterable[str] = ("S0", "S1"), workers: int = 1):
        from tensorfuse.qm import CasscfSettings

        self.settings = settings or CasscfSettings(nstates=len(tuple(names)))
        self.names = tuple(names)
        if len(self.names) != self.settings.nstates:
            raise ValueError(f"{len(self.names)} state names for {self.settings.nstates} SA-CASSCF states")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.known: list[tuple[np.ndarray, np.ndarray]] = []  # (interatomic distances, orbitals) of labelled frames

    def _start(self, atoms):
        if not self.known:
            return None
        distances = _distances(atoms.positions)
        best = min(self.known, key=lambda item: float(np.abs(item[0] - distances).mean()))
        return best[1]

    def each(self, frames):
        from concurrent.futures import ProcessPoolExecutor, as_completed

        if self.workers == 1:
            for k, atoms in enumerate(frames):
                yield k, self._keep(atoms, _casscf_job((atoms, self.settings, self._start(atoms))))
            return
        with ProcessPoolExecutor(max_workers=self.workers, initializer=_single_thread) as pool:
            futures = {pool.submit(_casscf_job, (atoms, self.settings, self._start(atoms))): k
                       for k, atoms in enumerate(frames)}
            for future in as_completed(futures):
                k = futures[future]
                yield k, self._keep(frames[k], future.result())

    def _keep(self, atoms, labels):
        if labels is None or not labels.converged or max(labels.spin_square) > 0.01:
            return None
        if np.any(np.diff(labels.energies) <= 0):
            return None
        self.known.append((_distances(atoms.positions), labels.mo_coeff))
        return _labelled_copy(atoms, self.names, labels.energies, labels.forces, labels.couplings)


def _single_thread():
    import os

    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        from pyscf import lib

        lib.num_threads(1)
    except ImportError:
        pass


def _casscf_job(item):
    from tensorfuse.qm import label_sa_casscf

    atoms, settings, start = item
    try:
        return label_sa_casscf(atoms, settings, start)
    except Exception:  # noqa: BLE001 -- a frame without a solution is dropped, the others go on
        return None


def _distances(positions: np.ndarray) -> np.ndarray:
    return np.linalg.norm(positions[:, None] - positions[None], axis=-1)


class CommandLabeller(Labeller):
    """An external program: ``command`` with ``{input}`` and ``{output}`` (extxyz files) in it, run on
    all frames at once; it writes the frames it could label, each with ``info["index"]`` (its
    position in the input, which this labeller writes there) and the state labels."""

    def __init__(self, command: str, names: Iterable[str]):
        if "{input}" not in command or "{output}" not in command:
            raise ValueError(f"the labelling command {command!r} must contain {{input}} and {{output}}")
        self.command, self.names = command, tuple(names)

    def each(self, frames):
        from ase.io import read, write

        with tempfile.TemporaryDirectory() as folder:
            source, target = Path(folder) / "input.xyz", Path(folder) / "output.xyz"
            marked = []
            for k, atoms in enumerate(frames):
                copy = atoms.copy()
                copy.calc = None
                copy.info["index"] = k
                marked.append(copy)
            write(source, marked, format="extxyz")
            argv = [part.format(input=source, output=target) for part in shlex.split(self.command)]
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise ValueError(f"the labelling command {self.command!r} failed (exit {done.returncode}): {last[0]}")
            labelled = read(target, ":") if target.exists() and target.stat().st_size else []
            for atoms in labelled:
                yield int(atoms.info.pop("index")), atoms


def callable_labeller(spec: str, names: Iterable[str]) -> Labeller:
    """``"module:function"``: a Python function ``frames -> labelled frames (or None each)``."""
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"a Python labeller is 'module:function', got {spec!r}")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load the labeller {spec!r}: {error}") from None

    class _Function(Labeller):
        def each(self, frames):
            yield from enumerate(function(frames))

    labeller = _Function()
    labeller.names = tuple(names)
    return labeller
