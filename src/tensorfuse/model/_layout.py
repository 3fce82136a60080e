"""The irreps of a model's features, layer by layer, from its configuration."""

from __future__ import annotations

from tensorfuse.o3 import Irrep, Irreps


def feature_irreps(l_max: int, parity: str) -> Irreps:
    """Per-channel irreps up to ``l_max``: natural parity (0e+1o+2e...) or both parities."""
    if parity == "natural":
        return Irreps([(1, Irrep(l, (-1) ** l)) for l in range(l_max + 1)])
    return Irreps([(1, Irrep(l, p)) for l in range(l_max + 1) for p in ((-1) ** l, -((-1) ** l))])


def layer_irreps(config) -> tuple[Irreps, Irreps, list[Irreps]]:
    """``(edge harmonics, atomic density A or messages, node features before/after each layer)`` per channel.

    Node features start as scalars (the species embedding), have degrees up to ``l_max`` between
    layers and are scalars again after the last layer, which only feeds the energy readout.
    """
    edge = Irreps.spherical_harmonics(config.l_max_edge)
    # Cormorant's messages live at the hidden degrees ("maxl"); MACE's density up to l_max_edge
    density = feature_irreps(config.l_max if config.architecture == "cormorant" else config.l_max_edge, config.parity)
    hidden = feature_irreps(config.l_max, config.parity)
    # the last layer feeds the energy readouts (scalars), and the coupling vectors (1o) if any
    last = Irreps("0e+1o") if config.couplings == "vector" else Irreps("0e")
    nodes = [Irreps("0e")] + [hidden] * (config.num_layers - 1) + [last]
    return edge, density, nodes
