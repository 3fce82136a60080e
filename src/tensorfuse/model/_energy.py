"""The energy model: representation (message passing), readouts and priors, kept apart."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensor

from tensorfuse.data import AtomicGraph
from tensorfuse.model._cormorant import CormorantLevel
from tensorfuse.model._layout import layer_irreps
from tensorfuse.model._states import StateEnergies, per_structure_sum
from tensorfuse.nn import (
    BesselBasis,
    FusionProductBasis,
    Interaction,
    IrrepsLinear,
    PolynomialCutoff,
    ProductBasis,
    ScalarReadout,
    SpeciesEmbedding,
    SymmetricContraction,
)
from tensorfuse.o3 import Irrep, Irreps, get_basis


@dataclass(frozen=True)
class Edges:
    """What a layer may use of the edges: ``index`` ``[2, E]`` (sender, receiver), the edge
    ``harmonics`` ``[E, D]``, the ``radial`` basis times the cutoff envelope ``[E, B]`` and the
    ``envelope`` itself ``[E]``."""

    index: torch.Tensor
    harmonics: torch.Tensor
    radial: torch.Tensor
    envelope: torch.Tensor

    def first(self, count) -> "Edges":
        """The first ``count`` edges."""
        return Edges(self.index[:, :count], self.harmonics[:count], self.radial[:count], self.envelope[:count])


class CouplingVectors(torch.nn.Module):
    """Per-atom coupling vectors ``[N, P, 3]`` (one per pair of states) from the 1o features of the
    last layer: an equivariant linear map ``C -> P`` channels, then the l = 1 coordinates of the
    basis as Cartesian vectors (x, y, z)."""

    def __init__(self, irreps: Irreps, channels: int, pairs: int, basis, dtype: torch.dtype):
        super().__init__()
        from tensorfuse.o3 import change_of_basis_matrix, stf_basis

        self.linear = IrrepsLinear(irreps, Irreps("1o"), channels, pairs, dtype=dtype)
        to_cartesian = change_of_basis_matrix(Irreps("1o"), basis, "cartesian", dtype=torch.float64)
        matrix = stf_basis(1, torch.float64, None) @ to_cartesian  # coordinates -> (x, y, z)
        self.register_buffer("to_xyz", matrix.to(dtype), persistent=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear(h) @ self.to_xyz.T


class SpeciesTable(torch.nn.Module):
    """Atomic numbers -> species indices of the model, with a clear error for unknown elements."""

    def __init__(self, species: tuple[int, ...]):
        super().__init__()
        self.species = tuple(species)
        table = torch.full((119,), -1, dtype=torch.long)
        table[list(species)] = torch.arange(len(species))
        self.register_buffer("table", table, persistent=False)

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:
        index = self.table[numbers.clamp(0, 118)]
        if torch.compiler.is_compiling() or isinstance(numbers, FakeTensor):  # traced: the caller checks the inputs
            return index
        self._check(numbers, index)
        return index

    def check(self, numbers: torch.Tensor) -> None:
        """The error of :meth:`forward` for unknown elements, for callers of a compiled model."""
        self._check(numbers, self.table[numbers.clamp(0, 118)])

    def _check(self, numbers: torch.Tensor, index: torch.Tensor) -> None:
        if bool((index < 0).any()) or bool((numbers > 118).any()):
            unknown = sorted({int(z) for z in numbers[(index < 0) | (numbers > 118)].tolist()})
            raise ValueError(f"element(s) with atomic number {unknown} are not in the model's species {list(self.species)}")


class AtomicEnergyPriors(torch.nn.Module):
    """``E_i = scale * network_i + shift[Z_i] + E0[Z_i]``: physics kept outside the network.

    The values are the configuration's :class:`~tensorfuse.model.Statistics`, their one source
    of truth: the buffers are derived from them (not saved with the weights) and change only
    through :meth:`EnergyModel.set_statistics`.
    """

    def __init__(self, species: tuple[int, ...], statistics, dtype: torch.dtype | None = None, num_states: int = 1):
        super().__init__()
        self.species, self.num_states = tuple(species), num_states
        dtype = dtype or torch.get_default_dtype()
        self.register_buffer("e0", torch.zeros(len(species), dtype=dtype), persistent=False)
        shape = (len(species),) if num_states == 1 else (len(species), num_states)
        self.register_buffer("shift", torch.zeros(shape, dtype=dtype), persistent=False)
        self.register_buffer("scale", torch.ones((), dtype=dtype), persistent=False)
        self.assign(statistics)

    @torch.no_grad()
    def assign(self, statistics) -> None:
        dtype = self.e0.dtype  # float64 values straight into the buffers' dtype
        self.e0.copy_(torch.tensor([statistics.atomic_energies.get(z, 0.0) for z in self.species], dtype=dtype))
        shifts = [statistics.shift_of(z, self.num_states) for z in self.species]
        self.shift.copy_(torch.tensor(shifts, dtype=dtype).view(self.shift.shape))
        self.scale.fill_(float(statistics.energy_scale))

    def forward(self, network_energy: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """``[N]`` (or ``[N, S]`` per state) network outputs to atomic energies."""
        e0 = self.e0[species] if self.num_states == 1 else self.e0[species].unsqueeze(-1)
        return self.excess(network_energy, species) + e0

    def excess(self, network_energy: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """The atomic energies above the reference energies: ``scale * network + shift``."""
        return self.scale * network_energy + self.shift[species]

    def reference(self, species: torch.Tensor) -> torch.Tensor:
        """``[N]`` the atoms' reference energies E0 (the same for every state)."""
        return self.e0[species]


