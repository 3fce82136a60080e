"""Learning-rate schedules: the cosine over a run's length, its checks, and exact resume."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from tensorfuse import TrainConfig, train
from tensorfuse.train._schedule import CosineSchedule
from tensorfuse.train._trainer import Trainer

from .test_run_folder import assert_same_weights, metrics_without_time, tiny_config


def _rates(folder) -> list[float]:
    with open(folder / "metrics.csv") as f:
        return [float(row["lr"]) for row in csv.DictReader(f)]


def test_cosine_runs_from_the_initial_rate_to_its_final_fraction():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([{"params": [parameter], "lr": 0.02}])
    schedule = CosineSchedule(optimizer, final_factor=0.1)
    for progress, expected in ((0.0, 0.02), (0.5, 0.011), (1.0, 0.002), (1.7, 0.002), (-0.1, 0.02)):
        schedule.step(math.nan, progress)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)


def test_a_cosine_run_follows_its_epochs_and_resumes_exactly(tmp_path, monkeypatch):
    """Without a time budget the rate after epoch e of E is the cosine at e / E; a run interrupted
    after epoch 2 and resumed ends with the weights and metrics of one never interrupted."""
    options = {"max_epochs": 4, "scheduler": "cosine", "final_lr_factor": 0.05, "lr": 0.01}
    whole = train(tiny_config(tmp_path / "whole", **options))
    expected = [0.01 * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * e / 4))) for e in (1, 2, 3, 4)]
    assert _rates(whole.output) == pytest.approx(expected, rel=1e-6)  # metrics.csv rounds

    save = Trainer._save

    def save_then_stop(self, improved):
        save(self, improved)
        if self.state.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    config = tiny_config(tmp_path / "cut", **options)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.setattr(Trainer, "_save", save)
    train(config.with_overrides({"resume": True}))
    assert metrics_without_time(tmp_path / "cut") == metrics_without_time(whole.output)
    assert_same_weights(tmp_path / "cut" / "model.pt", whole.output / "model.pt")


def test_a_cosine_run_does_not_resume_as_a_plateau_one(tmp_path):
    config = tiny_config(tmp_path / "run", max_epochs=1, scheduler="cosine")
    train(config)
    with pytest.raises(ValueError, match=r"training.scheduler='plateau' \(the run has 'cosine'\)"):
        train(tiny_config(tmp_path / "run", max_epochs=1).with_overrides({"resume": True}))


@pytest.mark.parametrize("training, message", [
    ({"scheduler": "linear"}, r"training.scheduler=.linear.: expected one of \('plateau', 'cosine'\)"),
    ({"final_lr_factor": 1.5}, r"training.final_lr_factor=1.5: must be in \[0, 1\]"),
    ({"final_lr_factor": "small"}, r"training.final_lr_factor"),
])
def test_bad_schedule_settings_are_refused_in_one_line(training, message):
    with pytest.raises(ValueError, match=message) as error:
        TrainConfig(training=training)
    assert "\n" not in str(error.value)
