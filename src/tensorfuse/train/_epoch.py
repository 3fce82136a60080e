"""One epoch of training, and the evaluation of a model on a dataset (data-parallel aware)."""

from __future__ import annotations

import math

import torch

from tensorfuse.train._distributed import Distributed
from tensorfuse.utils._progress import progress_bar


def _zero_sums(objective) -> dict:
    return {k: 0.0 for k in objective.sum_keys}


def _reduce(sums: dict, dist: Distributed) -> dict:
    if not dist.enabled:
        return sums
    keys = sorted(sums)
    tensor = dist.sum_(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
    return dict(zip(keys, tensor.tolist()))


class EpochRunner:
    """Trains a model for one epoch over ``dataset`` in shuffled global batches (each split across
    the ranks), with optional gradient clipping and EMA updates after every step."""

    def __init__(self, dataset, batch_size: int, objective, stress: bool, dist: Distributed,
                 clip_grad: float | None = None):
        self.dataset, self.batch_size, self.objective = dataset, batch_size, objective
        self.stress, self.dist, self.clip_grad = stress, dist, clip_grad

    def run(self, model, optimizer, ema, generator: torch.Generator, label: str) -> tuple[dict, float]:
        """Returns the epoch's training metrics and its mean loss per batch."""
        model.train()
        n = len(self.dataset)
        order = torch.randperm(n, generator=generator).tolist()
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        sums = _zero_sums(self.objective)
        with progress_bar(label, iterable=batches, enabled=self.dist.is_main, unit="batch") as bar:
            for batch in bar:
                loss = self._step(model, optimizer, batch, sums)
                if ema is not None:
                    ema.update(model)
                if not bar.disable:  # the loss is a float already: showing it costs no synchronisation
                    bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)
        return self.objective.metrics(_reduce(sums, self.dist)), sums["loss"] / max(len(batches), 1)

    def _step(self, model, optimizer, global_batch: list[int], sums: dict) -> float:
        dist = self.dist
        optimizer.zero_grad(set_to_none=True)
        # normalize by the counts of the whole global batch, so that the ranks' losses add up to it
        graph_all, targets_all = self.dataset.collate(global_batch)
        counts = self.objective.counts(graph_all, targets_all)
        local = dist.shard(global_batch)
        loss_value = 0.0
        if local:
            graph, targets = self.dataset.collate(local) if dist.enabled else (graph_all, targets_all)
            graph, targets = graph.to(dist.device), targets.to(dist.device)
            out = model(graph, forces=True, stress=self.stress, create_graph=True)
            loss = self.objective.loss(out, graph, targets, counts)
            loss.backward()
            loss_value = float(loss.detach())
            for key, value in self.objective.error_sums(out, graph, targets).items():
                sums[key] += value
        dist.sum_gradients(model.parameters())
        if self.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip_grad)
        optimizer.step()
        total = float(dist.sum_(torch.tensor(loss_value, dtype=torch.float64)))
        sums["loss"] += total
        return total


def evaluate_dataset(model, dataset, batch_size, objective, stress, dist: Distributed | None = None,
                     label: str = "evaluating"):
    """Metrics (MAE/RMSE, meV units) and the mean loss of ``model`` on a dataset (``label``: the progress bar's)."""
    dist = dist or Distributed()
    model.eval()
    sums = _zero_sums(objective)
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    with progress_bar(label, iterable=batches, enabled=dist.is_main, unit="batch") as bar:
        for global_batch in bar:
            graph_all, targets_all = dataset.collate(global_batch)
            counts = objective.counts(graph_all, targets_all)
            local = dist.shard(global_batch)
            if not local:
                continue
            graph, targets = dataset.collate(local) if dist.enabled else (graph_all, targets_all)
            graph, targets = graph.to(dist.device), targets.to(dist.device)
            out = model(graph, forces=True, stress=stress)
            sums["loss"] += float(objective.loss(out, graph, targets, counts).detach())
            for key, value in objective.error_sums(out, graph, targets).items():
                sums[key] += value
    sums = _reduce(sums, dist)
    return objective.metrics(sums), (sums["loss"] / len(batches) if batches else math.nan)