class EnergyLayer(torch.nn.Module):
    """One MACE-style layer: interaction, product basis, linear, species-dependent residual.

    With ``mace.product_basis="fusion"`` the product basis is a :class:`FusionProductBasis`, fed
    one density (``fusion_leaves="density"``) or ``correlation`` distinct densities (``"distinct"``).
    """

    def __init__(self, config, irreps_in: Irreps, irreps_edge: Irreps, irreps_a: Irreps, irreps_out: Irreps,
                 first: bool, dtype: torch.dtype):
        super().__init__()
        c, num_species, basis, mace = config.channels, len(config.species), get_basis(config.basis), config.mace
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        self.interaction = Interaction(
            irreps_in, irreps_edge, irreps_a, c, config.num_bessel, config.radial_mlp,
            config.statistics.avg_num_neighbors, basis, num_densities=config.densities_per_layer(), dtype=dtype,
        )
        if mace.product_basis == "fusion":
            self.product = FusionProductBasis(
                irreps_a, irreps_out, c, mace.correlation, num_species, mace.fusion_leaves,
                mace.fusion_shape, basis, l_internal=mace.l_internal, dtype=dtype,
            )
        elif mace.product_basis == "contraction":
            self.product = SymmetricContraction(irreps_a, irreps_out, c, mace.correlation, num_species, basis,
                                                dtype=dtype)
        else:
            self.product = ProductBasis(
                irreps_a, irreps_out, c, mace.correlation, num_species, mace.product_basis, basis,
                l_internal=mace.l_internal, latent_channels=mace.latent_channels, level_copies=mace.level_copies,
                dtype=dtype,
            )
        self.linear = IrrepsLinear(irreps_out, irreps_out, c, c, dtype=dtype)
        # MACE's first layer has no residual: its input is the bare species embedding
        self.skip = None if first else IrrepsLinear(irreps_in, irreps_out, c, c, num_species, dtype=dtype)

    def many_body_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.product.parameters())

    def forward(self, h, species, edges: Edges, receivers=None):
        """``receivers``: update only the first ``receivers`` nodes (the edges' receivers)."""
        A = self.interaction(h, edges.harmonics, edges.radial, edges.index, receivers)
        h, species = h[:receivers], species[:receivers]
        out = self.linear(self.product(A, species))
        if self.skip is not None:
            out = out + self.skip(h, species)
        return out


