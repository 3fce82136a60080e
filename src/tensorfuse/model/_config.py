"""Typed, validated model configuration with presets; it mirrors how the model is built."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from tensorfuse.nn import FUSION_MODES
from tensorfuse.o3 import BASES, MAX_L
from tensorfuse.o3 import SHAPES as FUSION_SHAPES
from tensorfuse.utils._dataclasses import check_field_types

ARCHITECTURES = ("mace", "cormorant")
PRODUCT_BASES = ("symmetric", "full", "latent", "contraction", "fusion")  # of the MACE-style model
CORMORANT_PRODUCTS = ("power", "fusion")  # of the Cormorant-style atom level
PARITIES = ("natural", "all")
CONTRACTION_MAX_CORRELATION = 3


@dataclass(frozen=True)
class Statistics:
    """Dataset statistics stored in the model (computed from training data, or given).

    ``atomic_energies``: reference energy E0 of each element (atomic number -> eV), added to every
    atom of that element. ``energy_scale``/``energy_shift``: the network's atomic energy is
    ``scale * output + shift[Z]`` (scale typically the RMS of force components, shift per element).
    ``avg_num_neighbors`` normalizes the sum over neighbours.
    """

    avg_num_neighbors: float = 1.0
    atomic_energies: Mapping[int, float] = field(default_factory=dict)
    energy_scale: float = 1.0
    energy_shift: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self):
        if not (self.avg_num_neighbors > 0 and math.isfinite(self.avg_num_neighbors)):
            raise ValueError(f"statistics.avg_num_neighbors must be positive, got {self.avg_num_neighbors}")
        if not (self.energy_scale > 0 and math.isfinite(self.energy_scale)):
            raise ValueError(f"statistics.energy_scale must be positive, got {self.energy_scale}")
        for name in ("atomic_energies", "energy_shift"):
            values = {int(z): float(v) for z, v in dict(getattr(self, name)).items()}
            for z, v in values.items():
                if not math.isfinite(v):
                    raise ValueError(f"statistics.{name}[{z}] must be finite, got {v}")
            object.__setattr__(self, name, values)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a tensorfuse potential.

    Attributes
    ----------
    species : atomic numbers the model knows, e.g. ``(1, 6, 8)``.
    architecture : ``"mace"`` (interaction, many-body product basis, residual, per layer) or
        ``"cormorant"`` (Clebsch–Gordan levels: edge level, then an atom level that mixes the
        aggregated messages, the atom's own features and its self-product).
    basis : ``"cartesian"`` (irreducible Cartesian tensors, ICTP) or ``"spherical"``; the two
        compute the same function with the same weights.
    channels : features per irrep.
    l_max : largest degree of the hidden node features (the last layer keeps scalars only).
    l_max_edge : largest degree of the edge harmonics and of the atomic density ``A``.
    correlation : body order minus one of the product basis (1 = two-body messages only).
    num_layers : message-passing layers.
    r_max : cutoff radius (Å); ``num_bessel`` radial basis functions; ``cutoff_p`` envelope exponent.
    radial_mlp : hidden widths of the radial MLP.
    product_basis : MACE-style: ``"symmetric"`` (default), ``"full"``, ``"latent"`` (ICTP's
        variants, any correlation), ``"contraction"`` (MACE's symmetric contraction, correlation
        <= 3) or ``"fusion"`` (fusion trees, see ``fusion_mode``). Cormorant-style: ``"power"``
        (default: Cormorant's own self-product) or ``"fusion"`` (a fusion block added to the atom
        level).
    fusion_mode : leaves of the fusion trees: ``"density"`` (all the atomic density ``A``: the span
        of the standard product basis) or ``"distinct"`` (``correlation`` densities, each with its
        own radial weights; in the Cormorant-style model the leaves are the atom's features and two
        messages, ``"density"`` using one message twice).
    fusion_shape : ``"caterpillar"`` or ``"balanced"`` trees (the same span, other labels and cost).
    latent_channels : channels of the latent product space (``"latent"``; default channels/4).
    l_internal : cap on intermediate degrees in the product basis (default ``l_max_edge``).
    parity : ``"natural"`` features (0e, 1o, 2e, ...) or ``"all"``, adding pseudotensor channels
        (0o, 1e, ...) produced by the odd (Levi-Civita) products.
    readout_hidden : width of the MLP reading out the last layer's scalars.
    statistics : see :class:`Statistics`.
    """

    species: tuple[int, ...] = ()
    architecture: str = "mace"
    basis: str = "cartesian"
    channels: int = 64
    l_max: int = 1
    l_max_edge: int = 3
    correlation: int = 3
    num_layers: int = 2
    r_max: float = 5.0
    num_bessel: int = 8
    cutoff_p: int = 5
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    product_basis: str | None = None  # "symmetric" (MACE-style) or "power" (Cormorant-style)
    fusion_mode: str = "density"
    fusion_shape: str = "caterpillar"
    latent_channels: int | None = None
    l_internal: int | None = None
    parity: str = "natural"
    readout_hidden: int = 16
    statistics: Statistics = field(default_factory=Statistics)

    def __post_init__(self):
        check_field_types(self, _fail)
        object.__setattr__(self, "species", tuple(int(z) for z in self.species))
        object.__setattr__(self, "radial_mlp", tuple(int(w) for w in self.radial_mlp))
        if isinstance(self.statistics, Mapping):
            object.__setattr__(self, "statistics", Statistics(**self.statistics))
        if self.product_basis is None:
            default = "power" if self.architecture == "cormorant" else "symmetric"
            object.__setattr__(self, "product_basis", default)
        _validate(self)

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named preset (``"small"``, ``"medium"``, ``"large"``) with optional field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["species"] = list(self.species)
        out["radial_mlp"] = list(self.radial_mlp)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model configuration key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    # -- reports ---------------------------------------------------------------------------------
    def num_parameters(self) -> int:
        """Number of trainable parameters of the model this configuration builds."""
        from tensorfuse.model._build import build_model

        return sum(p.numel() for p in build_model(self).parameters() if p.requires_grad)

    def memory_per_edge(self, bytes_per_value: int = 8) -> int:
        """Rough bytes per edge of one energy+forces evaluation (the per-edge tensors dominate).

        Counts the edge harmonics, radial basis and MLP activations, the gathered neighbour
        features, the per-path radial weights and the messages of each layer, times two for
        what the force backward pass holds alongside.
        """
        from tensorfuse.model._build import layer_irreps
        from tensorfuse.o3 import TensorProductSpec

        edge, a_irreps, node_irreps = layer_irreps(self)
        values = edge.dim + self.num_bessel + sum(self.radial_mlp)
        for node in node_irreps[:-1]:
            spec = TensorProductSpec(node, edge, a_irreps)
            values += self.channels * self.densities_per_layer() * (node.dim + spec.num_paths + spec.irreps_out.dim)
            if self.architecture == "cormorant":  # the edge level's dot products of atom features
                values += 2 * self.channels * node.dim
        return 2 * values * bytes_per_value

    def densities_per_layer(self) -> int:
        """How many neighbour sums (each with its own radial weights) one layer computes."""
        if self.product_basis != "fusion" or self.fusion_mode != "distinct":
            return 1
        return 2 if self.architecture == "cormorant" else self.correlation


