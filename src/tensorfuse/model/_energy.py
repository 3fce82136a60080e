"""The energy model: representation (message passing), readouts and priors, kept apart."""

from __future__ import annotations

import torch

from tensorfuse.data import AtomicGraph
from tensorfuse.model._cormorant import CormorantLevel
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


def feature_irreps(l_max: int, parity: str) -> Irreps:
    """Per-channel irreps up to ``l_max``: natural parity (0e+1o+2e...) or both parities."""
    if parity == "natural":
        return Irreps([(1, Irrep(l, (-1) ** l)) for l in range(l_max + 1)])
    return Irreps([(1, Irrep(l, p)) for l in range(l_max + 1) for p in ((-1) ** l, -((-1) ** l))])


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
        if torch.compiler.is_compiling():  # traced for export: the inputs were checked upstream
            return index
        if bool((index < 0).any()) or bool((numbers > 118).any()):
            unknown = sorted({int(z) for z in numbers[(index < 0) | (numbers > 118)].tolist()})
            raise ValueError(f"element(s) with atomic number {unknown} are not in the model's species {list(self.species)}")
        return index


class AtomicEnergyPriors(torch.nn.Module):
    """``E_i = scale * network_i + shift[Z_i] + E0[Z_i]``: physics kept outside the network."""

    def __init__(self, species: tuple[int, ...], atomic_energies: dict, energy_scale: float, energy_shift: dict):
        super().__init__()
        dtype = torch.get_default_dtype()
        self.register_buffer("e0", torch.tensor([atomic_energies.get(z, 0.0) for z in species], dtype=dtype))
        self.register_buffer("shift", torch.tensor([energy_shift.get(z, 0.0) for z in species], dtype=dtype))
        self.register_buffer("scale", torch.tensor(float(energy_scale), dtype=dtype))

    def forward(self, network_energy: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        return self.scale * network_energy + self.shift[species] + self.e0[species]


class EnergyLayer(torch.nn.Module):
    """One MACE-style layer: interaction, product basis, linear, species-dependent residual.

    With ``product_basis="fusion"`` the product basis is a :class:`FusionProductBasis`, fed one
    density (``fusion_mode="density"``) or ``correlation`` distinct densities (``"distinct"``).
    """

    def __init__(self, config, irreps_in: Irreps, irreps_edge: Irreps, irreps_a: Irreps, irreps_out: Irreps, first: bool):
        super().__init__()
        c, num_species, basis = config.channels, len(config.species), get_basis(config.basis)
        self.irreps_in, self.irreps_out = irreps_in, irreps_out
        self.interaction = Interaction(
            irreps_in, irreps_edge, irreps_a, c, config.num_bessel, config.radial_mlp,
            config.statistics.avg_num_neighbors, basis, num_densities=config.densities_per_layer(),
        )
        if config.product_basis == "fusion":
            self.product = FusionProductBasis(
                irreps_a, irreps_out, c, config.correlation, num_species, config.fusion_mode,
                config.fusion_shape, basis, l_internal=config.l_internal,
            )
        elif config.product_basis == "contraction":
            self.product = SymmetricContraction(irreps_a, irreps_out, c, config.correlation, num_species, basis)
        else:
            self.product = ProductBasis(
                irreps_a, irreps_out, c, config.correlation, num_species, config.product_basis, basis,
                l_internal=config.l_internal, latent_channels=config.latent_channels,
            )
        self.linear = IrrepsLinear(irreps_out, irreps_out, c, c)
        # MACE's first layer has no residual: its input is the bare species embedding
        self.skip = None if first else IrrepsLinear(irreps_in, irreps_out, c, c, num_species)

    def forward(self, h, species, harmonics, radial, envelope, edge_index):
        A = self.interaction(h, harmonics, radial, edge_index)
        out = self.linear(self.product(A, species))
        if self.skip is not None:
            out = out + self.skip(h, species)
        return out


class EnergyModel(torch.nn.Module):
    """Graph -> per-atom energies ``[N]`` and total energies ``[B]`` (no derivatives here)."""

    def __init__(self, config):
        super().__init__()
        from tensorfuse.model._build import layer_irreps

        self.config = config
        self.basis = get_basis(config.basis)
        self.species_table = SpeciesTable(config.species)
        self.embedding = SpeciesEmbedding(len(config.species), config.channels)
        self.radial_basis = BesselBasis(config.r_max, config.num_bessel)
        self.cutoff = PolynomialCutoff(config.r_max, config.cutoff_p)
        self.irreps_edge, self.irreps_a, node_irreps = layer_irreps(config)
        self._edge_ls = tuple(self.irreps_edge.ls)
        layer_class = CormorantLevel if config.architecture == "cormorant" else EnergyLayer
        self.layers = torch.nn.ModuleList(
            layer_class(config, node_irreps[t], self.irreps_edge, self.irreps_a, node_irreps[t + 1], first=t == 0)
            for t in range(config.num_layers)
        )
        last = config.num_layers - 1
        self.readouts = torch.nn.ModuleList(
            ScalarReadout(config.channels, config.readout_hidden if t == last else None)
            for t in range(config.num_layers)
        )
        self._scalar_index = [irreps.slices()[0].start for irreps in node_irreps[1:]]
        for irreps in node_irreps[1:]:
            if irreps[0].ir != Irrep("0e"):
                raise RuntimeError("hidden irreps must start with the scalars")
        s = config.statistics
        self.priors = AtomicEnergyPriors(config.species, s.atomic_energies, s.energy_scale, s.energy_shift)

    @property
    def r_max(self) -> float:
        return self.config.r_max

    def forward(self, graph: AtomicGraph, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None):
        """Returns ``(energy [B], node_energy [N])``; ``positions``/``cell`` override the graph's."""
        species = self.species_table(graph.numbers)
        vectors = graph.edge_vectors(positions, cell)
        lengths = vectors.norm(dim=-1)
        harmonics = self.basis.harmonics(self._edge_ls, vectors, normalize=True, normalization="component")
        envelope = self.cutoff(lengths)
        radial = self.radial_basis(lengths) * envelope.unsqueeze(-1)
        h = self.embedding(species)
        network_energy = 0.0
        for layer, readout, scalar in zip(self.layers, self.readouts, self._scalar_index):
            h = layer(h, species, harmonics, radial, envelope, graph.edge_index)
            network_energy = network_energy + readout(h[:, :, scalar])
        node_energy = self.priors(network_energy, species)
        energy = node_energy.new_zeros(graph.num_graphs).index_add_(0, graph.batch, node_energy)
        return energy, node_energy
