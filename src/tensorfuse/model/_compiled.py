"""Inference without Python: the model compiled ahead of time (AOTInductor) into a package that
C++ loads (the LAMMPS plugin, ``pair_style tensorfuse``) and Python can run too.

The compiled function works on atoms and edges as a domain-decomposed MD code holds them: a
process's own atoms followed by ghost atoms (periodic images and other processes' atoms), the
edges between all of them, and a weight per atom that is 1 for the atoms whose site energies the
process owns and 0 for ghosts. It returns the owned energy, the site energies, the forces on every
atom (ghosts included: the MD code adds them onto their owners) and the derivative of the energy
with respect to every edge vector, from which the caller forms the virial and per-atom virials
(``W = -sum_e r_e (x) dE/dr_e``). The forces are in the compiled graph: autograd is traced
ahead of time (``make_fx``), so nothing differentiates at run time. The fused CPU kernels stay in
the graph as the C++ operators ``tensorfuse::message_passing`` and ``tensorfuse::product_basis``
(and their backward operators): the plugin compiles them in; Python loads them with the kernels.

The last two atoms are phantoms one edge apart, appended by the caller (the plugin) so that a
process with no atoms or no edges still calls the function with shapes it was compiled for; they
form a structure of their own (batch 1). A multi-state model whose adiabatic energies are
eigenvalues or ordered gaps of the whole structure (``state_energies`` other than
``independent``) is exact on one process only (the plugin refuses several).
"""

from __future__ import annotations

import contextlib
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from tensorfuse.data import AtomicGraph
from tensorfuse.model._potential import Potential
from tensorfuse.nn._kernels import cpu_flags, load_kernel, tensor_paths
from tensorfuse.utils._files import unwritable_reason

COMPILED_FORMAT = "tensorfuse-compiled"
COMPILED_VERSION = 2  # 2: the reach inputs (per-layer atoms and edges)


