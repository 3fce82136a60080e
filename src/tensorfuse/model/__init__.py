"""The potential: configuration, builder, energy model, the force/stress wrapper, model files
(``save_model``, ``load_model``, ``load_potential``), exported programs (``export_model``) and models
compiled ahead of time for C++ and Python (``compile_model``, ``CompiledPotential``)."""

from tensorfuse.model._build import build_model
from tensorfuse.model._compiled import CompiledPotential, compile_model
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
from tensorfuse.model._export import export_model, load_exported
from tensorfuse.model._layout import feature_irreps, layer_irreps
from tensorfuse.model._potential import Potential
from tensorfuse.model._serialization import load_model, load_potential, save_model

__all__ = [
    "ARCHITECTURES",
    "PRESETS",
    "PRODUCT_BASES",
    "Committee",
    "CompiledPotential",
    "CormorantOptions",
    "EnergyModel",
    "MaceOptions",
    "ModelConfig",
    "Potential",
    "Statistics",
    "UncertaintyLimits",
    "build_model",
    "compile_model",
    "export_model",
    "feature_irreps",
    "layer_irreps",
    "load_exported",
    "load_model",
    "load_potential",
    "save_model",
]