def _fail(name: str, value: Any, why: str):
    raise ValueError(f"invalid model configuration: {name}={value!r}: {why}")


def _validate(c: ModelConfig) -> None:

    if not c.species:
        _fail("species", c.species, "list the atomic numbers of the elements the model handles, e.g. (1, 6, 8)")
    if len(set(c.species)) != len(c.species) or any(not 1 <= z <= 118 for z in c.species):
        _fail("species", c.species, "atomic numbers must be distinct integers between 1 and 118")
    if c.architecture not in ARCHITECTURES:
        _fail("architecture", c.architecture, f"expected one of {ARCHITECTURES}")
    if c.basis not in BASES:
        _fail("basis", c.basis, f"expected one of {sorted(BASES)}")
    for name in ("channels", "num_layers", "num_bessel", "readout_hidden"):
        if getattr(c, name) < 1:
            _fail(name, getattr(c, name), "must be >= 1")
    if not 0 <= c.l_max <= MAX_L:
        _fail("l_max", c.l_max, f"must be between 0 and {MAX_L}")
    if not 0 <= c.l_max_edge <= MAX_L:
        _fail("l_max_edge", c.l_max_edge, f"must be between 0 and {MAX_L}")
    if c.l_max > c.l_max_edge:
        _fail("l_max", c.l_max, f"hidden features cannot exceed l_max_edge={c.l_max_edge}")
    if c.correlation < 1:
        _fail("correlation", c.correlation, "must be >= 1 (1 = two-body messages only)")
    if c.correlation > 6:
        _fail("correlation", c.correlation, "at most 6 is supported")
    allowed = CORMORANT_PRODUCTS if c.architecture == "cormorant" else PRODUCT_BASES
    if c.product_basis not in allowed:
        _fail("product_basis", c.product_basis, f"the {c.architecture} architecture takes one of {allowed}")
    if c.fusion_mode not in FUSION_MODES:
        _fail("fusion_mode", c.fusion_mode, f"expected one of {FUSION_MODES}")
    if c.fusion_shape not in FUSION_SHAPES:
        _fail("fusion_shape", c.fusion_shape, f"expected one of {FUSION_SHAPES}")
    if c.product_basis == "contraction" and c.correlation > CONTRACTION_MAX_CORRELATION:
        _fail(
            "correlation", c.correlation,
            f"the 'contraction' product basis (MACE's generalized Clebsch-Gordan tensors) stops at "
            f"{CONTRACTION_MAX_CORRELATION}; use product_basis='symmetric', 'full' or 'latent' for more",
        )
    if c.latent_channels is not None and c.latent_channels < 1:
        _fail("latent_channels", c.latent_channels, "must be >= 1")
    if c.l_internal is not None and not c.l_max <= c.l_internal <= MAX_L:
        _fail("l_internal", c.l_internal, f"must be between l_max={c.l_max} and {MAX_L}")
    if c.parity not in PARITIES:
        _fail("parity", c.parity, f"expected one of {PARITIES}")
    if not (c.r_max > 0 and math.isfinite(c.r_max)):
        _fail("r_max", c.r_max, "must be a positive number of Å")
    if c.cutoff_p < 2:
        _fail("cutoff_p", c.cutoff_p, "must be >= 2 for a smooth cutoff")
    if any(w < 1 for w in c.radial_mlp):
        _fail("radial_mlp", c.radial_mlp, "hidden widths must be >= 1")
    missing = [z for z in list(c.statistics.atomic_energies) + list(c.statistics.energy_shift) if z not in c.species]
    if missing:
        _fail("statistics", sorted(set(missing)), "energies given for elements that are not in species")


PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(channels=32, l_max=1, l_max_edge=2, correlation=2, num_layers=2, radial_mlp=(32, 32)),
    "medium": dict(channels=64, l_max=1, l_max_edge=3, correlation=3, num_layers=2, radial_mlp=(64, 64, 64)),
    "large": dict(channels=128, l_max=2, l_max_edge=3, correlation=3, num_layers=2, radial_mlp=(64, 64, 64)),
}
