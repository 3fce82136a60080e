"""What a training run carries from epoch to epoch, as plain data a checkpoint can hold."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields

import torch


@dataclass
class TrainingState:
    """Progress of a run: epochs done, the best epoch and its model (EMA weights, plain data),
    patience, wall-clock seconds spent in earlier processes, and one metrics row per epoch."""

    epoch: int = 0
    best_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    elapsed: float = 0.0
    history: list[dict] = field(default_factory=list)
    best_model: dict | None = None

    def record(self, row: dict, loss: float, model_dict) -> bool:
        """Add an epoch's metrics row; returns whether ``loss`` improved on the best so far
        (``model_dict()`` is then called and kept as the best model)."""
        self.history.append(row)
        self.epoch = row["epoch"]
        improved = loss < self.best_loss
        if improved:
            self.best_loss, self.best_epoch, self.bad_epochs = loss, self.epoch, 0
            self.best_model = model_dict()
        else:
            self.bad_epochs += 1
        return improved

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict) -> "TrainingState":
        state = dict(state)
        if "best_valid" in state:  # checkpoints of tensorfuse 0.1 (format version 1)
            state["best_loss"] = state.pop("best_valid")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in state.items() if k in known})


class ExponentialMovingAverage:
    """Shadow weights ``s = decay * s + (1 - decay) * w`` after every optimizer step."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))  # warm-up, as torch_ema
        # frozen weights (fine-tuning) stay bit for bit: d*w + (1-d)*w is not always w in floating point
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        for k, v in model.state_dict().items():
            if k in self.shadow and k not in frozen:
                self.shadow[k].mul_(decay).add_(v.detach(), alpha=1 - decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        unknown = sorted(set(state["shadow"]) - set(self.shadow))
        if unknown:
            raise KeyError(f"averaged weights for parameters the model does not have: {unknown[:3]}")
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}

    def copy_to(self, model: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``model`` carrying the averaged weights."""
        averaged = copy.deepcopy(model)
        averaged.load_state_dict({**model.state_dict(), **self.shadow})
        return averaged
