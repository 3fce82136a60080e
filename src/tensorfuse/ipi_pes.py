"""tensorfuse as a PES module of i-PI's own Python driver (``i-pi-py_driver``), as i-PI 3 ships
for MACE: the in-process form i-PI users know, beside the socket driver of ``tensorfuse ipi``::

    i-pi-py_driver -m custom -P "$(tensorfuse ipi --pes-file)" -a localhost -p 31415 \\
        -o template=init.xyz,model=run/model.pt[,device=cpu][,dtype=float32]

``template`` gives the elements, atom order and periodicity (i-PI sends positions and a cell
only), exactly as the structure of ``tensorfuse ipi``: a periodic template gets i-PI's cell and
returns the virial; a molecule ignores the cell and returns a zero virial. This file imports i-PI
(``pip install ipi``): i-PI loads it, ``import tensorfuse`` never does.
"""

from __future__ import annotations

import numpy as np
from ipi.pes._ase import ASEDriver

__DRIVER_NAME__ = "tensorfuse"
__DRIVER_CLASS__ = "TensorfuseDriver"


class TensorfuseDriver(ASEDriver):
    """i-PI's ASE driver around :class:`tensorfuse.calculator.Calculator` (units: i-PI's atomic
    units to Å and eV and back, done by i-PI's base class)."""

    def __init__(self, template, model, device="cpu", dtype=None, *args, **kwargs):
        self.model_path, self.device, self.dtype = str(model), str(device), dtype
        super().__init__(template, *args, **kwargs)

    def check_parameters(self):
        from tensorfuse.ipi import check_elements, make_calculator

        super().check_parameters()  # reads the template
        self.ase_calculator = make_calculator(self.model_path, self.device, self.dtype)
        check_elements(self.template_ase, self.ase_calculator, str(self.template))
        self.periodic = bool(self.template_ase.pbc.all())
        self.capabilities = ["energy", "forces", "stress"]  # a molecule's stress is a zero, added below

    def compute_structure(self, cell, pos):
        cell, pos = self.convert_units(cell, pos)
        structure = self.template_ase.copy()
        structure.positions[:] = pos
        if self.periodic:  # a molecule keeps its template's cell: i-PI's box means nothing to it
            structure.cell[:] = cell
        structure.calc = self.ase_calculator
        properties = dict(structure.get_properties(["energy", "forces"] + (["stress"] if self.periodic else [])))
        if not self.periodic:  # a molecule has no stress: i-PI gets a zero virial
            properties["stress"] = np.zeros((3, 3))
        return self.post_process(properties, structure)
