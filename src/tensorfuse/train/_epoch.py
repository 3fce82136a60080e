"""One epoch of training, and the evaluation of a model on a dataset (data-parallel aware)."""

from __future__ import annotations

import math

import torch

from tensorfuse.data._sampler import BatchSampler
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


def _share(dataset, global_batch, objective, dist: Distributed):
    """This rank's share of a global batch, read alone (``None, None`` when it has none), and the
    counts of the whole batch that normalize the loss (so that the ranks' losses add up to the loss
    of the batch): every rank counts its share, and the counts are summed."""
    local = dist.shard(global_batch)
    if not dist.enabled:
        graph, targets = dataset.collate(local)
        return graph, targets, objective.counts(graph, targets)
    graph, targets = dataset.collate(local or global_batch[:1])  # a rank without a share adds zeros
    counts = objective.counts(graph, targets).to(dist.device)
    counts = dist.sum_(counts if local else torch.zeros_like(counts))
    return (graph, targets, counts) if local else (None, None, counts)


class EpochRunner:
    """Trains a model for one epoch over ``dataset`` in shuffled global batches of ``batch_size``
    frames or up to ``batch_atoms`` atoms (each split across the ranks, each rank reading only its
    share), with optional gradient clipping and EMA updates after every step."""

    def __init__(self, dataset, batch_size: int, objective, stress: bool, dist: Distributed,
                 clip_grad: float | None = None, batch_atoms: int | None = None):
        self.dataset, self.batch_size, self.objective = dataset, batch_size, objective
        self.stress, self.dist, self.clip_grad = stress, dist, clip_grad
        self.sampler = BatchSampler(len(dataset), batch_size, batch_atoms,
                                    dataset.atom_counts() if batch_atoms is not None else None)

    def run(self, model, optimizer, ema, generator: torch.Generator, label: str) -> tuple[dict, float]:
        """Returns the epoch's training metrics and its mean loss per batch."""
        model.train()
        batches = self.sampler.epoch(generator)
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
        graph, targets, counts = _share(self.dataset, global_batch, self.objective, dist)
        loss_value = 0.0
        if graph is not None:
            graph, targets = graph.to(dist.device), targets.to(dist.device)
            out = model(graph, forces=True, stress=self.stress, create_graph=True)
            loss = self.objective.loss(out, graph, targets, counts)
            # only the parameters' gradients: nothing is spent on the positions' (the graph of the
            # forces leads there too)
            loss.backward(inputs=[p for p in model.parameters() if p.requires_grad])
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
    batches = [range(i, min(i + batch_size, len(dataset))) for i in range(0, len(dataset), batch_size)]
    with progress_bar(label, iterable=batches, enabled=dist.is_main, unit="batch") as bar:
        for global_batch in bar:
            graph, targets, counts = _share(dataset, global_batch, objective, dist)
            if graph is None:
                continue
            graph, targets = graph.to(dist.device), targets.to(dist.device)
            out = model(graph, forces=True, stress=stress)
            sums["loss"] += float(objective.loss(out, graph, targets, counts).detach())
            for key, value in objective.error_sums(out, graph, targets).items():
                sums[key] += value
    sums = _reduce(sums, dist)
    return objective.metrics(sums), (sums["loss"] / len(batches) if batches else math.nan)
