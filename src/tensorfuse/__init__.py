"""tensorfuse: O(3)-equivariant interatomic potentials in the spherical and Cartesian bases."""

from tensorfuse import data, nn, o3
from tensorfuse.data import AtomicGraph
from tensorfuse.model import ModelConfig, Potential, Statistics, build_model
from tensorfuse.model._serialization import load_model, save_model
from tensorfuse.train import DataConfig, OptimConfig, TrainConfig, evaluate, train

__version__ = "0.1.0"

__all__ = [
    "AtomicGraph",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "Potential",
    "Statistics",
    "TrainConfig",
    "__version__",
    "build_model",
    "data",
    "evaluate",
    "load_model",
    "nn",
    "o3",
    "save_model",
    "train",
]
