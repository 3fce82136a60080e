"""Typed, validated model configuration with presets; it mirrors how the model is built."""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from tensorfuse.model._states import STATE_ENERGIES
from tensorfuse.nn import FUSION_MODES
from tensorfuse.o3 import BASES, MAX_L
from tensorfuse.o3 import SHAPES as FUSION_SHAPES
from tensorfuse.utils._dataclasses import check_field_types

ARCHITECTURES = ("mace", "cormorant")
PRODUCT_BASES = ("symmetric", "full", "latent", "reduced", "contraction", "fusion")  # of the MACE-style model
SECOND_MESSAGES = ("shared", "distinct")  # of the Cormorant-style fusion block
PARITIES = ("natural", "all")
CONTRACTION_MAX_CORRELATION = 3
MAX_CORRELATION = 6
COUPLINGS = (None, "vector", "gradient", "diabatic")


@dataclass(frozen=True)
class Statistics:
    """Dataset statistics stored in the model (computed from training data, or given).

    ``atomic_energies``: reference energy E0 of each element (atomic number -> eV), added to every
    atom of that element. ``energy_scale``/``energy_shift``: the network's atomic energy is
    ``scale * output + shift[Z]`` (scale typically the RMS of force components, shift per element).
    ``avg_num_neighbors`` normalizes the sum over neighbours. A multi-state model has one shift per
    element and state: ``energy_shift[Z]`` is then a list with a value per state (E0 is shared:
    it is the ground state of the isolated atom).
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
            values = {}
            for z, v in dict(getattr(self, name)).items():
                per_state = name == "energy_shift" and isinstance(v, (list, tuple))
                value = [float(x) for x in v] if per_state else float(v)
                if not all(math.isfinite(x) for x in (value if per_state else [value])):
                    raise ValueError(f"statistics.{name}[{z}] must be finite, got {v}")
                values[int(z)] = value
            object.__setattr__(self, name, values)

    def shift_of(self, z: int, num_states: int) -> list[float]:
        """The energy shift of element ``z`` for each of ``num_states`` states."""
        value = self.energy_shift.get(z, 0.0)
        return list(value) if isinstance(value, list) else [value] * num_states


@dataclass(frozen=True)
class MaceOptions:
    """Options of the MACE-style architecture (``ModelConfig.mace``).

    Attributes
    ----------
    product_basis : ``"symmetric"`` (default), ``"full"``, ``"latent"`` (ICTP's variants, any
        correlation), ``"reduced"`` (symmetric, with each level's copies mixed down to
        ``level_copies``: cost and parameters linear in the correlation order), ``"contraction"``
        (MACE's symmetric contraction, correlation <= 3) or ``"fusion"`` (fusion trees, see
        ``fusion_leaves``).
    correlation : body order minus one of the product basis (1 = two-body messages only).
    latent_channels : channels of the latent product space (``"latent"`` only; default channels/4).
    level_copies : copies of each irrep kept after every product (``"reduced"`` only; default 2).
    l_internal : cap on intermediate degrees of the product basis (default ``l_max_edge``; not for
        ``"contraction"``).
    fusion_leaves : leaves of the fusion trees (``"fusion"`` only): ``"density"`` (every leaf the
        atomic density ``A``: the span of the standard product basis) or ``"distinct"``
        (``correlation`` densities, each with its own radial weights).
    fusion_shape : ``"caterpillar"`` or ``"balanced"`` fusion trees (the same span, other labels and cost).
    """

    product_basis: str = "symmetric"
    correlation: int = 3
    latent_channels: int | None = None
    level_copies: int | None = None
    l_internal: int | None = None
    fusion_leaves: str = "density"
    fusion_shape: str = "caterpillar"

    def __post_init__(self):
        check_field_types(self, functools.partial(_fail_in, "mace"))
        if self.product_basis not in PRODUCT_BASES:
            _fail_in("mace", "product_basis", self.product_basis, f"expected one of {PRODUCT_BASES}")
        if not 1 <= self.correlation <= MAX_CORRELATION:
            _fail_in("mace", "correlation", self.correlation,
                     f"must be between 1 (two-body messages only) and {MAX_CORRELATION}")
        if self.product_basis == "contraction" and self.correlation > CONTRACTION_MAX_CORRELATION:
            _fail_in("mace", "correlation", self.correlation,
                     f"the 'contraction' product basis (MACE's generalized Clebsch-Gordan tensors) stops at "
                     f"{CONTRACTION_MAX_CORRELATION}; use product_basis='symmetric', 'full' or 'latent' for more")
        if self.latent_channels is not None and self.latent_channels < 1:
            _fail_in("mace", "latent_channels", self.latent_channels, "must be >= 1")
        if self.level_copies is not None and self.level_copies < 1:
            _fail_in("mace", "level_copies", self.level_copies, "must be >= 1")
        if self.fusion_leaves not in FUSION_MODES:
            _fail_in("mace", "fusion_leaves", self.fusion_leaves, f"expected one of {FUSION_MODES}")
        if self.fusion_shape not in FUSION_SHAPES:
            _fail_in("mace", "fusion_shape", self.fusion_shape, f"expected one of {FUSION_SHAPES}")
        _only_with(self, "latent_channels", self.product_basis == "latent", "product_basis='latent'")
        _only_with(self, "level_copies", self.product_basis == "reduced", "product_basis='reduced'")
        _only_with(self, "l_internal", self.product_basis != "contraction", "a product basis other than 'contraction'")
        for name in ("fusion_leaves", "fusion_shape"):
            _only_with(self, name, self.product_basis == "fusion", "product_basis='fusion'")

    def describe(self) -> str:
        text = f"{self.product_basis} product basis, correlation {self.correlation}"
        return text + (f" ({self.fusion_leaves} leaves)" if self.product_basis == "fusion" else "")


@dataclass(frozen=True)
class CormorantOptions:
    """Options of the Cormorant-style architecture (``ModelConfig.cormorant``).

    Attributes
    ----------
    fusion : add a fusion block to every atom level (Li, Pengmei et al.): the trees ``M ⊗ M'`` and
        ``(M ⊗ M') ⊗ F_i`` of the messages and the atom's own features.
    second_message : ``M'`` of those trees: ``"shared"`` (the message ``M`` itself) or
        ``"distinct"`` (a second message with its own edge weights).
    fusion_shape : ``"caterpillar"`` or ``"balanced"`` trees.
    l_internal : cap on the intermediate degrees of the fusion trees (default ``l_max_edge``).
    """

    fusion: bool = False
    second_message: str = "shared"
    fusion_shape: str = "caterpillar"
    l_internal: int | None = None

    def __post_init__(self):
        check_field_types(self, functools.partial(_fail_in, "cormorant"))
        if self.second_message not in SECOND_MESSAGES:
            _fail_in("cormorant", "second_message", self.second_message, f"expected one of {SECOND_MESSAGES}")
        if self.fusion_shape not in FUSION_SHAPES:
            _fail_in("cormorant", "fusion_shape", self.fusion_shape, f"expected one of {FUSION_SHAPES}")
        for name in ("second_message", "fusion_shape", "l_internal"):
            _only_with(self, name, self.fusion, "fusion=true")

    def describe(self) -> str:
        return f"Clebsch-Gordan levels{' with a fusion block (' + self.second_message + ' messages)' if self.fusion else ''}"


def _only_with(options, name: str, applies: bool, condition: str) -> None:
    """An option that would have no effect is an error, not silently ignored."""
    default = next(f.default for f in dataclasses.fields(options) if f.name == name)
    if not applies and getattr(options, name) != default:
        section = "mace" if isinstance(options, MaceOptions) else "cormorant"
        _fail_in(section, name, getattr(options, name), f"applies only with {condition}")


def _section(cls, value, name: str):
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        _fail(name, value, f"expected a mapping of {cls.__name__} fields")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        _fail(name, dict(value), f"unknown key(s) {unknown}; known: {sorted(known)}")
    return cls(**value)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a tensorfuse potential.

    Attributes
    ----------
    species : atomic numbers the model knows, e.g. ``(1, 6, 8)``.
    architecture : ``"mace"`` (interaction, many-body product basis, residual, per layer; options in
        ``mace``) or ``"cormorant"`` (Clebsch–Gordan levels: edge level, then an atom level that
        mixes the aggregated messages, the atom's own features and its self-product; options in
        ``cormorant``). Setting the other architecture's section is an error.
    basis : ``"cartesian"`` (irreducible Cartesian tensors, ICTP) or ``"spherical"``; the two
        compute the same function with the same weights.
    channels : features per irrep.
    l_max : largest degree of the hidden node features (the last layer keeps scalars only).
    l_max_edge : largest degree of the edge harmonics and of the atomic density ``A``.
    num_layers : message-passing layers.
    r_max : cutoff radius (Å).
    num_bessel : Bessel radial basis functions.
    cutoff_p : exponent of the polynomial envelope that takes the radial basis smoothly to zero at ``r_max``.
    radial_mlp : hidden widths of the radial MLP.
    parity : ``"natural"`` features (0e, 1o, 2e, ...) or ``"all"``, adding pseudotensor channels
        (0o, 1e, ...) produced by the odd (Levi-Civita) products.
    readout_hidden : width of the MLP reading out the last layer's scalars.
    states : names of the electronic states (e.g. ``("S0", "S1", "S2")``), lowest first: one
        energy per state from readouts of the shared features. Empty (the default) or one name: a
        single potential energy surface, exactly the model and files of a single-state potential.
    state_energies : with two or more states, how the readouts become ordered adiabatic energies
        (see :mod:`tensorfuse.model._states`): ``"diabatic"`` (default; the eigenvalues of a learned
        symmetric diabatic matrix: ordered for every input, conical intersections with their cone,
        forces finite at a crossing), ``"gaps"`` (a ground state plus soft non-negative gaps) or
        ``"independent"`` (one readout per state, which may cross; tensorfuse 0.1's model files
        load as this).
    couplings : with two or more states, how the couplings between each pair of states are
        predicted (trained on ``ΔE_ij d_ij``, eV/Å, smooth where ``d_ij`` has a pole):
        ``"diabatic"`` (``U_i^T ∇H U_j`` from the diabatic matrix's eigenvectors: no extra head, no
        rigid-body part; needs ``state_energies="diabatic"``), ``"vector"`` (equivariant per-atom
        vectors, 1o features of the last layer) or ``"gradient"`` (SchNarc's choice: the gradient
        of a learned scalar per pair); ``None``: none.
    mace, cormorant : :class:`MaceOptions`, :class:`CormorantOptions` (or mappings of their fields).
    statistics : see :class:`Statistics`.
    """

    species: tuple[int, ...] = ()
    architecture: str = "mace"
    basis: str = "cartesian"
    channels: int = 64
    l_max: int = 1
    l_max_edge: int = 3
    num_layers: int = 2
    r_max: float = 5.0
    num_bessel: int = 8
    cutoff_p: int = 5
    radial_mlp: tuple[int, ...] = (64, 64, 64)
    parity: str = "natural"
    readout_hidden: int = 16
    states: tuple[str, ...] = ()
    state_energies: str = "diabatic"
    couplings: str | None = None
    mace: MaceOptions = field(default_factory=MaceOptions)
    cormorant: CormorantOptions = field(default_factory=CormorantOptions)
    statistics: Statistics = field(default_factory=Statistics)

    def __post_init__(self):
        check_field_types(self, _fail)
        object.__setattr__(self, "species", tuple(int(z) for z in self.species))
        object.__setattr__(self, "radial_mlp", tuple(int(w) for w in self.radial_mlp))
        if isinstance(self.states, str) or not all(isinstance(s, str) for s in self.states):
            _fail("states", self.states, "expected a list of state names, e.g. [S0, S1]")
        object.__setattr__(self, "states", tuple(self.states))
        object.__setattr__(self, "mace", _section(MaceOptions, self.mace, "mace"))
        object.__setattr__(self, "cormorant", _section(CormorantOptions, self.cormorant, "cormorant"))
        if isinstance(self.statistics, Mapping):
            object.__setattr__(self, "statistics", Statistics(**self.statistics))
        _validate(self)

    # -- presets ---------------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        """A named preset (``"small"``, ``"medium"``, ``"large"``) with optional field overrides; a
        ``mace`` override is merged into the preset's MACE options."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
        fields = {k: v for k, v in PRESETS[name].items() if k != "mace"}
        if overrides.get("architecture", "mace") == "mace":
            given = overrides.get("mace") or {}
            given = dataclasses.asdict(given) if isinstance(given, MaceOptions) else dict(given)
            overrides = {**overrides, "mace": {**PRESETS[name]["mace"], **given}}
        return cls(**{**fields, **overrides})

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @property
    def options(self) -> MaceOptions | CormorantOptions:
        """The options of the chosen architecture."""
        return self.mace if self.architecture == "mace" else self.cormorant

    @property
    def num_states(self) -> int:
        return max(1, len(self.states))

    @property
    def state_names(self) -> tuple[str, ...]:
        return self.states or ("energy",)

    @property
    def state_pairs(self) -> tuple[tuple[int, int], ...]:
        """The pairs ``(i, j)``, ``i < j``, that have couplings, in the order of the coupling outputs."""
        if self.couplings is None:
            return ()
        return tuple((i, j) for i in range(self.num_states) for j in range(i + 1, self.num_states))

    def describe(self) -> str:
        states = f", {self.num_states} states ({', '.join(self.states)})" if self.num_states > 1 else ""
        states += f", {self.state_energies} energies" if self.num_states > 1 else ""
        couplings = f", {self.couplings} couplings" if self.couplings else ""
        return f"{self.architecture}-style, {self.basis} basis, {self.options.describe()}{states}{couplings}"

    def to_dict(self) -> dict:
        """Plain data; only the chosen architecture's section is written."""
        out = dataclasses.asdict(self)
        out.pop("cormorant" if self.architecture == "mace" else "mace")
        if self.num_states == 1 and not self.states:  # the files of single-state models are unchanged
            out.pop("states")
            out.pop("couplings")
            out.pop("state_energies")
        else:
            out["states"] = list(self.states)
        out["species"] = list(self.species)
        out["radial_mlp"] = list(self.radial_mlp)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        data = _from_flat_layout(data)
        if len(data.get("states") or ()) > 1 and "state_energies" not in data:
            data["state_energies"] = "independent"  # files of tensorfuse 0.1: one readout per state
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
        from tensorfuse.model._layout import layer_irreps
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
        if self.architecture == "cormorant":
            return 2 if self.cormorant.fusion and self.cormorant.second_message == "distinct" else 1
        if self.mace.product_basis == "fusion" and self.mace.fusion_leaves == "distinct":
            return self.mace.correlation
        return 1


LEGACY_KEYS = ("product_basis", "correlation", "fusion_mode", "fusion_shape", "latent_channels", "l_internal")
"""The flat keys of tensorfuse 0.1 model files, now in the ``mace``/``cormorant`` sections."""


def _from_flat_layout(data: Mapping[str, Any]) -> dict:
    """Model files of tensorfuse 0.1 kept every architecture's options flat: move them into their
    section (``fusion_mode`` meant the leaves for MACE, the second message for Cormorant)."""
    data = dict(data)
    legacy = {k: data.pop(k) for k in LEGACY_KEYS if k in data}
    if not legacy:
        return data
    if data.get("architecture", "mace") == "cormorant":
        fusion = legacy.get("product_basis") == "fusion"
        data["cormorant"] = {"fusion": fusion, **({
            "second_message": {"density": "shared", "distinct": "distinct"}[legacy.get("fusion_mode", "density")],
            "fusion_shape": legacy.get("fusion_shape", "caterpillar"),
            "l_internal": legacy.get("l_internal"),
        } if fusion else {})}
    else:
        product = legacy.get("product_basis") or "symmetric"
        mace = {"product_basis": product, "correlation": legacy.get("correlation", 3)}
        if product == "latent":
            mace["latent_channels"] = legacy.get("latent_channels")
        if product != "contraction":
            mace["l_internal"] = legacy.get("l_internal")
        if product == "fusion":
            mace["fusion_leaves"] = legacy.get("fusion_mode", "density")
            mace["fusion_shape"] = legacy.get("fusion_shape", "caterpillar")
        data["mace"] = mace
    return data


def _fail(name: str, value: Any, why: str):
    raise ValueError(f"invalid model configuration: {name}={value!r}: {why}")


def _fail_in(section: str, name: str, value: Any, why: str):
    _fail(f"{section}.{name}", value, why)


def _validate(c: ModelConfig) -> None:
    if not c.species:
        _fail("species", c.species, "list the atomic numbers of the elements the model handles, e.g. (1, 6, 8)")
    if len(set(c.species)) != len(c.species) or any(not 1 <= z <= 118 for z in c.species):
        _fail("species", c.species, "atomic numbers must be distinct integers between 1 and 118")
    if c.architecture not in ARCHITECTURES:
        _fail("architecture", c.architecture, f"expected one of {ARCHITECTURES}")
    unused = "cormorant" if c.architecture == "mace" else "mace"
    if getattr(c, unused) != type(getattr(c, unused))():
        _fail(unused, dataclasses.asdict(getattr(c, unused)), f"applies only with architecture={unused!r}, "
              f"not {c.architecture!r}")
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
    l_internal = c.options.l_internal
    if l_internal is not None and not c.l_max <= l_internal <= MAX_L:
        _fail(f"{c.architecture}.l_internal", l_internal, f"must be between l_max={c.l_max} and {MAX_L}")
    if c.parity not in PARITIES:
        _fail("parity", c.parity, f"expected one of {PARITIES}")
    if not (c.r_max > 0 and math.isfinite(c.r_max)):
        _fail("r_max", c.r_max, "must be a positive number of Å")
    if c.cutoff_p < 2:
        _fail("cutoff_p", c.cutoff_p, "must be >= 2 for a smooth cutoff")
    if any(w < 1 for w in c.radial_mlp):
        _fail("radial_mlp", c.radial_mlp, "hidden widths must be >= 1")
    if len(set(c.states)) != len(c.states) or any(not name.strip() for name in c.states):
        _fail("states", c.states, "state names must be distinct and not empty")
    if c.state_energies not in STATE_ENERGIES:
        _fail("state_energies", c.state_energies, f"expected one of {STATE_ENERGIES}")
    if c.num_states < 2 and c.state_energies != "diabatic":
        _fail("state_energies", c.state_energies, "applies only to models of two or more states")
    if c.couplings not in COUPLINGS:
        _fail("couplings", c.couplings, f"expected one of {COUPLINGS}")
    if c.couplings == "diabatic" and c.state_energies != "diabatic":
        _fail("couplings", c.couplings, f"diabatic couplings come from the eigenvectors of the diabatic matrix: they "
              f"need state_energies='diabatic', not {c.state_energies!r}")
    if c.couplings is not None and c.num_states < 2:
        _fail("couplings", c.couplings, "couplings need at least two states")
    if c.couplings == "vector" and c.l_max < 1:
        _fail("couplings", c.couplings, "vector couplings need l_max >= 1 (vector features)")
    for z, value in c.statistics.energy_shift.items():
        if isinstance(value, list) and len(value) != c.num_states:
            _fail("statistics", {z: value}, f"a per-state energy shift needs {c.num_states} values")
    missing = [z for z in list(c.statistics.atomic_energies) + list(c.statistics.energy_shift) if z not in c.species]
    if missing:
        _fail("statistics", sorted(set(missing)), "energies given for elements that are not in species")


PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(channels=32, l_max=1, l_max_edge=2, num_layers=2, radial_mlp=(32, 32), mace={"correlation": 2}),
    "medium": dict(channels=64, l_max=1, l_max_edge=3, num_layers=2, radial_mlp=(64, 64, 64), mace={"correlation": 3}),
    "large": dict(channels=128, l_max=2, l_max_edge=3, num_layers=2, radial_mlp=(64, 64, 64), mace={"correlation": 3}),
}
