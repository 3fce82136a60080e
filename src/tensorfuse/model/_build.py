"""From a configuration to a model."""

from __future__ import annotations

import torch

from tensorfuse.model._config import ModelConfig
from tensorfuse.model._energy import EnergyModel
from tensorfuse.model._potential import Potential


def build_model(config: ModelConfig, dtype: torch.dtype | None = None, seed: int | None = None) -> Potential:
    """Build the potential (energy model wrapped for forces and stress) described by ``config``.

    ``dtype`` defaults to torch's default dtype; ``seed`` makes the initial weights reproducible
    (without touching the global random state). Every parameter and constant is created in
    ``dtype`` directly: the process-wide default dtype is left alone.
    """
    if not isinstance(config, ModelConfig):
        raise ValueError(f"build_model needs a ModelConfig, got {type(config).__name__}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        return Potential(EnergyModel(config, dtype=dtype))
