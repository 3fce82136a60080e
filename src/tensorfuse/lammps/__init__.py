"""tensorfuse in LAMMPS.

* ``pair_style tensorfuse`` (:mod:`tensorfuse.lammps._plugin`): a C++ plugin that plain ``lmp``
  loads with ``plugin load``; it runs a model compiled ahead of time
  (:func:`tensorfuse.model.compile_model`, ``tensorfuse export --for lammps``) without Python, with LAMMPS's own
  neighbour lists, ghost atoms and reverse communication.
* ``fix external`` driver (:mod:`tensorfuse.lammps._driver`, ``tensorfuse lammps MODEL IN``): the
  Python model attached to LAMMPS's Python module, for models that are not compiled.
"""

from tensorfuse.lammps._driver import (
    LammpsDriver,
    lammps_from_atoms,
    load_lammps,
    new_lammps,
    run_input,
    split_at_first_run,
)
from tensorfuse.lammps._plugin import build_plugin, lammps_executable, lammps_environment

__all__ = [
    "LammpsDriver",
    "build_plugin",
    "lammps_environment",
    "lammps_executable",
    "lammps_from_atoms",
    "load_lammps",
    "new_lammps",
    "run_input",
    "split_at_first_run",
]
