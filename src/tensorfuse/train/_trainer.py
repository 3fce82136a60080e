"""The training run: from a :class:`TrainConfig` to a trained, saved and tested potential.

:class:`Trainer` puts the parts together: the run folder (:mod:`._run_folder`) owns every file,
:class:`~tensorfuse.train._state.TrainingState` what passes from epoch to epoch,
:class:`~tensorfuse.train._epoch.EpochRunner` one epoch of optimization, and
:mod:`._data` the data. Each step below does one of: set up, restore, one epoch, finish.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tensorfuse.data._dataset import GraphDataset, OnDiskGraphDataset, graph_dataset
from tensorfuse.model._build import build_model
from tensorfuse.model._config import ModelConfig, Statistics
from tensorfuse.model._serialization import model_from_dict, model_to_dict, without_priors
from tensorfuse.model._transfer import species_axes, transfer_weights
from tensorfuse.train._config import TrainConfig
from tensorfuse.train._data import TrainingData, load_training_data, validate_training_data, write_held_out
from tensorfuse.train._distributed import Distributed
from tensorfuse.train._epoch import EpochRunner, evaluate_dataset
from tensorfuse.train._objective import objective_for
from tensorfuse.train._report import TensorBoard, epoch_line, format_metrics
from tensorfuse.train._run_folder import TEST_FILE, RunFolder
from tensorfuse.train._schedule import learning_rate_schedule
from tensorfuse.train._state import ExponentialMovingAverage, TrainingState
from tensorfuse.train._statistics import atomic_energies, compute_statistics, refit_energy_shift

DEMO_TIME_BUDGET = 3.0  # minutes: `tensorfuse train` without data must finish in a few minutes


@dataclass
class TrainResult:
    model: torch.nn.Module
    metrics: dict  # split -> metric -> value (meV units)
    history: list = field(default_factory=list)
    output: Path | None = None


def train(config: TrainConfig) -> TrainResult:
    """Train a potential as described by ``config``; returns the model (EMA weights of the best
    validation epoch) and its errors. Writes ``config.yaml``, ``model.pt``, ``checkpoint_last.pt``
    and ``metrics.csv`` to ``config.output``; with ``config.resume`` it continues the run there."""
    dist = Distributed.from_environment(config.training.device)
    try:
        return Trainer(config, dist).run()
    finally:
        dist.close()


def resume_config(output, overrides: dict | None = None) -> TrainConfig:
    """The stored configuration of the run in ``output``, with ``overrides`` (``{"section.key":
    value}``) applied and ``resume`` set: what ``tensorfuse train --output DIR --resume`` trains."""
    stored = RunFolder(output).stored_config()
    return stored.with_overrides({**(overrides or {}), "output": str(output), "resume": True})


class Trainer:
    """One training run. ``Trainer(config).run()`` is :func:`train` without distributed set-up."""

    def __init__(self, config: TrainConfig, dist: Distributed | None = None):
        self.config, self.dist = config, dist or Distributed()
        self.options = config.training
        # minutes of wall clock the run may take (bundled demo data without a budget get a short one)
        self.budget = (DEMO_TIME_BUDGET if self.options.time_budget is None and config.data.train_file is None
                       else self.options.time_budget)
        self.folder = RunFolder(config.output, writer=self.dist.is_main)
        self.started = time.perf_counter()
        # the folder is checked first (a refused or unwritable output costs nothing) and changed last
        if config.resume:
            self.folder.check_resume(config)
        else:
            self.folder.check_new(config)
        checkpoint = self.folder.load_checkpoint() if config.resume else None

        self.data = load_training_data(config.data, self.options.seed)
        for report in self.data.reports:
            self.log("read " + report.row())
        self.pretrained = self._pretrained()
        provisional = (self._fine_tuning_config() if self.pretrained is not None
                       else config.model_config(self.data.species, Statistics()))
        validate_training_data(self.data, config.data, provisional.species, provisional.r_max)
        self.datasets = self._datasets(provisional.r_max)
        self.model_config = self._model_config(provisional, checkpoint)
        self.objective = objective_for(self.model_config, self.options)
        self.model = build_model(self.model_config, dtype=self.dtype, seed=self.options.seed).to(self.dist.device)
        if self.pretrained is not None:
            self._start_from_pretrained(checkpoint is None)
        if self.options.compile:
            if self.dist.world_size > 1:
                raise ValueError("training.compile runs in one process; several processes train eagerly (untested)")
            self.model.compile()  # energy+forces as one compiled graph; compiles at the first batch
        self.optimizer, self.scheduler = self._optimizer()
        self.ema = ExponentialMovingAverage(self.model, self.options.ema_decay) if self.options.ema_decay else None
        self.generator = torch.Generator().manual_seed(self.options.seed)
        self.state = TrainingState()
        if checkpoint is not None:
            self._restore(checkpoint)
        # every check passed: now the folder may change (rank 0 writes once every rank got here)
        self.dist.barrier()
        if config.resume:
            self.folder.remove_partial_writes()
            self.folder.store_config(config)  # with the changes a resumed run may make
            self.folder.write_metrics(self.state.history)  # a kill may have left them ahead or behind
        else:
            self.folder.start(config)
            if self.dist.is_main:
                write_held_out(self.data, config.data, self.folder.path / TEST_FILE)
        self.stress = self.data.has_stress and self.model_config.num_states == 1
        self.runner = EpochRunner(self.datasets["train"], self.options.batch_size, self.objective, self.stress,
                                  self.dist, self.options.clip_grad, batch_atoms=self.options.batch_atoms)

    @property
    def dtype(self) -> torch.dtype:
        return getattr(torch, self.options.dtype)

    def log(self, message: str) -> None:
        if self.dist.is_main:
            print(message, flush=True)

    # -- set-up ---------------------------------------------------------------------------------
    def _pretrained(self):
        """The model of ``training.init_model`` (fine-tuning), checked against the data, or ``None``."""
        path = self.options.init_model
        if path is None:
            return None
        # the default model section is {"preset": "small"}: a setting given on top of it keeps that preset
        given = sorted(k for k, v in self.config.model.items() if (k, v) != ("preset", "small"))
        if given:
            raise ValueError(f"training.init_model: the architecture comes from {path}; remove the model settings "
                             f"{given}")
        from tensorfuse.model._serialization import load_model

        pretrained = load_model(path, dtype=self.dtype)
        if not hasattr(pretrained, "config"):
            raise ValueError(f"training.init_model: {path} is an exported program; fine-tuning needs a model file (.pt)")
        if pretrained.config.num_states != max(1, len(self.config.data.states)):
            raise ValueError(f"training.init_model: {path} has {pretrained.config.num_states} state(s), the data "
                             f"{max(1, len(self.config.data.states))}")
        return pretrained

    def _fine_tuning_config(self) -> ModelConfig:
        """The pretrained architecture; on the union of its elements and the data's (sorted, as the
        data's are) when the data bring new ones."""
        old = self.pretrained.config
        new = set(self.data.species) - set(old.species)
        return old.replace(species=tuple(sorted({*old.species, *new}))) if new else old

    def _start_from_pretrained(self, load_weights: bool) -> None:
        """Weights of the pretrained model (not on resume: the checkpoint has them), then the frozen parts."""
        model, old_species = self.model.energy_model, self.pretrained.config.species
        new = [z for z in model.config.species if z not in old_species]
        if load_weights:
            # E0s, shifts and scale are non-persistent buffers: the state dict carries weights only,
            # so the new E0s of this run's statistics stay; new elements' rows keep their fresh values
            transfer_weights(self.pretrained.energy_model, model)
        if new:
            self.log(f"fine-tuning {self.options.init_model}: new element(s) {new}, their per-element weights "
                     "start fresh")
        names = dict(model.named_parameters())
        per_element = species_axes(model)
        for prefix in self.options.freeze:
            matched = [n for n in names if n == prefix or n.startswith(prefix + ".")]
            if not matched:
                parts = sorted({".".join(n.split(".")[:2]) for n in names})
                raise ValueError(f"training.freeze: {prefix!r} names no part of the model; parts: {parts}")
            held = [n for n in matched if n in per_element]
            if new and held:
                # frozen, the new elements' rows would stay random: refused rather than half-frozen
                raise ValueError(f"training.freeze: {prefix!r} holds per-element weights ({held[0]}) and the data "
                                 f"bring element(s) {new} new to {self.options.init_model}, whose rows would stay "
                                 "untrained; freeze parts without per-element weights (e.g. layers.0.interaction, "
                                 "readouts)")
            for n in matched:
                names[n].requires_grad_(False)
        if self.options.freeze:
            frozen = sum(p.numel() for p in names.values() if not p.requires_grad)
            self.log(f"fine-tuning {self.options.init_model}: {frozen:,} of "
                     f"{sum(p.numel() for p in names.values()):,} parameters frozen ({', '.join(self.options.freeze)})")

    def _model_config(self, provisional: ModelConfig, checkpoint: dict | None) -> ModelConfig:
        """Species from the data, statistics (E0s, scale, neighbours) from the training split; on
        resume the checkpoint's, which must describe the same model and data."""
        data, config = self.data, self.config
        e0, how = atomic_energies(data.train, data.isolated, provisional.species, config.data.e0s)
        neighbours = self.datasets["train"].average_num_neighbors()
        statistics = compute_statistics(data.train, neighbours, e0, config.data.state_keys())
        if self.pretrained is not None:
            # the pretrained network's normalization (scale, neighbours) is part of what it learned;
            # E0s (and shifts) of the data's elements are this data set's
            old = self.pretrained.config.statistics
            energies = {**old.atomic_energies, **{z: e0[z] for z in data.species}}
            # (a multi-state model's per-state shifts are fitted on the new data like E0s)
            shifts = {**{z: v for z, v in old.energy_shift.items() if z not in data.species},
                      **statistics.energy_shift}
            model_config = dataclasses.replace(provisional, statistics=dataclasses.replace(
                old, atomic_energies=energies, energy_shift=shifts))
        else:
            model_config = config.model_config(data.species, statistics)
        if model_config.couplings is not None and not data.has_couplings:
            raise ValueError(f"the model predicts {model_config.couplings} couplings but no training frame has "
                             f"couplings ({config.data.coupling_key!r}): set data.coupling_key or model.couplings: null")
        if checkpoint is not None:
            model_config = _matching_checkpoint(model_config, data, checkpoint, self.folder.path)
        s = model_config.statistics
        self.log(f"frames: train {len(data.train)}, valid {len(data.valid)}, test {len(data.test)}; "
                 f"E0 from {how}: " + ", ".join(f"Z={z}: {e:.4f} eV" for z, e in sorted(s.atomic_energies.items()))
                 + f"; force RMS scale {s.energy_scale:.4f}; avg neighbours {s.avg_num_neighbors:.2f}")
        return model_config

    def _datasets(self, r_max: float) -> dict[str, GraphDataset | OnDiskGraphDataset | None]:
        dtype = self.dtype
        return {split: graph_dataset(frames, r_max, dtype) if frames else None
                for split, frames in (("train", self.data.train), ("valid", self.data.valid),
                                      ("test", self.data.test))}

    def _optimizer(self):
        opt, model = self.options, self.model
        decayed = model.energy_model.many_body_parameters()  # as MACE decays its product basis
        chosen = {id(p) for p in decayed}
        others = [p for p in model.parameters() if id(p) not in chosen]
        optimizer = torch.optim.Adam(
            [{"params": decayed, "weight_decay": opt.weight_decay}, {"params": others, "weight_decay": 0.0}],
            lr=opt.lr, amsgrad=True,
        )
        scheduler = learning_rate_schedule(opt.scheduler, optimizer, factor=opt.scheduler_factor,
                                           patience=opt.scheduler_patience, final_factor=opt.final_lr_factor)
        c = self.model_config
        self.log(f"model: {c.describe()}, {sum(p.numel() for p in model.parameters()):,} parameters, "
                 f"{self.dist.world_size} process(es)")
        return optimizer, scheduler

    def _restore(self, checkpoint: dict) -> None:
        source = self.folder.path / "checkpoint_last.pt"
        try:
            self.model.load_state_dict(without_priors(checkpoint["model"]))
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            if self.ema is not None and checkpoint["ema"] is not None:
                ema = dict(checkpoint["ema"])
                ema["shadow"] = without_priors(ema["shadow"])
                self.ema.load_state_dict(ema)
            self.generator.set_state(checkpoint["generator"])
            torch.set_rng_state(checkpoint["torch_rng"])
            self.state = TrainingState.from_state_dict(checkpoint["state"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"{source} does not match the model of this run: {reason}") from None
        self.log(f"resumed from {source} after epoch {self.state.epoch}")

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        self.fit()
        return self.finish()

    def fit(self) -> None:
        budget = self.budget
        if self.options.time_budget is None and budget is not None:
            self.log(f"bundled demo data: training for at most {budget:g} minutes (set --time-budget to change)")
        board = TensorBoard(self.folder.path, self.state.epoch + 1) if self.dist.is_main else None
        epoch_seconds = None
        while not self._should_stop(budget, epoch_seconds):
            start = time.perf_counter()
            row, valid_metrics, improved = self._epoch()
            epoch_seconds = time.perf_counter() - start
            self.log(epoch_line(row, valid_metrics))
            self._save(improved)
            if board is not None:
                board.add(row)
            self.dist.barrier()

    def _should_stop(self, budget: float | None, epoch_seconds: float | None) -> bool:
        state, opt = self.state, self.options
        if state.epoch >= opt.max_epochs:
            return True
        if opt.early_stopping_patience is not None and state.bad_epochs >= opt.early_stopping_patience:
            self.log(f"early stopping: no improvement for {state.bad_epochs} epochs")
            return True
        if budget is not None and epoch_seconds is not None and self._elapsed(epoch_seconds) > 60 * budget:
            self.log(f"time budget of {budget:g} min reached after epoch {state.epoch}")
            return True
        return False

    def _epoch(self) -> tuple[dict, dict, bool]:
        epoch_start = time.perf_counter()
        epoch = self.state.epoch + 1
        train_metrics, train_loss = self.runner.run(self.model, self.optimizer, self.ema, self.generator,
                                                    f"epoch {epoch}")
        evaluation = self.ema.copy_to(self.model) if self.ema is not None else self.model
        valid = self.datasets["valid"]
        valid_metrics, valid_loss = ({}, math.nan) if valid is None else evaluate_dataset(
            evaluation, valid, self.options.valid_batch_size, self.objective, self.stress, self.dist,
            f"epoch {epoch} valid")
        monitored = valid_loss if valid is not None else train_loss
        self.scheduler.step(monitored, self._progress(epoch))
        row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
               "time_s": round(time.perf_counter() - epoch_start, 3),
               "train_loss": train_loss, "valid_loss": valid_loss,
               **{f"train_{k}": v for k, v in train_metrics.items()},
               **{f"valid_{k}": v for k, v in valid_metrics.items()}}
        improved = self.state.record(row, self._selection_value(epoch, monitored, valid_metrics),
                                     lambda: model_to_dict(evaluation))
        now = time.perf_counter()
        self.state.elapsed += now - self.started
        self.started = now
        return row, valid_metrics, improved

    def _progress(self, epoch: int) -> float:
        """The fraction of the run spent after ``epoch``: of its epochs, or of its time budget when
        that ends it first."""
        progress = epoch / self.options.max_epochs
        budget = self.budget
        if budget is not None:
            progress = max(progress, self._elapsed() / (60 * budget))
        return progress

    def _elapsed(self, ahead: float = 0.0) -> float:
        """Wall-clock seconds of the run so far, earlier processes included, plus ``ahead`` (rank
        0's on every rank: ranks must agree on when to stop and on the learning rate)."""
        return self.dist.main_value(self.state.elapsed + (time.perf_counter() - self.started) + ahead)

    def _selection_value(self, epoch: int, loss: float, valid: dict) -> float:
        """What ``training.best_by`` compares between epochs (lower is better)."""
        if self.options.best_by == "last":
            return -float(epoch)  # every epoch improves on the one before
        if self.options.best_by == "loss" or not valid:
            return loss
        forces = [v for k, v in valid.items() if k.startswith("f_mae_") and math.isfinite(v)]
        if not forces and math.isfinite(valid.get("f_mae", math.nan)):
            forces = [valid["f_mae"]]
        if not forces:  # validation frames without forces: nothing else to compare
            return loss
        couplings = [v for k, v in valid.items() if k.startswith("c_mae_") and math.isfinite(v)]
        return sum(forces) / len(forces) + (sum(couplings) / len(couplings) if couplings else 0.0)

    def _save(self, improved: bool) -> None:
        checkpoint = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "ema": self.ema.state_dict() if self.ema is not None else None,
            "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "state": self.state.state_dict(), "train_config": self.config.to_dict(),
            "model_config": self.model_config.to_dict(), "data": self.data.summary(),
        }
        self.folder.save_checkpoint(checkpoint, self.state.best_model if improved else None, self.state.history)

    # -- the end --------------------------------------------------------------------------------
    def finish(self) -> TrainResult:
        """The best model, its energy shift re-fitted to the training energies, saved and tested."""
        state, opt = self.state, self.options
        best = model_from_dict(state.best_model, "best model", self.dist.device) if state.best_model else self.model
        if opt.refit_energy_shift and any(f.energy is not None for f in self.data.train):
            shifts = refit_energy_shift(best, self.datasets["train"], opt.valid_batch_size, self.dist)
            self.log("energy shift re-fitted to the training energies: "
                     + ", ".join(f"Z={z}: {_ev(v)}" for z, v in shifts.items()))
        if state.best_model is not None:
            self.folder.save_model(model_to_dict(best))
        metrics = {}
        for split, dataset in self.datasets.items():
            if dataset is not None:
                metrics[split], _ = evaluate_dataset(best, dataset, opt.valid_batch_size, self.objective, self.stress,
                                                     self.dist, f"testing on {split}")
        self.log(format_metrics(metrics, f"best epoch {state.best_epoch} (EMA weights)"))
        self.folder.write_results(metrics, state.best_epoch)
        return TrainResult(best, metrics, state.history, self.folder.path)


