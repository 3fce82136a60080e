"""Learning-rate schedules: what the trainer calls after every epoch, one interface for both."""

from __future__ import annotations

import math

import torch

from tensorfuse.train._config import SCHEDULERS


class PlateauSchedule:
    """MACE's schedule: the learning rate times ``factor`` after ``patience`` epochs without a lower
    validation loss (``ReduceLROnPlateau``; its state is what checkpoints have always held)."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: float, patience: int):
        self.inner = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=factor, patience=patience)

    def step(self, monitored: float, progress: float) -> None:
        self.inner.step(monitored)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


class CosineSchedule:
    """Half a cosine from the initial learning rate down to ``final_factor`` times it, over the
    run's progress (the larger of the epochs' and the time budget's fraction spent): a run that
    knows its length ends at a small rate instead of waiting for plateaus (budgeted training).
    Stateless: the rate follows from the progress alone, so a resumed run continues it exactly."""

    def __init__(self, optimizer: torch.optim.Optimizer, final_factor: float):
        self.optimizer = optimizer
        self.initial = [group["lr"] for group in optimizer.param_groups]
        self.final_factor = final_factor

    def rate(self, initial: float, progress: float) -> float:
        fraction = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return initial * (self.final_factor + (1.0 - self.final_factor) * fraction)

    def step(self, monitored: float, progress: float) -> None:
        for group, initial in zip(self.optimizer.param_groups, self.initial):
            group["lr"] = self.rate(initial, progress)

    def state_dict(self) -> dict:
        return {}  # the rate follows from the configuration and the run's progress

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError("the checkpoint's learning-rate schedule is not training.scheduler: cosine")


def learning_rate_schedule(name: str, optimizer: torch.optim.Optimizer, *, factor: float, patience: int,
                           final_factor: float):
    """The schedule ``training.scheduler`` names."""
    if name == "plateau":
        return PlateauSchedule(optimizer, factor, patience)
    if name == "cosine":
        return CosineSchedule(optimizer, final_factor)
    raise ValueError(f"training.scheduler: expected one of {SCHEDULERS}, got {name!r}")
