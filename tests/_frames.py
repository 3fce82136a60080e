"""Frames as most users' files hold them, for tests of the command line and the manual."""

from __future__ import annotations


def labelled(frames):
    """Copies with ``REF_energy``/``REF_forces`` labels and no ASE calculator."""
    from ase import Atoms

    out = []
    for atoms in frames:
        copy = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        copy.info["REF_energy"] = atoms.get_potential_energy()
        copy.arrays["REF_forces"] = atoms.get_forces()
        out.append(copy)
    return out
