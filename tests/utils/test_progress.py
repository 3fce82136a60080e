"""Progress bars: on stderr only, off when stderr is not a terminal (or when told), and they change no result.

Every run below is done twice, with bars forced off and forced on (``TENSORFUSE_PROGRESS``), and
must print, write and return the same; only stderr may differ, and only when the bar is on.
"""

from __future__ import annotations

import re

import io
import sys

import numpy as np
import pytest
import torch
from ase.build import molecule

from tensorfuse import ModelConfig, Statistics, TrainConfig, build_model, save_model, train
from tensorfuse._cli import main as cli
from tensorfuse.calculator import Calculator
from tensorfuse.md import run_md
from tensorfuse.namd import run_namd
from tensorfuse.utils import progress_bar, progress_enabled

TINY = dict(channels=4, l_max=1, l_max_edge=1, mace={"correlation": 2}, num_bessel=4, radial_mlp=(8, 8),
            readout_hidden=4, r_max=4.0)
BAR_MARKS = ("\r", "it/s", "%|", "[00:")  # what any tqdm bar draws: redraws, a rate, the bar, the elapsed time


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _free_of_bars(text: str) -> bool:
    return not any(mark in text for mark in BAR_MARKS)


@pytest.fixture(autouse=True)
def _automatic(monkeypatch):
    """Each test starts from the automatic setting, whatever the environment running the suite says."""
    monkeypatch.delenv("TENSORFUSE_PROGRESS", raising=False)


def test_bars_follow_the_terminal_the_environment_and_the_caller(monkeypatch, capsys):
    assert not progress_enabled()  # captured stderr is no terminal
    monkeypatch.setattr(sys, "stderr", _Terminal())
    assert progress_enabled() and not progress_enabled(enabled=False)
    for off in ("0", "false", "off"):
        monkeypatch.setenv("TENSORFUSE_PROGRESS", off)
        assert not progress_enabled()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setenv("TENSORFUSE_PROGRESS", "1")
    assert progress_enabled() and not progress_enabled(enabled=False)  # progress=False, other ranks: never
    monkeypatch.setenv("TENSORFUSE_PROGRESS", "sometimes")
    with pytest.warns(UserWarning, match="TENSORFUSE_PROGRESS='sometimes'"):
        assert not progress_enabled()


def test_a_disabled_bar_writes_nothing_and_an_enabled_one_only_to_stderr(monkeypatch, capsys):
    with progress_bar("quiet", total=3) as bar:
        bar.update(3)
    assert capsys.readouterr() == ("", "")
    monkeypatch.setattr(sys, "stderr", _Terminal())
    with progress_bar("loud", iterable=range(3), unit="step") as bar:
        assert list(bar) == [0, 1, 2]
    shown = sys.stderr.getvalue()
    assert "loud" in shown and "\r" in shown
    assert capsys.readouterr().out == ""


@pytest.fixture(scope="module")
def gentle_model():
    """Small forces (energy scale 0.01 eV), so that a short MD run stays calm."""
    config = ModelConfig(species=(1, 6, 8), statistics=Statistics(energy_scale=0.01), **TINY)
    return build_model(config, dtype=torch.float64, seed=0)


def test_md_with_and_without_a_bar_writes_the_same_files(tmp_path, gentle_model, monkeypatch, capsys):
    runs = {}
    for setting in ("0", "1"):
        monkeypatch.setenv("TENSORFUSE_PROGRESS", setting)
        result = run_md(Calculator(gentle_model), molecule("CH4"), "nvt", steps=6, interval=2,
                        output=tmp_path / f"md{setting}.xyz")
        out, err = capsys.readouterr()
        runs[setting] = result.trajectory.read_bytes(), result.log.read_bytes(), out, err
    assert runs["0"][:3] == runs["1"][:3]
    assert runs["0"][3] == "" and "MD nvt" in runs["1"][3] and "\r" in runs["1"][3]


