"""tensorfuse: O(3)-equivariant interatomic potentials in the spherical and Cartesian bases."""

from tensorfuse import nn, o3

__version__ = "0.1.0"

__all__ = ["nn", "o3", "__version__"]
