"""A tensorfuse surface as a mudslide electronic model, to run mudslide's FSSH, A-FSSH and Ehrenfest
on learned (or analytic) multi-state potentials. mudslide (MIT, on PyPI) is optional: it is
imported only here, when an adapter is made."""

from __future__ import annotations

import numpy as np
import torch


def mudslide_model(surface, masses, atom_types=None):
    """``mudslide_model(surface, masses)``: a ``mudslide.models.ElectronicModel_`` evaluating
    ``surface`` (``x [1, D] -> SurfacePoint``, atomic units: e.g. a :class:`~tensorfuse.namd.ModelSurface`
    or a Tully model) at mudslide's positions (bohr); ``masses`` ``[D]`` in electron masses (a
    model surface's ``masses``). Everything is computed at every point: the Hamiltonian (adiabatic
    energies), all forces, all derivative couplings and the force matrix ``<i|-∇H|j>``
    (``-(E_j - E_i) d_ij`` off the diagonal). The coupling signs follow mudslide's ``reference``
    (the previous step's couplings), so they stay continuous along its trajectory."""
    try:
        from mudslide.models.electronics import ElectronicModel_
    except ImportError as error:
        raise ImportError("the mudslide adapter needs mudslide: pip install mudslide") from error

    class TensorfuseModel(ElectronicModel_):
        def __init__(self):
            if not getattr(surface, "has_couplings", True):
                raise ValueError("mudslide's methods need derivative couplings: this surface has none (a model "
                                 "without a coupling head)")
            super().__init__(representation="adiabatic", nstates=surface.num_states, ndof=len(masses),
                             atom_types=atom_types)
            self.mass = np.asarray(masses, dtype=np.float64).reshape(self.ndof)

        def compute(self, X, couplings=None, gradients=None, reference=None):
            self._position = np.asarray(X, dtype=np.float64)
            point = _evaluate(surface, self._position)
            energies = point.energies[0].numpy()
            d = point.couplings[0].numpy().copy()  # [S, S, D]
            if reference is not None:  # the sign of each pair that agrees with the last step's
                flip = np.einsum("ijd,ijd->ij", d, reference) < 0
                d[flip] *= -1.0
            self._reference = d
            self._hamiltonian = np.diag(energies)
            self._force = point.forces[0].numpy()
            self._derivative_coupling = d
            gaps = energies[None, :] - energies[:, None]  # E_j - E_i
            self._force_matrix = -gaps[:, :, None] * d
            idx = np.arange(self.nstates)
            self._force_matrix[idx, idx] = self._force
            self._forces_available = np.ones(self.nstates, dtype=bool)
            self._derivative_couplings_available = np.ones((self.nstates, self.nstates), dtype=bool)

        def compute_additional(self, couplings=None, gradients=None):
            return  # everything is computed at every point

    return TensorfuseModel()


def _evaluate(surface, x: np.ndarray):
    if hasattr(surface, "reset"):  # signs come from mudslide's reference, not the surface's memory
        surface.reset()
    with torch.no_grad():
        return surface(torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(1, -1)))
