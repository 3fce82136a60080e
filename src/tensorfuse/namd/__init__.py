"""Non-adiabatic molecular dynamics: surface hopping on multi-state surfaces (atomic units inside).

* :class:`SurfaceHopping`: Tully's fewest-switches surface hopping (FSSH, with energy-based
  decoherence) or Landau–Zener hopping, for a batch of trajectories with one surface call per step.
* Model problems with exact answers: Tully's three one-dimensional models
  (:class:`TullySimpleAvoidedCrossing`, :class:`TullyDualAvoidedCrossing`,
  :class:`TullyExtendedCoupling`) and :func:`wave_packet_scattering`, exact quantum dynamics of them.
"""

from tensorfuse.namd._exact import Scattering, wave_packet_scattering
from tensorfuse.namd._hopping import METHODS, Ensemble, Hop, SurfaceHopping
from tensorfuse.namd._surfaces import (
    AMU,
    BOHR,
    FS,
    HARTREE,
    DiabaticModel,
    SurfacePoint,
    TullyDualAvoidedCrossing,
    TullyExtendedCoupling,
    TullySimpleAvoidedCrossing,
)

__all__ = [
    "AMU",
    "BOHR",
    "FS",
    "HARTREE",
    "METHODS",
    "DiabaticModel",
    "Ensemble",
    "Hop",
    "Scattering",
    "SurfaceHopping",
    "SurfacePoint",
    "TullyDualAvoidedCrossing",
    "TullyExtendedCoupling",
    "TullySimpleAvoidedCrossing",
    "wave_packet_scattering",
]
