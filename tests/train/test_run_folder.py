"""The run folder: resume from the stored configuration, refusal to mix runs, metrics that agree
with the checkpoint, and kill -9 at random moments of a run without losing anything."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.io import read, write

from tensorfuse import TrainConfig, load_model, train
from tensorfuse._cli import main as cli
from tensorfuse.train import bundled_dataset
from tensorfuse.train._run_folder import RunFolder

TINY = {"channels": 4, "l_max": 1, "l_max_edge": 1, "mace": {"correlation": 2}, "num_bessel": 4,
        "radial_mlp": [8, 8], "readout_hidden": 4, "r_max": 4.0}
CLI_TINY = ["--model.channels", "4", "--model.l_max_edge", "1", "--model.radial_mlp", "[8]",
            "--model.readout_hidden", "4", "--model.num_bessel", "4", "--batch-size", "4",
            "--data.max_train_frames", "16", "--data.max_valid_frames", "4"]


def tiny_config(output, **training) -> TrainConfig:
    return TrainConfig(
        data={"max_train_frames": 16, "max_valid_frames": 4, "valid_fraction": 0.2},
        model=TINY,
        training={"max_epochs": 3, "batch_size": 4, "valid_batch_size": 8, "seed": 1, **training},
        output=str(output),
    )


def epochs(folder: Path) -> list[int]:
    with open(folder / "metrics.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def metrics_without_time(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as f:
        return [{k: v for k, v in row.items() if k != "time_s"} for row in csv.DictReader(f)]


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = (torch.load(p, weights_only=True)["state_dict"] for p in (a, b))
    assert list(x) == list(y)
    for key in x:
        assert torch.equal(x[key], y[key]), key


# -- resume as the README shows it ------------------------------------------------------------------
def test_resume_without_flags_restores_the_runs_own_settings(tmp_path, monkeypatch):
    """`tensorfuse train --output DIR --resume` continues the run in DIR: its data file, its basis
    (spherical here, not the default), and may train longer (--max-epochs)."""
    monkeypatch.chdir(tmp_path)
    write("train.xyz", read(bundled_dataset("train"), ":24"))
    assert cli(["train", "--train-file", "train.xyz", "--basis", "spherical", "--max-epochs", "2",
                "--output", "run", *CLI_TINY]) == 0
    first = torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)
    assert cli(["train", "--output", "run", "--resume", "--max-epochs", "4"]) == 0
    assert epochs(tmp_path / "run") == [1, 2, 3, 4]
    model = load_model(tmp_path / "run" / "model.pt")
    assert model.config.basis == "spherical" and model.config.species == (1, 6, 8)
    stored = TrainConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert stored.training.max_epochs == 4 and stored.data.train_file == str((tmp_path / "train.xyz").resolve())
    assert first["state"]["epoch"] == 2


def test_resume_from_another_working_directory(tmp_path, monkeypatch):
    """Relative data paths are stored resolved, so the run resumes wherever it is started from."""
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    write("train.xyz", read(bundled_dataset("train"), ":24"))
    assert cli(["train", "--train-file", "train.xyz", "--max-epochs", "1", "--output", "run", *CLI_TINY]) == 0
    monkeypatch.chdir(tmp_path)
    assert cli(["train", "--output", "a/run", "--resume", "--max-epochs", "2"]) == 0
    assert epochs(tmp_path / "a" / "run") == [1, 2]


def test_overwrite_replaces_a_run_and_never_mixes_two(tmp_path):
    train(tiny_config(tmp_path / "run", max_epochs=3))
    with pytest.raises(ValueError, match="already holds a training run"):
        train(tiny_config(tmp_path / "run", max_epochs=2))
    assert epochs(tmp_path / "run") == [1, 2, 3]
    train(tiny_config(tmp_path / "run", max_epochs=2).with_overrides({"overwrite": True}))
    assert epochs(tmp_path / "run") == [1, 2]
    assert torch.load(tmp_path / "run" / "checkpoint_last.pt", weights_only=True)["state"]["epoch"] == 2


def test_python_api_resume_compares_the_whole_configuration(tmp_path):
    config = tiny_config(tmp_path / "run", max_epochs=2)
    train(config)
    with pytest.raises(ValueError, match=r"training.lr=0.005 \(the run has 0.01\)"):
        train(tiny_config(tmp_path / "run", max_epochs=2, lr=0.005).with_overrides({"resume": True}))
    resumed = train(config.with_overrides({"resume": True, "training.max_epochs": 3}))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]


# -- the metrics agree with the checkpoint ---------------------------------------------------------
def test_metrics_are_rewritten_from_the_checkpoint_on_resume(tmp_path):
    """A kill between two writes may leave metrics.csv ahead of or behind the checkpoint (before:
    a duplicated epoch after resume); resume rewrites it from the checkpoint's own history."""
    reference = tmp_path / "reference"
    train(tiny_config(reference, max_epochs=3))
    for damage in ("ahead", "behind"):
        run = tmp_path / damage
        train(tiny_config(run, max_epochs=2))
        lines = (run / "metrics.csv").read_text().splitlines(keepends=True)
        if damage == "ahead":  # a row of an epoch whose checkpoint was never written
            (run / "metrics.csv").write_text("".join(lines + [lines[-1].replace("2,", "3,", 1)]))
        else:
            (run / "metrics.csv").write_text("".join(lines[:-1]))
        train(tiny_config(run, max_epochs=3).with_overrides({"resume": True}))
        assert epochs(run) == [1, 2, 3]
        assert metrics_without_time(run) == metrics_without_time(reference)


