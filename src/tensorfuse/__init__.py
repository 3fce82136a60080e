"""tensorfuse: O(3)-equivariant interatomic potentials in the spherical and Cartesian bases."""

from tensorfuse import data, nn, o3
from tensorfuse.data import AtomicGraph
from tensorfuse.model import ModelConfig, Potential, Statistics, build_model

__version__ = "0.1.0"

__all__ = ["AtomicGraph", "ModelConfig", "Potential", "Statistics", "build_model", "data", "nn", "o3", "__version__"]