class EnergyModel(torch.nn.Module):
    """Graph -> per-atom energies ``[N]`` and total energies ``[B]`` (no derivatives here)."""

    def __init__(self, config, dtype: torch.dtype | None = None):
        super().__init__()
        dtype = dtype or torch.get_default_dtype()
        self.config = config
        self.basis = get_basis(config.basis)
        self.species_table = SpeciesTable(config.species)
        self.embedding = SpeciesEmbedding(len(config.species), config.channels, dtype=dtype)
        self.radial_basis = BesselBasis(config.r_max, config.num_bessel, dtype=dtype)
        self.cutoff = PolynomialCutoff(config.r_max, config.cutoff_p)
        self.irreps_edge, self.irreps_a, node_irreps = layer_irreps(config)
        self._edge_ls = tuple(self.irreps_edge.ls)
        layer_class = CormorantLevel if config.architecture == "cormorant" else EnergyLayer
        self.layers = torch.nn.ModuleList(
            layer_class(config, node_irreps[t], self.irreps_edge, self.irreps_a, node_irreps[t + 1], first=t == 0,
                        dtype=dtype)
            for t in range(config.num_layers)
        )
        last = config.num_layers - 1
        # per atom: the state head's numbers (an energy per state, or the elements of a diabatic
        # matrix), then per pair of states the scalar whose gradient is their coupling
        self.num_states = config.num_states
        diabatic_couplings = config.state_pairs if config.couplings == "diabatic" else ()
        self.states = StateEnergies(config.state_energies, self.num_states, diabatic_couplings)
        self.num_virtual = len(config.state_pairs) if config.couplings == "gradient" else 0
        outputs = self.states.columns + self.num_virtual
        self.readouts = torch.nn.ModuleList(
            ScalarReadout(config.channels, config.readout_hidden if t == last else None, dtype=dtype,
                          outputs=outputs)
            for t in range(config.num_layers)
        )
        self.coupling_vectors = None
        if config.couplings == "vector":
            self.coupling_vectors = CouplingVectors(node_irreps[-1], config.channels, len(config.state_pairs),
                                                    self.basis, dtype)
        self._scalar_index = [irreps.slices()[0].start for irreps in node_irreps[1:]]
        for irreps in node_irreps[1:]:
            if irreps[0].ir != Irrep("0e"):
                raise RuntimeError("hidden irreps must start with the scalars")
        self.priors = AtomicEnergyPriors(config.species, config.statistics, dtype=dtype, num_states=self.num_states)

    @property
    def r_max(self) -> float:
        return self.config.r_max

    def many_body_parameters(self) -> list[torch.nn.Parameter]:
        """The weights of the many-body products (product bases, fusion blocks): those MACE
        applies weight decay to."""
        return [p for layer in self.layers for p in layer.many_body_parameters()]

    def set_statistics(self, statistics) -> None:
        """Replace the dataset statistics (reference energies, scale, shift) of the configuration and
        the priors derived from them, together. ``avg_num_neighbors`` must stay as built."""
        if statistics.avg_num_neighbors != self.config.statistics.avg_num_neighbors:
            raise ValueError("avg_num_neighbors is built into the layers; build a new model to change it")
        self.config = self.config.replace(statistics=statistics)
        self.priors.assign(statistics)

    def forward(self, graph: AtomicGraph, positions: torch.Tensor | None = None,
                cell: torch.Tensor | None = None, reach=None) -> dict[str, torch.Tensor]:
        """``{"energy": [B], "node_energy": [N]}``; ``positions``/``cell`` override the graph's.

        ``reach`` (a domain-decomposed caller's halo, :mod:`tensorfuse.model._compiled`): per layer
        ``(nodes, edges)``, layer ``t`` updates only the first ``nodes`` atoms from the first
        ``edges`` edges (which must be all the edges into them), and the output covers the atoms
        the last layer updates. Atoms ordered by their distance in hops from the owned atoms make
        every layer's set a prefix: layer ``t`` of ``L`` needs the atoms within ``L - t`` hops.

        A multi-state model gives ``energy [B, S]`` and ``node_energy [N, S]`` (ordered by its
        :class:`StateEnergies` head, whose Hellmann–Feynman terms come along for a diabatic one),
        and with couplings per-atom ``couplings [N, P, 3]`` (``"vector"``) or the scalars whose
        gradients are the couplings, ``coupling_scalars [B, P]`` (``"gradient"``), P the pairs of
        states."""
        species = self.species_table(graph.numbers)
        vectors = graph.edge_vectors(positions, cell)
        lengths = vectors.norm(dim=-1)
        harmonics = self.basis.harmonics(self._edge_ls, vectors, normalize=True, normalization="component")
        envelope = self.cutoff(lengths)
        radial = self.radial_basis(lengths) * envelope.unsqueeze(-1)
        edges = Edges(graph.edge_index, harmonics, radial, envelope)
        h = self.embedding(species)
        network_energy = 0.0
        final = None  # the atoms of the output: all, or the last layer's
        if reach is not None:
            if len(reach) != len(self.layers):
                raise ValueError(f"reach needs (nodes, edges) for each of the {len(self.layers)} layers")
            final = reach[-1][0]
        for t, (layer, readout, scalar) in enumerate(zip(self.layers, self.readouts, self._scalar_index)):
            if reach is None:
                h = layer(h, species, edges)
            else:
                h = layer(h, species, edges.first(reach[t][1]), reach[t][0])
            network_energy = network_energy + readout(h[:final, :, scalar])
        species, batch = species[:final], graph.batch[:final]
        s, columns = self.num_states, self.states.columns
        virtual = None
        if self.num_virtual:  # the readouts' last columns: the coupling scalars
            network_energy, virtual = network_energy[..., :columns], network_energy[..., columns:]
        # per-state shifts on the states' own columns (a diabatic matrix's diagonal), the scale on all
        excess = self.priors.excess(network_energy if network_energy.dim() == 1 else network_energy[:, :s], species)
        if columns > s:
            excess = torch.cat([excess, self.priors.scale * network_energy[..., s:]], dim=-1)
        out = self.states(excess, self.priors.reference(species), batch, graph.num_graphs)
        if self.coupling_vectors is not None:
            out["couplings"] = self.priors.scale * self.coupling_vectors(h)
        if virtual is not None:
            out["coupling_scalars"] = self.priors.scale * per_structure_sum(virtual, batch, graph.num_graphs)
        return out
