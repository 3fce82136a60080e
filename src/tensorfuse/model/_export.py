"""Deployment: the model as a ``torch.export`` program (``.pt2``) that runs without tensorfuse's
Python model code, with a round trip to the same energies, forces and stress.

The exported program is the energy function of positions, cell and graph (dynamic numbers of
atoms, edges and structures); forces and stress are its derivatives, taken by autograd through
the exported graph by the same :class:`~tensorfuse.Potential` wrapper as for the Python model.
TorchScript is not offered (deprecated upstream).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tensorfuse.data import AtomicGraph, batch_graphs
from tensorfuse.model._config import ModelConfig
from tensorfuse.model._potential import Potential
from tensorfuse.nn._kernels import tensor_paths
from tensorfuse.utils._files import atomic_write, unwritable_reason

EXPORT_FORMAT = "tensorfuse-export"
EXPORT_VERSION = 2  # 2: the program returns the energy model's dict of outputs (1: a tuple)


class _EnergyFunction(torch.nn.Module):
    """Plain-tensor interface of an energy model (what gets exported)."""

    def __init__(self, energy_model):
        super().__init__()
        self.energy_model = energy_model

    def forward(self, positions, cell, numbers, edge_index, unit_shifts, batch):
        pbc = torch.zeros(cell.shape[0], 3, dtype=torch.bool, device=cell.device)  # unused by the model
        graph = AtomicGraph(positions, numbers, edge_index, unit_shifts, cell, pbc, batch)
        return self.energy_model(graph)


class ExportedEnergy(torch.nn.Module):
    """An exported energy program behind the energy-model interface used by :class:`Potential`."""

    def __init__(self, program_module, config: ModelConfig, version: int = EXPORT_VERSION):
        super().__init__()
        self.program = program_module
        self.config = config
        self.version = version

    @property
    def r_max(self) -> float:
        return self.config.r_max

    def forward(self, graph: AtomicGraph, positions=None, cell=None):
        positions = graph.positions if positions is None else positions
        cell = graph.cell if cell is None else cell
        out = self.program(positions, cell, graph.numbers, graph.edge_index, graph.unit_shifts, graph.batch)
        if self.version == 1:  # (energy, node_energy[, couplings or coupling scalars])
            extra = {"vector": "couplings", "gradient": "coupling_scalars"}.get(self.config.couplings)
            out = {"energy": out[0], "node_energy": out[1], **({extra: out[2]} if len(out) > 2 else {})}
        return out

    def train(self, mode: bool = True):  # an exported program has no train/eval modes
        self.training = mode
        return self

    def parameters(self, recurse: bool = True):  # dtype/device probes of the calculator
        yield from self.program.parameters(recurse)
        if not any(True for _ in self.program.parameters(recurse)):
            yield from self.program.buffers(recurse)


def _example_graph(model: Potential) -> AtomicGraph:
    """Two small structures (two graphs, so that the number of structures stays dynamic): atoms
    1.2 Å apart on a jittered zigzag, every species of the model among them."""
    import numpy as np

    dtype = next(model.parameters()).dtype
    species = np.asarray(model.config.species)
    rng = np.random.default_rng(0)
    graphs = []
    for n in (5, 4):
        positions = np.stack([1.2 * np.arange(n), 0.7 * (np.arange(n) % 2), np.zeros(n)], axis=1)
        positions += rng.uniform(-0.05, 0.05, positions.shape)
        graphs.append(AtomicGraph.from_arrays(positions, species[np.arange(n) % len(species)], cutoff=model.r_max,
                                              dtype=dtype))
    return batch_graphs(graphs).to(next(model.parameters()).device)


def export_model(model: Potential, path, overwrite: bool = False) -> Path:
    """Export ``model`` to ``path`` (``.pt2``): ``torch.export`` with dynamic atoms/edges/structures.

    An existing file at ``path`` is replaced only with ``overwrite``, and only once the new program
    is complete (written to a temporary file, then renamed)."""
    if not isinstance(model, Potential):
        raise ValueError(f"export_model needs a tensorfuse Potential, got {type(model).__name__}")
    path = Path(path)
    if path.suffix != ".pt2":
        raise ValueError(f"{path}: an exported program is a .pt2 file (that suffix tells loaders what it is)")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} already exists: give --overwrite to replace it, or another output name")
    if path.is_dir():
        raise ValueError(f"{path} is a folder")
    graph = _example_graph(model)
    function = _EnergyFunction(model.energy_model).eval()
    args = (graph.positions, graph.cell, graph.numbers, graph.edge_index, graph.unit_shifts, graph.batch)
    atoms, edges, structures = (torch.export.Dim(n, min=1) for n in ("atoms", "edges", "structures"))
    dynamic = {"positions": {0: atoms}, "cell": {0: structures}, "numbers": {0: atoms},
               "edge_index": {1: edges}, "unit_shifts": {0: edges}, "batch": {0: atoms}}
    with tensor_paths(model.energy_model):  # a program that runs without this package's CPU kernels
        program = torch.export.export(function, args, dynamic_shapes=dynamic, strict=False)
    from tensorfuse import __version__

    meta = {"format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "tensorfuse_version": __version__,
            "config": model.config.to_dict(), "dtype": str(graph.positions.dtype).replace("torch.", "")}
    try:
        atomic_write(path, lambda f: torch.export.save(program, f, extra_files={"tensorfuse.json": json.dumps(meta)}))
    except (OSError, RuntimeError) as error:
        raise ValueError(f"cannot write {path}: {unwritable_reason(path, error)}") from None
    return path


def load_exported(path) -> Potential:
    """Load an exported program as a :class:`Potential` (energies, forces and stress)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"exported model {path} does not exist")
    from tensorfuse.model._compiled import is_compiled_package

    if is_compiled_package(path):
        raise ValueError(f"{path} is a model compiled for LAMMPS (pair_style tensorfuse) and for inference (the "
                         "calculator, md), not an exported program: give the model file (.pt) or export it with "
                         "tensorfuse export MODEL OUT.pt2")
    import zipfile

    if not zipfile.is_zipfile(path):  # (torch.export.load would log its reader's error first)
        raise ValueError(f"{path} is not an exported tensorfuse model (not a .pt2 archive)")
    extra = {"tensorfuse.json": ""}
    try:
        program = torch.export.load(str(path), extra_files=extra)
    except Exception as error:
        raise ValueError(f"{path} is not an exported tensorfuse model ({type(error).__name__}: {error})") from None
    try:
        meta = json.loads(extra["tensorfuse.json"])
    except json.JSONDecodeError:
        raise ValueError(f"{path} is an exported program but not a tensorfuse one (no metadata)") from None
    if meta.get("format") != EXPORT_FORMAT or meta.get("format_version", 99) > EXPORT_VERSION:
        raise ValueError(f"{path}: unsupported export format {meta.get('format')!r} version {meta.get('format_version')}")
    return Potential(ExportedEnergy(program.module(), ModelConfig.from_dict(meta["config"]), meta["format_version"]))
