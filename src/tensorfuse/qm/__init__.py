"""Reference labels from quantum chemistry (PySCF, an optional extra: ``pip install -e ".[qm]"``).

:func:`label_sa_casscf` gives several electronic states' energies, analytic gradients and
derivative couplings of a structure by state-averaged CASSCF, in the units and keys tensorfuse's
multi-state data use (eV, eV/Å, 1/Å; ``energy_S0``, ``forces_S0``, ``nac_S0_S1``);
:class:`CasscfSurface` is the same method as a surface for on-the-fly surface hopping.
"""

from tensorfuse.qm._casscf import CasscfLabels, CasscfSettings, label_sa_casscf
from tensorfuse.qm._surface import CasscfSurface

__all__ = ["CasscfLabels", "CasscfSettings", "CasscfSurface", "label_sa_casscf"]
