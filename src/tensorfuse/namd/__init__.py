"""Non-adiabatic molecular dynamics: surface hopping on multi-state surfaces (atomic units inside).

* :class:`SurfaceHopping`: Tully's fewest-switches surface hopping (FSSH, with energy-based
  decoherence) or Landau–Zener hopping, for a batch of trajectories with one surface call per step.
* :class:`ModelSurface`: a learned multi-state model as a surface; :func:`run_namd`, an ensemble
  from Wigner-sampled initial conditions to populations, hops, a lifetime and product yields
  (the ``tensorfuse namd`` command); :func:`run_ensemble`, the same on any surface (ab initio:
  :class:`tensorfuse.qm.CasscfSurface`); :func:`mudslide_model` runs mudslide's methods on any surface.
* Model problems with exact answers: Tully's three one-dimensional models
  (:class:`TullySimpleAvoidedCrossing`, :class:`TullyDualAvoidedCrossing`,
  :class:`TullyExtendedCoupling`) and :func:`wave_packet_scattering`, exact quantum dynamics of them.
"""

from tensorfuse.namd._analysis import Criterion, Lifetime, fit_lifetime
from tensorfuse.namd._exact import Scattering, wave_packet_scattering
from tensorfuse.namd._hopping import (
    METHODS,
    Ensemble,
    Hop,
    SurfaceHopping,
    hopping_scattering,
)
from tensorfuse.namd._initial import (
    NormalModes,
    hessian,
    minimize,
    normal_modes,
    wigner_sample,
)
from tensorfuse.namd._model_surface import ModelSurface
from tensorfuse.namd._mudslide import mudslide_model
from tensorfuse.namd._run import (
    NamdResult,
    NamdSettings,
    load_ensemble,
    merge_namd,
    resume_namd,
    run_ensemble,
    run_namd,
)
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
    "Criterion",
    "DiabaticModel",
    "Ensemble",
    "Hop",
    "Lifetime",
    "ModelSurface",
    "NamdResult",
    "NamdSettings",
    "NormalModes",
    "Scattering",
    "SurfaceHopping",
    "SurfacePoint",
    "TullyDualAvoidedCrossing",
    "TullyExtendedCoupling",
    "TullySimpleAvoidedCrossing",
    "fit_lifetime",
    "hessian",
    "hopping_scattering",
    "load_ensemble",
    "merge_namd",
    "minimize",
    "mudslide_model",
    "normal_modes",
    "resume_namd",
    "run_ensemble",
    "run_namd",
    "wave_packet_scattering",
    "wigner_sample",
]
