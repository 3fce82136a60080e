"""Training and evaluation: typed configuration, the training loop, metrics and checkpoints."""

from tensorfuse.train._config import RESUMABLE_CHANGES, DataConfig, OptimConfig, TrainConfig
from tensorfuse.train._data import bundled_dataset
from tensorfuse.train._evaluate import Evaluation, evaluate
from tensorfuse.train._report import format_metrics
from tensorfuse.train._trainer import Trainer, TrainResult, resume_config, train

__all__ = [
    "RESUMABLE_CHANGES",
    "DataConfig",
    "Evaluation",
    "OptimConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "bundled_dataset",
    "evaluate",
    "format_metrics",
    "resume_config",
    "train",
]