class _DomainFunction(torch.nn.Module):
    """``(positions, numbers, edge_index, offsets, owned, state_weights, *reach) -> (energy, site
    energies, forces, dE/d(edge vectors))``. The vector of edge ``e`` (sender ``j``, receiver ``i``)
    is ``x_j - x_i + offsets[e]`` (a periodic image's shift); ``state_weights [S]`` picks (or mixes)
    the states of a multi-state model. ``reach`` is two vectors per layer whose lengths (their
    values are not read) are the atoms the layer updates and the edges into them, prefixes of the
    atoms and edges (see :meth:`EnergyModel.forward`); the last layer's atoms are the owned atoms
    and, last among them, the two phantoms, and the site energies are theirs."""

    def __init__(self, energy_model, num_states: int):
        super().__init__()
        self.energy_model = energy_model
        self.num_states = num_states

    def forward(self, positions, numbers, edge_index, offsets, owned, state_weights, *reach):
        positions = positions.detach().requires_grad_(True)
        offsets = offsets.detach().requires_grad_(True)  # shifts of a unit cell: their gradient is dE/dr_e
        cell = torch.eye(3, dtype=positions.dtype).expand(2, 3, 3)
        pbc = torch.zeros(2, 3, dtype=torch.bool)
        layers = [(reach[2 * t].shape[0], reach[2 * t + 1].shape[0]) for t in range(len(reach) // 2)]
        # the caller's two phantom atoms (the last two of the last layer's atoms) are a structure of
        # their own: a multi-state model's adiabatic energies are eigenvalues (or ordered gaps) of a
        # whole structure
        final = layers[-1][0]
        index = torch.arange(positions.shape[0])
        batch = ((index >= final - 2) & (index < final)).long()
        graph = AtomicGraph(positions, numbers, edge_index, offsets, cell, pbc, batch)
        node = self.energy_model(graph, reach=layers)["node_energy"]
        if self.num_states > 1:
            node = node @ state_weights
        node = node * owned[:final]
        energy = node.sum()
        gradient, edge_gradient = torch.autograd.grad(energy, [positions, offsets])
        return energy, node, -gradient, edge_gradient


def reach_markers(nodes, edges) -> list[torch.Tensor]:
    """The ``reach`` inputs of a compiled model: per layer, vectors as long as its atoms and edges."""
    return [torch.empty(count, dtype=torch.uint8) for pair in zip(nodes, edges) for count in pair]


@contextlib.contextmanager
def _traced():
    """Model code takes its traced branches (shape-generic, no data-dependent checks) while
    ``make_fx`` records it: the branches ``torch.compiler.is_compiling()`` selects under export."""
    previous = torch.compiler._is_compiling_flag
    torch.compiler._is_compiling_flag = True
    try:
        yield
    finally:
        torch.compiler._is_compiling_flag = previous


def _example(model: Potential):
    """Jittered atoms of every species ordered by hops as the plugin orders them: 9 owned, the two
    phantoms, one ghost atom per hop up to ``num_layers``; the edges within the cutoff (no offsets)
    that reach the owned atoms, sorted by receiver."""
    species = list(model.config.species)
    dtype = next(model.parameters()).dtype
    layers = model.config.num_layers
    rng = np.random.default_rng(0)
    n = 11 + layers
    positions = rng.uniform(0.0, 1.1 * model.config.r_max, (n, 3))
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    receiver, sender = np.nonzero((distances < model.config.r_max) & (distances > 0))
    hops = np.maximum(np.arange(n) - 10, 0)
    keep = (hops[receiver] < layers) & (hops[sender] <= hops[receiver] + 1)
    receiver, sender = receiver[keep], sender[keep]
    owned = (np.arange(n) < 9).astype(float)
    weights = np.eye(model.config.num_states)[0]
    nodes = [11 + layers - t for t in range(1, layers + 1)]  # layer t: the atoms within layers - t hops
    edges = [int((receiver < count).sum()) for count in nodes]
    return (torch.tensor(positions, dtype=dtype), torch.tensor([species[i % len(species)] for i in range(n)]),
            torch.tensor(np.stack([sender, receiver])), torch.zeros(len(sender), 3, dtype=dtype),
            torch.tensor(owned, dtype=dtype), torch.tensor(weights, dtype=dtype), *reach_markers(nodes, edges))


def compile_model(model: Potential, path, overwrite: bool = False) -> Path:
    """Compile ``model`` ahead of time into ``path`` (a ``.pt2`` AOTInductor package, CPU), for the
    LAMMPS plugin (``pair_style tensorfuse``). Takes about a minute; the package is replaced only
    once the new one is complete."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from tensorfuse import __version__
    from tensorfuse.utils._files import atomic_write

    if not isinstance(model, Potential):
        raise ValueError(f"compile_model needs a tensorfuse Potential, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"{path}: a compiled model is a .pt2 file")
    if path.is_dir():
        raise ValueError(f"cannot write {path}: it is a folder")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists: give --overwrite to replace it, or another output name")
    model = model.to("cpu").eval()
    config = model.config
    function = _DomainFunction(model.energy_model, config.num_states).eval()
    example = _example(model)
    kernels = all(load_kernel(name) is not None for name in ("message", "product"))  # the fused kernels where built
    if kernels:
        function(*example)  # an eager call builds the kernels' tables, which the traced branches then use
    with (contextlib.nullcontext() if kernels else tensor_paths(model.energy_model)), _traced():
        graph = make_fx(function, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)
    atoms, edges = torch.export.Dim("atoms", min=2), torch.export.Dim("edges", min=2)
    reach = [{0: torch.export.Dim(f"{kind}_{t}", min=2)} for t in range(config.num_layers) for kind in ("atoms", "edges")]
    with torch.no_grad():  # the graph holds its own backward already
        program = torch.export.export(graph, example, dynamic_shapes=[{0: atoms}, {0: atoms}, {1: edges}, {0: edges},
                                                                      {0: atoms}, None, *reach], strict=False)
    from ase.data import atomic_masses, chemical_symbols

    metadata = {"format": COMPILED_FORMAT, "kernels": "fused" if kernels else "none", "format_version": str(COMPILED_VERSION), "tensorfuse_version": __version__,
                "dtype": str(example[0].dtype).replace("torch.", ""), "r_max": repr(float(config.r_max)),
                "num_layers": str(config.num_layers), "species": " ".join(str(z) for z in config.species),
                "elements": " ".join(chemical_symbols[z] for z in config.species),
                "masses": " ".join(repr(float(atomic_masses[z])) for z in config.species),
                "states": " ".join(config.states), "state_energies": str(config.state_energies) if config.states else "",
                "cpu_flags": " ".join(sorted(cpu_flags())),  # compiled for this CPU: never run where one is missing
                "config": json.dumps(config.to_dict())}

    def write(handle):
        torch._inductor.aoti_compile_and_package(program, package_path=handle,
                                                 inductor_configs={"aot_inductor.metadata": metadata})

    try:
        atomic_write(path, write)
    except (OSError, RuntimeError) as error:
        raise ValueError(f"cannot write {path}: {unwritable_reason(path, error)}") from None
    return path


def is_compiled_package(path) -> bool:
    """Whether ``path`` is an AOTInductor package (not a ``torch.export`` program)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/aotinductor/" in name for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def compiled_metadata(path) -> dict[str, str]:
    """The metadata of a compiled package (species, elements, masses, r_max, states, ...)."""
    return dict(torch._C._aoti.AOTIModelPackageLoader.load_metadata_from_package(str(path), "model"))


def missing_instructions(metadata: dict[str, str]) -> list[str]:
    """The instruction-set flags of the CPU a package was compiled on that this CPU lacks (its
    code would die with SIGILL here); empty where either CPU's flags are unknown."""
    here = cpu_flags()
    return sorted(set(metadata.get("cpu_flags", "").split()) - here) if here else []


class CompiledPotential(torch.nn.Module):
    """A compiled package (:func:`compile_model`) behind the :class:`Potential` interface: energies,
    forces, stress and site energies of a single-state model, without the model's Python code (one
    AOTInductor call per structure: fewer and fused operations, the fast route for small systems).
    The calculator, ``md`` and i-PI take it through :func:`~tensorfuse.model.load_potential`; it
    cannot train, change dtype or run on a GPU (compiled for this CPU)."""

    def __init__(self, path):
        super().__init__()
        from tensorfuse.model._config import ModelConfig
        from tensorfuse.model._energy import SpeciesTable

        path = Path(path)
        metadata = compiled_metadata(path)
        if metadata.get("format") != COMPILED_FORMAT:
            raise ValueError(f"{path} is not a compiled tensorfuse model")
        if int(metadata.get("format_version", 0)) != COMPILED_VERSION:
            raise ValueError(f"{path} is compiled in format {metadata.get('format_version')}; this tensorfuse reads "
                             f"{COMPILED_VERSION}: compile it again (tensorfuse export MODEL.pt OUT.pt2 --for lammps)")
        missing = missing_instructions(metadata)
        if missing:
            raise ValueError(f"{path} was compiled on a CPU with instructions this one lacks ({' '.join(missing[:6])}"
                             f"{' ...' if len(missing) > 6 else ''}): compile the model file (.pt) again on this machine")
        self.config = ModelConfig.from_dict(json.loads(metadata["config"]))
        if self.config.num_states > 1:
            raise ValueError(f"{path}: a compiled multi-state model runs one state in LAMMPS only; in Python give the "
                             "model file (.pt), which gives every state, its forces and couplings")
        if metadata["kernels"] == "fused" and not all(load_kernel(name) is not None for name in ("message", "product")):
            raise ValueError(f"{path} was compiled with tensorfuse's CPU kernels, which cannot be built here "
                             "(no C++ compiler?): give the model file (.pt)")
        self.path = path
        self.species_table = SpeciesTable(self.config.species)
        self.register_buffer("_dtype_probe", torch.zeros((), dtype=getattr(torch, metadata["dtype"])), persistent=False)
        self._runner = torch._inductor.aoti_load_package(str(path))

    @property
    def r_max(self) -> float:
        return float(self.config.r_max)

    @property
    def num_states(self) -> int:
        return self.config.num_states

    @property
    def compiled(self) -> bool:  # ahead of time: the calculator's compile option has nothing to do
        return True

    def parameters(self, recurse: bool = True):  # the dtype and device probes of callers
        yield self._dtype_probe

    def to(self, *args, **kwargs):
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        if (device is not None and torch.device(device).type != "cpu") or (
                dtype is not None and dtype != self._dtype_probe.dtype):
            wanted = dtype if dtype is not None and dtype != self._dtype_probe.dtype else device
            raise ValueError(f"{self.path} is compiled for the CPU in {self._dtype_probe.dtype}: it cannot move to "
                             f"{wanted}; give the model file (.pt)")
        return self

    def forward(self, graph: AtomicGraph, forces: bool = True, stress: bool = False, create_graph: bool = False,
                batched_derivatives: bool = True) -> dict[str, torch.Tensor]:
        if create_graph:
            raise ValueError(f"{self.path} is compiled for inference: train the model file (.pt)")
        self.species_table.check(graph.numbers)
        dtype = self._dtype_probe.dtype
        shifts = graph.shifts().to(dtype)
        phantoms = torch.zeros(2, 3, dtype=dtype)
        phantoms[1, 0] = 0.5 * self.r_max
        weights = torch.ones(1, dtype=dtype)
        energies, nodes, all_forces, virials = [], [], [], []
        edge_graph = graph.batch[graph.edge_index[1]]
        for b in range(graph.num_graphs):  # one structure per call: the function's energy is a sum
            atoms = torch.nonzero(graph.batch == b).flatten()
            edges = torch.nonzero(edge_graph == b).flatten()
            first = int(atoms[0]) if len(atoms) else 0
            n = len(atoms)
            positions = torch.cat([graph.positions[atoms].to(dtype), phantoms])
            numbers = torch.cat([graph.numbers[atoms], graph.numbers.new_full((2,), self.config.species[0])])
            index = torch.cat([graph.edge_index[:, edges] - first, torch.tensor([[n, n + 1], [n + 1, n]])], dim=1)
            offsets = torch.cat([shifts[edges], torch.zeros(2, 3, dtype=dtype)])
            owned = torch.cat([torch.ones(n, dtype=dtype), torch.zeros(2, dtype=dtype)])
            layers = self.config.num_layers
            energy, site, force, edge_gradient = self._runner(
                positions, numbers, index, offsets, owned, weights,
                *reach_markers([n + 2] * layers, [index.shape[1]] * layers))
            energies.append(energy)
            nodes.append(site[:n])
            all_forces.append(force[:n])
            if stress:
                vectors = positions[index[0]] - positions[index[1]] + offsets
                virials.append(-vectors.T @ edge_gradient)
        out = {"energy": torch.stack(energies).to(graph.positions.dtype), "node_energy": torch.cat(nodes)}
        if forces:
            out["forces"] = torch.cat(all_forces)
        if stress:
            virial = torch.stack(virials)
            virial = 0.5 * (virial + virial.transpose(1, 2))
            out["virial"] = virial
            out["stress"] = -virial / torch.linalg.det(graph.cell).abs().clamp_min(1e-30)[:, None, None].to(dtype)
        return out
