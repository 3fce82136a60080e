"""Training and evaluation: typed configuration, the training loop, metrics and checkpoints."""

from tensorfuse.train._config import DataConfig, OptimConfig, TrainConfig
from tensorfuse.train._evaluate import Evaluation, evaluate
from tensorfuse.train._trainer import TrainResult, bundled_dataset, format_metrics, train

__all__ = [
    "DataConfig",
    "Evaluation",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "bundled_dataset",
    "evaluate",
    "format_metrics",
    "train",
]
