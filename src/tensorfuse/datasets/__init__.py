"""Small data sets shipped with tensorfuse (see README.md here): ``path("ethylene_casscf")``.

* ``ethanol_train``, ``ethanol_test``: rMD17 ethanol (eV), the demo of ``tensorfuse train``;
* ``ethylene_casscf``: ethylene S0/S1 by SA-CASSCF(2,2)/6-31G* (orbitals averaged over three states) with derivative couplings.

``python -m tensorfuse.datasets NAME`` prints the file's path (for the command line).
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.xyz"))


def path(name: str) -> Path:
    """The file of the bundled data set ``name`` (without ``.xyz``)."""
    file = FOLDER / f"{name}.xyz"
    if not file.exists():
        raise ValueError(f"no bundled data set {name!r}: there are {names()}")
    return file