def test_training_with_and_without_a_bar_learns_the_same(tmp_path, monkeypatch, capsys):
    def config(output):
        return TrainConfig(data={"max_train_frames": 8, "max_valid_frames": 4, "valid_fraction": 0.1}, model=TINY,
                           training={"max_epochs": 1, "batch_size": 4, "valid_batch_size": 4, "seed": 1},
                           output=str(output))

    runs = {}
    for setting in ("0", "1"):
        monkeypatch.setenv("TENSORFUSE_PROGRESS", setting)
        result = train(config(tmp_path / f"run{setting}"))
        out, err = capsys.readouterr()
        history = [{k: v for k, v in row.items() if k != "time_s"} for row in result.history]
        runs[setting] = history, result.metrics, result.model.state_dict(), out, err
    (history0, metrics0, weights0, out0, err0), (history1, metrics1, weights1, out1, err1) = runs["0"], runs["1"]
    np.testing.assert_equal((history0, metrics0), (history1, metrics1))  # exactly, NaN (no stress) included
    assert all(torch.equal(weights0[k], weights1[k]) for k in weights0)

    def timeless(text):  # the epoch line's seconds and the run folder differ
        return [re.sub(r"  [0-9.]+ s(  |$)", r"\1", line) if line.startswith("epoch") else line.replace("run1", "run0")
                for line in text.splitlines()]

    assert timeless(out0) == timeless(out1) and _free_of_bars(out1)
    assert err0 == ""
    assert "epoch 1" in err1 and "epoch 1 valid" in err1 and "testing on train" in err1 and "batch" in err1


def test_commands_off_a_terminal_print_no_bar(tmp_path, gentle_model, monkeypatch, capsys):
    """What `tensorfuse eval/md/namd` print to a file or a pipe (here: captured) is as before the bars."""
    from ase.io import write

    from tensorfuse.train import bundled_dataset

    save_model(gentle_model, tmp_path / "model.pt")
    write(tmp_path / "start.xyz", molecule("CH3CH2OH"))
    assert cli(["eval", str(tmp_path / "model.pt"), str(bundled_dataset("test")), "--output",
                str(tmp_path / "eval")]) == 0
    assert cli(["md", str(tmp_path / "model.pt"), str(tmp_path / "start.xyz"), "--steps", "4", "--interval", "2",
                "--output", str(tmp_path / "md.xyz")]) == 0
    out, err = capsys.readouterr()
    assert "E MAE" in out and "done: 4 steps" in out
    assert _free_of_bars(out) and _free_of_bars(err), err


def test_namd_with_and_without_a_bar_gives_the_same_ensemble(tmp_path, monkeypatch, capsys):
    config = ModelConfig(species=(1, 6, 8), states=("S0", "S1"), couplings="vector",
                         statistics=Statistics(energy_scale=0.01), **TINY)
    model = build_model(config, dtype=torch.float64, seed=0)
    atoms = molecule("CH3CH2OH")
    rng = np.random.default_rng(0)
    atoms.set_velocities(0.1 * rng.normal(size=atoms.positions.shape) / np.sqrt(atoms.get_masses())[:, None])
    runs = {}
    for setting in ("0", "1"):
        monkeypatch.setenv("TENSORFUSE_PROGRESS", setting)
        result = run_namd(model, [atoms], initial_state="S1", trajectories=3, steps=12, sampling="file",
                          output=tmp_path / f"namd{setting}")
        out, err = capsys.readouterr()
        runs[setting] = (result.fractions, (tmp_path / f"namd{setting}" / "hops.csv").read_text(), out), err
    assert np.array_equal(runs["0"][0][0], runs["1"][0][0]) and runs["0"][0][1:] == runs["1"][0][1:]
    assert runs["0"][1] == "" and "NAMD fssh" in runs["1"][1] and "\r" in runs["1"][1]


def test_only_rank_0_of_a_distributed_run_draws_a_bar(gentle_model, monkeypatch, capsys):
    from tensorfuse.data._dataset import GraphDataset
    from tensorfuse.train import DataConfig, OptimConfig, bundled_dataset
    from tensorfuse.train._data import read_labelled
    from tensorfuse.train._distributed import Distributed
    from tensorfuse.train._epoch import evaluate_dataset
    from tensorfuse.train._objective import objective_for

    frames, _ = read_labelled(bundled_dataset("test"), DataConfig())
    dataset = GraphDataset(frames[:4], gentle_model.r_max, torch.float64)
    objective = objective_for(gentle_model.config, OptimConfig())
    monkeypatch.setenv("TENSORFUSE_PROGRESS", "1")
    shown = {}
    for rank in (0, 1):  # one process playing each rank: the bar depends on the rank alone
        evaluate_dataset(gentle_model, dataset, 2, objective, False, Distributed(rank=rank), f"rank {rank}")
        shown[rank] = capsys.readouterr().err
    assert "rank 0" in shown[0] and shown[1] == ""