def _ev(value) -> str:
    return f"{value:+.4f} eV" if isinstance(value, float) else "[" + ", ".join(f"{v:+.4f}" for v in value) + "] eV"


def _matching_checkpoint(model_config: ModelConfig, data: TrainingData, checkpoint: dict, folder: Path) -> ModelConfig:
    """The checkpoint's model configuration, after checking that it is the model this configuration
    and these data build: same species, architecture and sizes, and the same data."""
    source = folder / "checkpoint_last.pt"
    stored = checkpoint.get("model_config")
    if stored is None:  # checkpoints of tensorfuse 0.1: the configuration is re-derived from the data
        return model_config
    try:
        stored = ModelConfig.from_dict(stored)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: its model configuration is invalid: {error}") from None
    if stored.species != model_config.species:
        raise ValueError(f"{source} is a model of the elements Z={list(stored.species)}, but the training data "
                         f"now have Z={list(model_config.species)}: the data changed since the run started")
    mine, theirs = model_config.to_dict(), stored.to_dict()
    differ = [k for k in mine if k != "statistics" and mine[k] != theirs.get(k)]
    if differ:
        raise ValueError(f"{source} was trained with other model settings: "
                         + ", ".join(f"{k}={theirs.get(k)!r} (now {mine[k]!r})" for k in differ))
    if checkpoint.get("data") is not None and checkpoint["data"] != data.summary():
        raise ValueError(f"{source}: the training data changed since the run started "
                         f"(frames and atoms per split {checkpoint['data']}, now {data.summary()})")
    return stored