def test_a_finished_run_resumed_writes_the_same_final_model(tmp_path):
    """A kill during the final model write leaves a partial temporary file and the best model of
    training (before the energy-shift refit): resuming the finished run writes the final one."""
    run = tmp_path / "run"
    train(tiny_config(run, max_epochs=2))
    final = (run / "model.pt").read_bytes()
    (tmp_path / "final.pt").write_bytes(final)
    checkpoint = torch.load(run / "checkpoint_last.pt", weights_only=True)
    torch.save(checkpoint["state"]["best_model"], run / "model.pt")  # as before the final write
    (run / ".model.pt.x1y2.tmp").write_bytes(final[: len(final) // 2])
    train(tiny_config(run, max_epochs=2).with_overrides({"resume": True}))
    assert not list(run.glob(".*.tmp"))
    assert_same_weights(run / "model.pt", tmp_path / "final.pt")
    assert epochs(run) == [1, 2]
    reference = torch.load(run / "model.pt", weights_only=True)
    assert reference["config"]["statistics"]["energy_shift"] != checkpoint["state"]["best_model"]["config"][
        "statistics"]["energy_shift"]  # the refit happened again


# -- fault injection: kill -9 at random moments -----------------------------------------------------
SCRIPT = ("import sys, torch; torch.set_num_threads(1)\n"
          "from tensorfuse._cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


def _start(run: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", SCRIPT, "train", "--output", str(run), "--resume"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _rows(run: Path) -> int:
    try:
        return len(epochs(run))
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def test_kill_at_random_moments_and_resume_equals_an_uninterrupted_run(tmp_path):
    """SIGKILL a run again and again at random moments (several epochs, the final refit and model
    write included), resuming each time: the final model, the optimizer state and metrics.csv
    (but for wall-clock times) equal those of a run that was never interrupted."""
    config = tiny_config(tmp_path / "x", max_epochs=8)
    runs = {name: tmp_path / name for name in ("uninterrupted", "killed")}
    for name, run in runs.items():  # what `tensorfuse train` stores before anything else
        RunFolder(run).store_config(config.with_overrides({"output": str(run)}))

    process = _start(runs["uninterrupted"])
    assert process.wait(timeout=600) == 0, process.stderr.read().decode()[-2000:]
    epoch_time = float(np.mean([float(row["time_s"]) for row in csv.DictReader(
        open(runs["uninterrupted"] / "metrics.csv"))]))

    rng = np.random.default_rng(0)
    killed_after, final_kills = [], 0
    for attempt in range(60):
        done = len(epochs(runs["killed"])) if (runs["killed"] / "metrics.csv").exists() else 0
        target = min(done + int(rng.integers(1, 3)), 8)
        process = _start(runs["killed"])
        while process.poll() is None and _rows(runs["killed"]) < target:
            time.sleep(0.002)
        if target == 8:  # all epochs done: the energy-shift refit, final evaluation and model write
            final_kills += 1
            delay = rng.uniform(0, 1.0) if final_kills <= 3 else 600.0
        else:  # somewhere in the next epoch (its steps, validation or checkpoint write)
            delay = rng.uniform(0, 1.5 * epoch_time)
        try:
            code = process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed_after.append(_rows(runs["killed"]))
            continue
        assert code == 0, process.stderr.read().decode()[-2000:]
        break
    else:
        pytest.fail("the killed run never finished")
    assert len(killed_after) >= 4 and len(set(killed_after)) >= 3, killed_after

    a, b = (torch.load(run / "checkpoint_last.pt", weights_only=True) for run in runs.values())
    assert a["state"]["epoch"] == b["state"]["epoch"] == 8
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for p, q in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for key in p:
            assert torch.equal(torch.as_tensor(p[key]), torch.as_tensor(q[key])), key
    assert a["scheduler"] == b["scheduler"]
    assert_same_weights(runs["uninterrupted"] / "model.pt", runs["killed"] / "model.pt")
    assert metrics_without_time(runs["killed"]) == metrics_without_time(runs["uninterrupted"])
    assert epochs(runs["killed"]) == list(range(1, 9))
    assert not list(runs["killed"].glob(".*.tmp"))


def test_the_run_folders_files_follow_the_umask(tmp_path):
    """Model, configuration, metrics and checkpoint get ``0o666`` less the umask, as ``.h5`` and
    ``eval`` outputs always did (before, ``mkstemp`` made them ``-rw-------`` whatever the umask,
    and a group folder's members could not read a colleague's model)."""
    import stat

    previous = os.umask(0o002)
    try:
        train(tiny_config(tmp_path / "run", max_epochs=1))
    finally:
        os.umask(previous)
    written = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert set(written) >= {"model.pt", "config.yaml", "metrics.csv", "checkpoint_last.pt"}
    assert set(written.values()) == {0o664}, {k: oct(v) for k, v in written.items()}
