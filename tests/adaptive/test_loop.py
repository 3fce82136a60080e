"""The adaptive-sampling loop with an analytic labeller (a reference model): it adds frames where the
committee disagrees, the disagreement there falls, and a killed loop resumes to the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read, write

from tensorfuse import ModelConfig, Statistics, build_model, save_model
from tensorfuse.adaptive import AdaptiveConfig, ModelLabeller, run_adaptive

SMALL = dict(channels=4, l_max=1, l_max_edge=1, num_layers=1, r_max=4.0, num_bessel=4, radial_mlp=(8,),
             readout_hidden=4)


def ethylene(rng, scale=0.05) -> Atoms:
    positions = np.array([[0, 0, 0.67], [0, 0, -0.67], [0, 0.92, 1.24], [0, -0.92, 1.24], [0, 0.92, -1.24],
                          [0, -0.92, -1.24]]) + rng.normal(scale=scale, size=(6, 3))
    return Atoms("C2H4", positions=positions)


def workspace(folder: Path) -> dict:
    """A reference surface (a random two-state model), 16 labelled frames, 4 starts with velocities."""
    reference = build_model(ModelConfig(species=(1, 6), states=("S0", "S1"), couplings="diabatic", **SMALL,
                                        statistics=Statistics(energy_scale=0.3, energy_shift={1: [0.0, 0.5],
                                                                                               6: [0.0, 0.5]})),
                            dtype=torch.float64, seed=11)
    save_model(reference, folder / "reference.pt")
    rng = np.random.default_rng(0)
    data = ModelLabeller(folder / "reference.pt")([ethylene(rng) for _ in range(16)])
    write(folder / "data.xyz", data)
    starts = []
    for _ in range(4):
        atoms = ethylene(rng, 0.02)
        atoms.set_velocities(rng.normal(scale=0.02, size=(6, 3)))
        starts.append(atoms)
    write(folder / "starts.xyz", starts)
    return dict(
        data=str(folder / "data.xyz"), states=["S0", "S1"], model={"species": [1, 6], "couplings": "diabatic", **SMALL},
        training={"max_epochs": 20, "batch_size": 4, "energy_weight": 20}, committee=2,
        dynamics={"start": str(folder / "starts.xyz"), "sampling": "file", "trajectories": 4, "steps": 16,
                  "interval": 2},
        selection={"frames": 4, "energy_spread": 0.005, "gap_spread": None, "forces_spread": None,
                   "separation_fs": 2.0},
        labeller={"kind": "model", "model": str(folder / "reference.pt")},
        stop={"max_iterations": 2, "times_fs": [4.0, 8.0]}, output=str(folder / "loop"))


def test_the_loop_labels_where_the_committee_disagrees_and_the_disagreement_there_falls(tmp_path):
    from tensorfuse import load_model
    from tensorfuse.model import Committee

    config = AdaptiveConfig.from_dict(workspace(tmp_path))
    result = run_adaptive(config)
    assert len(result.rows) == 2 and not result.converged
    first = tmp_path / "loop" / "iteration_0"
    selected = read(first / "selected.xyz", ":")
    assert len(selected) == 4 and int(result.rows[0]["labelled"]) == 4
    assert all(a.info["energy_spread"] > 0.005 for a in selected)
    assert len({(a.info["trajectory"], a.info["time_fs"]) for a in selected}) == 4
    # the labels are the reference's and went into the next iteration's data
    reference = ModelLabeller(tmp_path / "reference.pt")
    for labelled in (read(p) for p in sorted((first / "labels").glob("*.xyz"))):
        again = reference([labelled])[0]
        assert labelled.info["energy_S1"] == pytest.approx(again.info["energy_S1"], abs=1e-6)  # positions as written
    assert int(result.rows[1]["train_frames"]) == 16 + 4
    assert len(read(result.data, ":")) == 16 + 4  # the last iteration labels nothing (nothing comes after)

    def spread(iteration):
        members = [load_model(tmp_path / "loop" / f"iteration_{iteration}" / f"member_{k}" / "model.pt",
                              dtype=torch.float64) for k in range(2)]
        from tensorfuse.data import AtomicGraph, batch_graphs

        graph = batch_graphs([AtomicGraph.from_atoms(a, 4.0, dtype=torch.float64) for a in selected])
        return Committee(members)(graph)["spreads"][:, 0].detach()

    assert float(spread(1).mean()) < float(spread(0).mean())

    # the same ensemble, read back: the same choice; with every atom's nearest neighbour required
    # within 0.5 Å (none is: C-H 1.1 Å), nothing is chosen
    from tensorfuse.adaptive import select_frames
    from tensorfuse.namd import resume_namd

    ensemble = resume_namd(first / "namd")
    again = select_frames(ensemble, config)
    assert [a.info["time_fs"] for a in again] == [a.info["time_fs"] for a in selected]
    tight = AdaptiveConfig.from_dict({**config.to_dict(), "selection": {**config.to_dict()["selection"],
                                                                      "max_neighbor_distance": 0.5}})
    assert select_frames(ensemble, tight) == []


@pytest.mark.parametrize("kill_at", [0.45, pytest.param(0.8, marks=pytest.mark.slow)])
def test_a_killed_loop_resumes_to_the_result_of_an_uninterrupted_one(tmp_path, kill_at):
    """Killed (SIGKILL) at a fraction of the uninterrupted run's time (plus the start-up of a process):
    in training, the ensemble or labelling; started again, it ends with the same rows and data."""
    settings = workspace(tmp_path)
    start = time.perf_counter()
    whole = run_adaptive(AdaptiveConfig.from_dict({**settings, "output": str(tmp_path / "whole")}))
    kill_after = 3.0 + kill_at * (time.perf_counter() - start)
    script = ("import sys, json; from tensorfuse.adaptive import AdaptiveConfig, run_adaptive; "
              "run_adaptive(AdaptiveConfig.from_dict(json.loads(sys.argv[1])))")
    import json

    killed = {**settings, "output": str(tmp_path / "killed")}
    process = subprocess.Popen([sys.executable, "-c", script, json.dumps(killed)],
                               env={**os.environ, "TENSORFUSE_PROGRESS": "0"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    process.send_signal(signal.SIGKILL)
    process.wait()
    summary = tmp_path / "killed" / "summary.csv"
    assert not summary.exists() or len(summary.read_text().splitlines()) < 3, "killed after the end: nothing tested"
    resumed = run_adaptive(AdaptiveConfig.from_dict(killed))
    assert resumed.rows == whole.rows
    assert read(resumed.data, ":")[-1].info["energy_S1"] == read(whole.data, ":")[-1].info["energy_S1"]
    assert (tmp_path / "killed" / "summary.csv").read_text() == (tmp_path / "whole" / "summary.csv").read_text()
