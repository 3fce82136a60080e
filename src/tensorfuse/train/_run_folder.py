"""The run folder: the one place that writes a training run's files, and reads them back to resume.

A run folder holds ``config.yaml`` (the run's configuration, written before anything else),
``checkpoint_last.pt`` (everything needed to continue exactly), ``model.pt`` (the best model) and
``metrics.csv`` (one row per epoch), and at the end ``results.csv``/``results.json`` (the best
model's errors on every split, in meV units, NaN written as empty/null). Every file is written atomically (temporary file, then
rename), the checkpoint before the metrics and the metrics are rewritten from the checkpoint's own
history, so a kill at any point leaves files that agree with the last checkpoint once resumed.
"""

from __future__ import annotations

import csv
import io
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch

from tensorfuse.model._serialization import atomic_save
from tensorfuse.train._config import RESUMABLE_CHANGES, TrainConfig
from tensorfuse.utils._files import atomic_write, unwritable_reason

CHECKPOINT_FORMAT = "tensorfuse-checkpoint"
CHECKPOINT_VERSION = 2
CONFIG_FILE, CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE = "config.yaml", "checkpoint_last.pt", "model.pt", "metrics.csv"
RESULTS_CSV, RESULTS_JSON = "results.csv", "results.json"  # the final error table, as MACE's results files
TEST_FILE = "test.xyz"  # the test frames held out of the training file (data.test_fraction)
RUN_FILES = (CONFIG_FILE, CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE, "checkpoint_best.pt", TEST_FILE)
PATH_SETTINGS = ("data.train_file", "data.valid_file", "data.test_file")


