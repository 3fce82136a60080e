"""The potential: configuration, builder, energy model and the force/stress wrapper."""

from tensorfuse.model._build import build_model
from tensorfuse.model._committee import Committee, UncertaintyLimits
from tensorfuse.model._config import (
    ARCHITECTURES,
    PRESETS,
    PRODUCT_BASES,
    CormorantOptions,
    MaceOptions,
    ModelConfig,
    Statistics,
)
from tensorfuse.model._energy import EnergyModel
from tensorfuse.model._layout import feature_irreps, layer_irreps
from tensorfuse.model._potential import Potential

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "PRODUCT_BASES",
    "Committee",
    "CormorantOptions",
    "EnergyModel",
    "MaceOptions",
    "ModelConfig",
    "Potential",
    "Statistics",
    "UncertaintyLimits",
    "build_model",
    "feature_irreps",
    "layer_irreps",
]
