"""State-averaged CASSCF labels with PySCF: energies, analytic gradients and couplings of each state."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HARTREE = 27.211386245988  # eV
BOHR = 0.529177210903  # Å


@dataclass(frozen=True)
class CasscfSettings:
    """SA-CASSCF(``nelecas``, ``ncas``)/``basis`` over ``nstates`` singlets with equal weights.

    ``spin_penalty`` (PySCF's ``fix_spin_``) keeps triplets out of the averaged roots; without it
    the M_s = 0 triplet becomes a root at twisted geometries. ``couplings`` computes the analytic
    derivative coupling of every pair of states (PySCF's ``nac_method``, CSF term included).
    ``average`` states (``None``: ``nstates``) share the orbitals with equal weights, of which the
    lowest ``nstates`` are labelled: on ethylene, SA2-CASSCF(2,2)/6-31G* turns π* into a C–H σ*
    orbital at a third of the Wigner geometries (its "S1" is then a π→σ* state that ejects an H
    atom), while averaging three states (N, V, Z) keeps π and π* (``benchmarks/results/namd.md``).
    """

    ncas: int = 2
    nelecas: int = 2
    nstates: int = 2
    basis: str = "6-31g*"
    charge: int = 0
    spin_penalty: float = 1.0
    couplings: bool = True
    max_cycle: int = 200
    average: int | None = None

    def __post_init__(self):
        if self.average is not None and self.average < self.nstates:
            raise ValueError(f"average={self.average}: the orbitals must be averaged over at least the "
                             f"{self.nstates} labelled states")


@dataclass
class CasscfLabels:
    """Labels of one structure (eV, eV/Å, 1/Å) and what the continuity checks look at."""

    energies: np.ndarray  # [S]
    forces: np.ndarray  # [S, N, 3]
    couplings: dict = field(default_factory=dict)  # (i, j) -> d_ij [N, 3], 1/Å
    converged: bool = True
    spin_square: np.ndarray | None = None  # [S], <S^2> of each state
    open_shell_weight: np.ndarray | None = None  # [S], weight of singly occupied determinants (CAS(2,2))
    mo_coeff: np.ndarray | None = None  # orbitals to start a neighbouring geometry from

    def to_atoms(self, atoms, names):
        """A copy of ``atoms`` with ``energy_<state>``, ``forces_<state>``, ``nac_<i>_<j>`` labels."""
        labelled = atoms.copy()
        labelled.calc = None
        for s, name in enumerate(names):
            labelled.info[f"energy_{name}"] = float(self.energies[s])
            labelled.arrays[f"forces_{name}"] = self.forces[s]
        for (i, j), d in self.couplings.items():
            labelled.arrays[f"nac_{names[i]}_{names[j]}"] = d
        return labelled


def label_sa_casscf(atoms, settings: CasscfSettings = CasscfSettings(), mo_coeff=None, gradients=None,
                    couplings: bool | None = None) -> CasscfLabels:
    """SA-CASSCF energies, gradients (as forces) and derivative couplings of ASE ``atoms``.

    ``mo_coeff`` (from a neighbouring geometry's labels) starts the orbitals where that solution
    was, so that a scan stays on one CASSCF solution. ``gradients`` (state indices) computes only
    those states' gradients (the others' forces are zero): dynamics needs the active state's only,
    and each gradient costs as much as everything else together. ``couplings`` overrides
    ``settings.couplings``. Needs PySCF (``pip install pyscf``).
    """
    from pyscf import gto, mcscf, scf
    from pyscf.fci import spin_op

    mol = gto.M(atom=[(s, p) for s, p in zip(atoms.get_chemical_symbols(), atoms.positions.tolist())],
                basis=settings.basis, charge=settings.charge, unit="Angstrom", verbose=0)
    mf = scf.RHF(mol)
    mf.kernel()
    averaged = settings.average or settings.nstates
    mc = mcscf.CASSCF(mf, settings.ncas, settings.nelecas).state_average_([1.0 / averaged] * averaged)
    if settings.spin_penalty:
        mc.fix_spin_(ss=0, shift=settings.spin_penalty)
    mc.max_cycle_macro = settings.max_cycle
    if mo_coeff is not None:
        mc.kernel(mcscf.project_init_guess(mc, mo_coeff))
    else:
        mc.kernel()
    energies = np.asarray(mc.e_states)[: settings.nstates] * HARTREE
    method = mc.nuc_grad_method()
    wanted = range(settings.nstates) if gradients is None else sorted(set(int(s) for s in gradients))
    forces = np.zeros((settings.nstates, len(atoms), 3))
    for s in wanted:
        forces[s] = -np.asarray(method.kernel(state=s)) * HARTREE / BOHR
    pairs = {}
    if settings.couplings if couplings is None else couplings:
        method = mc.nac_method()
        for i in range(settings.nstates):
            for j in range(i + 1, settings.nstates):
                pairs[(i, j)] = np.asarray(method.kernel(state=(i, j))) / BOHR
    nelec = (settings.nelecas // 2, settings.nelecas - settings.nelecas // 2)
    labelled = mc.ci[: settings.nstates]
    spins = np.array([spin_op.spin_square0(c, settings.ncas, nelec)[0] for c in labelled])
    open_shell = None
    if settings.ncas == 2 and settings.nelecas == 2:  # determinants |ab>: [0,1] and [1,0] are open shell
        open_shell = np.array([float(c[0, 1] ** 2 + c[1, 0] ** 2) for c in labelled])
    return CasscfLabels(energies, forces, pairs, bool(mc.converged), spins, open_shell, mc.mo_coeff)