class RunFolder:
    """``RunFolder(path, writer=True)``: only the writer (rank 0 of a distributed run) writes."""

    def __init__(self, path, writer: bool = True):
        self.path = Path(path)
        self.writer = writer

    # -- starting and resuming ------------------------------------------------------------------
    def existing_run(self) -> list[str]:
        """Names of the run files already in the folder."""
        return [name for name in RUN_FILES if (self.path / name).exists()]

    def check_new(self, config: TrainConfig) -> None:
        """A new run may not mix with another run's files: refuse unless ``config.overwrite``; and
        the folder must be writable (found now, not after the first epoch)."""
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"output {self.path} exists and is not a folder")
        found = self.existing_run()
        if found and not config.overwrite:
            raise ValueError(f"{self.path} already holds a training run ({', '.join(found)}): continue it with "
                             "--resume, replace it with --overwrite, or choose another --output")
        if self.writer:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryFile(dir=self.path):
                    pass
            except OSError as error:
                raise ValueError(f"cannot write to the output folder {self.path}: "
                                 f"{unwritable_reason(self.path, error, folder=True)}") from None

    def start(self, config: TrainConfig) -> None:
        """Begin a new run once everything was checked: delete an overwritten run's files, then
        store the configuration."""
        if not self.writer:
            return
        self.remove_partial_writes()
        if config.overwrite:
            for name in self.existing_run():
                (self.path / name).unlink()
            shutil.rmtree(self.path / "tensorboard", ignore_errors=True)
        self.store_config(config)

    def remove_partial_writes(self) -> None:
        """Temporary files of writes a kill interrupted (the files they were to replace are intact)."""
        if self.writer and self.path.is_dir():
            for name in RUN_FILES:
                for partial in self.path.glob(f".{name}.*.tmp"):
                    partial.unlink(missing_ok=True)

    def store_config(self, config: TrainConfig) -> None:
        import yaml

        if not self.writer:
            return
        text = yaml.safe_dump(_stored_form(config), sort_keys=False)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path / CONFIG_FILE, lambda f: f.write(text), binary=False)
        except OSError as error:
            raise ValueError(f"cannot write to the output folder {self.path}: "
                             f"{unwritable_reason(self.path, error, folder=True)}") from None

    def stored_config(self) -> TrainConfig:
        """The configuration of the run in this folder (``config.yaml``, or the checkpoint's for runs
        of tensorfuse 0.1 that had no ``config.yaml``)."""
        path = self.path / CONFIG_FILE
        if path.exists():
            return TrainConfig.from_yaml(path)
        checkpoint = self.load_checkpoint()
        if checkpoint is None:
            raise ValueError(f"--resume: {self.path} holds no training run to resume (no {CONFIG_FILE} or "
                             f"{CHECKPOINT_FILE})")
        return TrainConfig.from_dict({k: v for k, v in checkpoint["train_config"].items() if k != "resume"})

    def check_resume(self, config: TrainConfig) -> TrainConfig:
        """Compare ``config`` with the stored one: every setting must match except those in
        ``RESUMABLE_CHANGES``. Returns the stored configuration."""
        stored = self.stored_config()
        given, kept = _comparable(config), _comparable(stored)
        differ = [k for k in sorted(set(given) | set(kept))
                  if k not in RESUMABLE_CHANGES and given.get(k) != kept.get(k)]
        if differ:
            changes = ", ".join(f"{k}={given.get(k)!r} (the run has {kept.get(k)!r})" for k in differ)
            raise ValueError(f"--resume continues the run in {self.path} with its own configuration; these "
                             f"settings differ from it: {changes}. Leave them out, or start a new run "
                             f"(another --output, or --overwrite)")
        return stored

    # -- checkpoints ------------------------------------------------------------------------------
    def load_checkpoint(self) -> dict | None:
        """The last checkpoint, checked for being one (``None`` when there is none yet)."""
        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # truncated, corrupt, pickled code, another format
            raise ValueError(f"{path} cannot be read as a tensorfuse checkpoint (truncated or not one: "
                             f"{type(error).__name__}); the run cannot resume from it") from None
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a tensorfuse training checkpoint")
        version = checkpoint.get("format_version")
        if not isinstance(version, int) or version > CHECKPOINT_VERSION:
            raise ValueError(f"{path} has checkpoint format version {version!r}; this tensorfuse reads up to "
                             f"{CHECKPOINT_VERSION}: upgrade tensorfuse")
        missing = [k for k in ("model", "optimizer", "scheduler", "ema", "generator", "torch_rng", "state",
                               "train_config") if k not in checkpoint]
        if missing:
            raise ValueError(f"{path} is an incomplete checkpoint (missing {missing})")
        return checkpoint

    def save_checkpoint(self, checkpoint: dict, best_model: dict | None, history: list[dict]) -> None:
        """Checkpoint, then the best model when it changed, then the metrics rewritten from
        ``history``: each write atomic, so the files never run ahead of the checkpoint."""
        if not self.writer:
            return
        atomic_save({"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **checkpoint},
                    self.path / CHECKPOINT_FILE)
        if best_model is not None:
            atomic_save(best_model, self.path / MODEL_FILE)
        self.write_metrics(history)

    def save_model(self, model_dict: dict) -> None:
        if self.writer:
            atomic_save(model_dict, self.path / MODEL_FILE)

    def write_results(self, metrics: dict[str, dict[str, float]], best_epoch: int | None) -> None:
        """The final error table: ``results.csv`` (one row per split) and ``results.json``."""
        if not self.writer or not metrics:
            return
        import json

        def plain(value):
            return value if not isinstance(value, float) or math.isfinite(value) else None

        rows = [{"split": split, "best_epoch": best_epoch, **{k: plain(v) for k, v in m.items()}}
                for split, m in metrics.items()]
        _write_csv(self.path / RESULTS_CSV, rows)
        text = json.dumps({"best_epoch": best_epoch, "units": "meV, meV/atom, meV/Å, meV/Å³",
                           "splits": {r.pop("split"): {k: v for k, v in r.items() if k != "best_epoch"} for r in rows}},
                          indent=1)
        atomic_write(self.path / RESULTS_JSON, lambda f: f.write(text + "\n"), binary=False)

    def write_metrics(self, history: list[dict]) -> None:
        """``metrics.csv``: one row per epoch of ``history`` (on resume: the checkpoint's)."""
        if not self.writer:
            return
        if not history:
            (self.path / METRICS_FILE).unlink(missing_ok=True)
            return
        _write_csv(self.path / METRICS_FILE, history)


def _write_csv(path: Path, rows: list[dict]) -> None:
    """``rows`` as CSV, atomically; the columns are every key in order of first appearance."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue()), binary=False)


def _stored_form(config: TrainConfig) -> dict:
    """The configuration as it is stored: plain YAML types, data paths made absolute (a resumed
    run may start from another working directory), without the start-up flags."""
    data = _plain(config.to_dict())
    for key in ("resume", "overwrite"):
        data.pop(key)
    for name in ("train_file", "valid_file", "test_file"):
        if data["data"][name] is not None:
            data["data"][name] = str(Path(data["data"][name]).resolve())
    return data


def _comparable(config: TrainConfig) -> dict[str, Any]:
    flat = _plain(config.settings())
    for key in ("resume", "overwrite", "output"):
        flat.pop(key, None)
    for key in PATH_SETTINGS:
        if flat.get(key) is not None:
            flat[key] = str(Path(flat[key]).resolve())
    return flat


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
