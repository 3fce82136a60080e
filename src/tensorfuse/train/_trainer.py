"""The training loop: from a :class:`TrainConfig` to a trained, saved and tested potential."""

from __future__ import annotations

import copy
import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tensorfuse.data._dataset import GraphDataset
from tensorfuse.data._io import DataError, DataKeys, Frame, read_frames, validate_frames
from tensorfuse.model._build import build_model
from tensorfuse.model._serialization import atomic_save, model_from_dict, model_to_dict, save_model
from tensorfuse.train._config import TrainConfig
from tensorfuse.train._distributed import Distributed
from tensorfuse.train._loss import LossWeights, batch_counts, error_sums, loss_terms, metrics_from_sums
from tensorfuse.train._statistics import atomic_energies, compute_statistics, refit_energy_shift

CHECKPOINT_FORMAT = "tensorfuse-checkpoint"
DEMO_TIME_BUDGET = 3.0  # minutes: `tensorfuse train` without data must finish in a few minutes
CHECKPOINT_VERSION = 1


@dataclass
class TrainResult:
    model: torch.nn.Module
    metrics: dict  # split -> metric -> value (meV units)
    history: list = field(default_factory=list)
    output: Path | None = None


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
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(decay).add_(v.detach(), alpha=1 - decay)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        self.shadow = {k: v.clone() for k, v in state["shadow"].items()}

    def copy_to(self, model: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``model`` carrying the averaged weights."""
        averaged = copy.deepcopy(model)
        averaged.load_state_dict({**model.state_dict(), **self.shadow})
        return averaged


def _log(dist: Distributed, message: str) -> None:
    if dist.is_main:
        print(message, flush=True)


class _ProgressBar:
    """A one-line progress bar on a terminal (silent otherwise, e.g. in CI logs)."""

    def __init__(self, total: int, label: str, enabled: bool):
        self.total, self.label, self.enabled = total, label, enabled and sys.stderr.isatty()
        self.start = time.perf_counter()

    def update(self, done: int, loss: float) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * done / max(self.total, 1))
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                         f"loss {loss:.4g} ({rate:.1f} batches/s)")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


# --- data --------------------------------------------------------------------------------------
def bundled_dataset(split: str) -> Path:
    """The demo data shipped with tensorfuse (rMD17 ethanol, eV): ``"train"`` or ``"test"``."""
    return Path(__file__).resolve().parent.parent / "datasets" / f"ethanol_{split}.xyz"


def load_data(config: TrainConfig, dist: Distributed):
    """Train/valid/test frames, isolated atoms, and the read reports, validated."""
    data = config.data
    keys = DataKeys(energy=data.energy_key, forces=data.forces_key, stress=data.stress_key, virial=data.virial_key)
    train_path = data.train_file or bundled_dataset("train")
    test_path = data.test_file or (bundled_dataset("test") if data.train_file is None else None)
    frames, report = read_frames(train_path, keys, data.energy_unit)
    reports = [report]
    isolated = [f for f in frames if f.is_isolated_atom]
    frames = [f for f in frames if not f.is_isolated_atom]
    if not frames:
        raise DataError(f"{train_path}: no training frames besides isolated atoms")
    rng = np.random.default_rng(config.training.seed)
    test = None
    if data.valid_file:
        valid, r = read_frames(data.valid_file, keys, data.energy_unit)
        reports.append(r)
        valid = [f for f in valid if not f.is_isolated_atom]
    else:
        order = rng.permutation(len(frames))
        n_valid = max(1, int(round(data.valid_fraction * len(frames)))) if data.valid_fraction > 0 else 0
        if data.max_valid_frames is not None:
            n_valid = min(n_valid, data.max_valid_frames) if data.valid_fraction > 0 else data.max_valid_frames
        valid = [frames[i] for i in order[:n_valid]]
        frames = [frames[i] for i in order[n_valid:]]
    if data.max_train_frames is not None:
        frames = frames[: data.max_train_frames]
    if data.max_valid_frames is not None:
        valid = valid[: data.max_valid_frames]
    if test_path:
        test, r = read_frames(test_path, keys, data.energy_unit)
        reports.append(r)
        test = [f for f in test if not f.is_isolated_atom]
    return frames, valid, test or [], isolated, reports


# --- training ----------------------------------------------------------------------------------
def train(config: TrainConfig) -> TrainResult:
    """Train a potential as described by ``config``; returns the model (EMA weights of the best
    validation epoch) and its errors. Writes ``model.pt``, checkpoints and ``metrics.csv`` to
    ``config.output``, and resumes from ``checkpoint_last.pt`` there when ``config.resume``."""
    dist = Distributed.from_environment()
    try:
        return _train(config, dist)
    finally:
        dist.close()


def _train(config: TrainConfig, dist: Distributed) -> TrainResult:
    opt = config.training
    dtype = getattr(torch, opt.dtype)
    output = Path(config.output)
    if dist.is_main:
        output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    train_frames, valid_frames, test_frames, isolated, reports = load_data(config, dist)
    for report in reports:
        _log(dist, "read " + report.row())
    species = sorted({int(z) for f in train_frames + valid_frames + test_frames + isolated for z in f.numbers})
    provisional = config.model_config(species, None or _placeholder_statistics())
    require = ["energy"] + (["forces"] if any(f.forces is not None for f in train_frames) else [])
    for name, frames in (("train", train_frames), ("valid", valid_frames), ("test", test_frames)):
        if frames:
            validate_frames(frames, species=provisional.species, r_max=provisional.r_max,
                            min_distance=config.data.min_distance, require=require,
                            keys=DataKeys(config.data.energy_key, config.data.forces_key,
                                          config.data.stress_key, config.data.virial_key),
                            allow_missing=config.data.allow_missing_labels)
    e0, how = atomic_energies(train_frames, isolated, provisional.species, config.data.e0s)
    datasets = {
        "train": GraphDataset(train_frames, provisional.r_max, dtype),
        "valid": GraphDataset(valid_frames, provisional.r_max, dtype) if valid_frames else None,
        "test": GraphDataset(test_frames, provisional.r_max, dtype) if test_frames else None,
    }
    statistics = compute_statistics(train_frames, datasets["train"].average_num_neighbors(), e0)
    model_config = config.model_config(species, statistics)
    _log(dist, f"frames: train {len(train_frames)}, valid {len(valid_frames)}, test {len(test_frames)}; "
               f"E0 from {how}: " + ", ".join(f"Z={z}: {e:.4f} eV" for z, e in sorted(e0.items())) +
         f"; force RMS scale {statistics.energy_scale:.4f}; avg neighbours {statistics.avg_num_neighbors:.2f}")

    model = build_model(model_config, dtype=dtype, seed=opt.seed).to(dist.device)
    n_params = sum(p.numel() for p in model.parameters())
    fusion = f" ({model_config.fusion_mode} leaves)" if model_config.product_basis == "fusion" else ""
    _log(dist, f"model: {model_config.architecture}-style, {model_config.basis} basis, "
               f"{model_config.product_basis}{fusion} product basis, {n_params:,} parameters, "
               f"{dist.world_size} process(es)")

    def is_decayed(name: str) -> bool:  # many-body weights, as MACE decays its product basis
        return ".product." in name or ".fusion." in name

    decayed = [p for name, p in model.named_parameters() if is_decayed(name)]
    others = [p for name, p in model.named_parameters() if not is_decayed(name)]
    optimizer = torch.optim.Adam(
        [{"params": decayed, "weight_decay": opt.weight_decay}, {"params": others, "weight_decay": 0.0}],
        lr=opt.lr, amsgrad=True,
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=opt.scheduler_factor, patience=opt.scheduler_patience
    )
    ema = ExponentialMovingAverage(model, opt.ema_decay) if opt.ema_decay else None
    generator = torch.Generator().manual_seed(opt.seed)
    weights = LossWeights(opt.energy_weight, opt.forces_weight, opt.stress_weight)
    stress = any(f.stress is not None or f.virial is not None for f in train_frames)
    state = {"epoch": 0, "best_valid": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "best_model": None, "elapsed": 0.0}

    last_path, best_path = output / "checkpoint_last.pt", output / "checkpoint_best.pt"
    if config.resume:
        if not last_path.exists():
            raise ValueError(f"--resume: no checkpoint to resume from at {last_path}")
        checkpoint = torch.load(last_path, map_location="cpu", weights_only=True)
        if checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{last_path} is not a tensorfuse training checkpoint")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        if ema is not None and checkpoint["ema"] is not None:
            ema.load_state_dict(checkpoint["ema"])
        generator.set_state(checkpoint["generator"])
        torch.set_rng_state(checkpoint["torch_rng"])
        state.update(checkpoint["state"])
        _log(dist, f"resumed from {last_path} after epoch {state['epoch']}")

    csv_path = output / "metrics.csv"
    writer = _TensorBoard(output) if dist.is_main else None
    n_train = len(datasets["train"])
    epoch_seconds = None
    budget = opt.time_budget
    if budget is None and config.data.train_file is None:
        budget = DEMO_TIME_BUDGET
        _log(dist, f"bundled demo data: training for at most {budget:g} minutes (set --time-budget to change)")
    while state["epoch"] < opt.max_epochs:
        elapsed = state["elapsed"] + (time.perf_counter() - started)
        if budget is not None and epoch_seconds is not None:
            if elapsed + epoch_seconds > 60 * budget:
                _log(dist, f"time budget of {budget:g} min reached after epoch {state['epoch']}")
                break
        epoch = state["epoch"] + 1
        epoch_start = time.perf_counter()
        model.train()
        order = torch.randperm(n_train, generator=generator).tolist()
        batches = [order[i : i + opt.batch_size] for i in range(0, n_train, opt.batch_size)]
        bar = _ProgressBar(len(batches), f"epoch {epoch}", dist.is_main)
        train_sums = _zero_sums()
        for k, global_batch in enumerate(batches):
            loss_value = _train_step(model, optimizer, datasets["train"], global_batch, weights, stress, opt,
                                     dist, train_sums)
            if ema is not None:
                ema.update(model)
            bar.update(k + 1, loss_value)
        bar.close()
        evaluation = ema.copy_to(model) if ema is not None else model
        valid_metrics, valid_loss = (evaluate_dataset(evaluation, datasets["valid"], opt.valid_batch_size, weights,
                                                      stress, dist) if datasets["valid"] else ({}, math.nan))
        train_metrics = metrics_from_sums(_reduce(train_sums, dist))
        monitored = valid_loss if datasets["valid"] else train_sums["loss"]
        scheduler.step(monitored)
        epoch_seconds = time.perf_counter() - epoch_start
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "time_s": round(epoch_seconds, 3),
               "train_loss": train_sums["loss"] / max(len(batches), 1), "valid_loss": valid_loss,
               **{f"train_{k}": v for k, v in train_metrics.items()},
               **{f"valid_{k}": v for k, v in valid_metrics.items()}}
        state["history"].append(row)
        improved = monitored < state["best_valid"]
        if improved:
            state.update(best_valid=monitored, best_epoch=epoch, bad_epochs=0)
            state["best_model"] = model_to_dict(evaluation)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["elapsed"] = state["elapsed"] + (time.perf_counter() - started)
        started = time.perf_counter()
        _log(dist, _summary(row, valid_metrics))
        if dist.is_main:
            _append_csv(csv_path, row)
            if writer is not None:
                writer.add(row)
            checkpoint = {
                "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "ema": ema.state_dict() if ema is not None else None,
                "generator": generator.get_state(), "torch_rng": torch.get_rng_state(), "state": state,
                "train_config": config.to_dict(),
            }
            atomic_save(checkpoint, last_path)
            if improved:
                atomic_save(checkpoint, best_path)
                atomic_save(state["best_model"], output / "model.pt")
        dist.barrier()
        if opt.early_stopping_patience is not None and state["bad_epochs"] >= opt.early_stopping_patience:
            _log(dist, f"early stopping: no improvement for {state['bad_epochs']} epochs")
            break

    best = model_from_dict(state["best_model"], "best model", dist.device) if state["best_model"] else model
    if opt.refit_energy_shift and any(f.energy is not None for f in train_frames):
        shifts = refit_energy_shift(best, datasets["train"], opt.valid_batch_size, dist)
        _log(dist, "energy shift re-fitted to the training energies: "
                   + ", ".join(f"Z={z}: {v:+.4f} eV" for z, v in shifts.items()))
    if dist.is_main and state["best_model"] is not None:
        save_model(best, output / "model.pt")
    metrics = {}
    for split in ("train", "valid", "test"):
        if datasets[split] is not None:
            metrics[split], _ = evaluate_dataset(best, datasets[split], opt.valid_batch_size, weights, stress, dist)
    _log(dist, format_metrics(metrics, f"best epoch {state['best_epoch']} (EMA weights)"))
    return TrainResult(best, metrics, state["history"], output)


def _placeholder_statistics():
    from tensorfuse.model._config import Statistics

    return Statistics()


def _zero_sums() -> dict:
    from tensorfuse.train._loss import SUM_KEYS

    return {k: 0.0 for k in SUM_KEYS}


def _reduce(sums: dict, dist: Distributed) -> dict:
    if not dist.enabled:
        return sums
    keys = sorted(sums)
    tensor = dist.sum_(torch.tensor([sums[k] for k in keys], dtype=torch.float64))
    return dict(zip(keys, tensor.tolist()))


def _train_step(model, optimizer, dataset, global_batch, weights, stress, opt, dist, sums) -> float:
    optimizer.zero_grad(set_to_none=True)
    # normalize by the counts of the whole global batch, so that the ranks' losses add up to it
    graph_all, targets_all = dataset.collate(global_batch)
    counts = batch_counts(graph_all, targets_all)
    local = dist.shard(global_batch)
    loss_value = 0.0
    if local:
        graph, targets = dataset.collate(local) if dist.enabled else (graph_all, targets_all)
        graph, targets = graph.to(dist.device), targets.to(dist.device)
        out = model(graph, forces=True, stress=stress, create_graph=True)
        loss = loss_terms(out, graph, targets, weights, counts)
        loss.backward()
        loss_value = float(loss.detach())
        for k, v in error_sums(out, graph, targets).items():
            sums[k] += v
    dist.sum_gradients(model.parameters())
    if opt.clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), opt.clip_grad)
    optimizer.step()
    total = float(dist.sum_(torch.tensor(loss_value, dtype=torch.float64)))
    sums["loss"] += total
    return total


def evaluate_dataset(model, dataset, batch_size, weights, stress, dist: Distributed | None = None):
    """Metrics (MAE/RMSE, meV units) and the mean loss of ``model`` on a dataset."""
    dist = dist or Distributed()
    model.eval()
    sums = _zero_sums()
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    for global_batch in batches:
        graph_all, targets_all = dataset.collate(global_batch)
        counts = batch_counts(graph_all, targets_all)
        local = dist.shard(global_batch)
        if not local:
            continue
        graph, targets = dataset.collate(local) if dist.enabled else (graph_all, targets_all)
        graph, targets = graph.to(dist.device), targets.to(dist.device)
        out = model(graph, forces=True, stress=stress)
        sums["loss"] += float(loss_terms(out, graph, targets, weights, counts).detach())
        for k, v in error_sums(out, graph, targets).items():
            sums[k] += v
    sums = _reduce(sums, dist)
    return metrics_from_sums(sums), sums["loss"] / max(len(batches), 1)


def _summary(row: dict, valid: dict) -> str:
    text = (f"epoch {row['epoch']:4d}  loss {row['train_loss']:.4g}  valid loss {row['valid_loss']:.4g}  "
            f"lr {row['lr']:.2e}  {row['time_s']:.1f} s")
    if valid:
        text += (f"  valid E MAE {valid['e_mae']:.2f} meV ({valid['e_atom_mae']:.2f} meV/atom), "
                 f"RMSE {valid['e_rmse']:.2f}; F MAE {valid['f_mae']:.2f} meV/Å, RMSE {valid['f_rmse']:.2f}")
    return text


def format_metrics(metrics: dict, title: str) -> str:
    lines = [f"errors, {title}:",
             f"{'split':>6} | {'E MAE':>8} {'E RMSE':>8} meV | {'E/atom MAE':>10} {'RMSE':>8} meV | "
             f"{'F MAE':>8} {'F RMSE':>8} meV/Å | {'S MAE':>8} {'S RMSE':>8} meV/Å³"]
    def number(value: float, width: int, digits: int) -> str:  # "-" where a split has no such label
        return f"{value:{width}.{digits}f}" if math.isfinite(value) else f"{'-':>{width}}"

    for split, m in metrics.items():
        lines.append(f"{split:>6} | {number(m['e_mae'], 8, 2)} {number(m['e_rmse'], 8, 2)}     | "
                     f"{number(m['e_atom_mae'], 10, 3)} {number(m['e_atom_rmse'], 8, 3)}     | "
                     f"{number(m['f_mae'], 8, 2)} {number(m['f_rmse'], 8, 2)}       | "
                     f"{number(m['s_mae'], 8, 3)} {number(m['s_rmse'], 8, 3)}")
    return "\n".join(lines)


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


class _TensorBoard:
    """Scalars to TensorBoard when ``torch.utils.tensorboard`` (the tensorboard package) is installed."""

    def __init__(self, output: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output / "tensorboard"))
        except Exception:  # tensorboard not installed: CSV only
            self.writer = None

    def add(self, row: dict) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(key, value, row["epoch"])
        self.writer.flush()
