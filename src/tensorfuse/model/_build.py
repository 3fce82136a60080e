"""From a configuration to a model."""

from __future__ import annotations

import torch

from tensorfuse.model._config import ModelConfig
from tensorfuse.model._energy import EnergyModel, feature_irreps
from tensorfuse.model._potential import Potential
from tensorfuse.o3 import Irreps


def layer_irreps(config: ModelConfig) -> tuple[Irreps, Irreps, list[Irreps]]:
    """``(edge harmonics, atomic density A or messages, node features before/after each layer)`` per channel.

    Node features start as scalars (the species embedding), have degrees up to ``l_max`` between
    layers and are scalars again after the last layer, which only feeds the energy readout.
    """
    edge = Irreps.spherical_harmonics(config.l_max_edge)
    # Cormorant's messages live at the hidden degrees ("maxl"); MACE's density up to l_max_edge
    density = feature_irreps(config.l_max if config.architecture == "cormorant" else config.l_max_edge, config.parity)
    hidden = feature_irreps(config.l_max, config.parity)
    nodes = [Irreps("0e")] + [hidden] * (config.num_layers - 1) + [Irreps("0e")]
    return edge, density, nodes


def build_model(config: ModelConfig, dtype: torch.dtype | None = None, seed: int | None = None) -> Potential:
    """Build the potential (energy model wrapped for forces and stress) described by ``config``.

    ``dtype`` defaults to torch's default dtype; ``seed`` makes the initial weights reproducible.
    """
    if not isinstance(config, ModelConfig):
        raise ValueError(f"build_model needs a ModelConfig, got {type(config).__name__}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.random.fork_rng(enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            model = Potential(EnergyModel(config))
    finally:
        torch.set_default_dtype(previous)
    return model
