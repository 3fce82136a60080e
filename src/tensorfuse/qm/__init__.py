"""Reference labels from quantum chemistry (PySCF, an optional extra: ``pip install -e ".[qm]"``).

:func:`label_sa_casscf` gives several electronic states' energies, analytic gradients and
derivative couplings of a structure by state-averaged CASSCF, in the units and keys tensorfuse's
multi-state data use (eV, eV/Å, 1/Å; ``energy_S0``, ``forces_S0``, ``nac_S0_S1``).
"""

from tensorfuse.qm._casscf import CasscfLabels, CasscfSettings, label_sa_casscf

__all__ = ["CasscfLabels", "CasscfSettings", "label_sa_casscf"]
