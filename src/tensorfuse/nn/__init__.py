"""Neural-network layers built on :mod:`tensorfuse.o3`, runnable in either basis."""

from tensorfuse.nn._embedding import ScalarReadout, SpeciesEmbedding
from tensorfuse.nn._fusion import FUSION_MODES, FusionBlock, FusionProductBasis
from tensorfuse.nn._interaction import Interaction
from tensorfuse.nn._linear import IrrepsLinear
from tensorfuse.nn._product_basis import ProductBasis
from tensorfuse.nn._radial import BesselBasis, PolynomialCutoff, RadialMLP, ScaledSiLU
from tensorfuse.nn._symmetric_contraction import SymmetricContraction
from tensorfuse.nn._tensor_product import ChannelwiseTensorProduct

__all__ = [
    "BesselBasis",
    "ChannelwiseTensorProduct",
    "FUSION_MODES",
    "FusionBlock",
    "FusionProductBasis",
    "Interaction",
    "IrrepsLinear",
    "PolynomialCutoff",
    "ProductBasis",
    "RadialMLP",
    "ScalarReadout",
    "ScaledSiLU",
    "SpeciesEmbedding",
    "SymmetricContraction",
]
