"""`run_namd` / `tensorfuse namd`: the files a run writes, reproducibility, explosions, the analysis."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule
from ase.io import read

from tensorfuse import ModelConfig, Statistics, build_model, save_model
from tensorfuse._cli import main as cli
from tensorfuse.namd import Criterion, fit_lifetime, resume_namd, run_namd

CONFIG = dict(species=(1, 6, 8), r_max=4.0, channels=4, l_max=1, l_max_edge=2, mace={"correlation": 2}, num_bessel=4,
              radial_mlp=(8, 8), readout_hidden=4, statistics=Statistics(energy_scale=0.1))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "states.pt"
    save_model(build_model(ModelConfig(states=("S0", "S1", "S2"), couplings="diabatic", **CONFIG), dtype=torch.float64,
                           seed=0), path)
    return path


def frames_with_velocities(count=3):
    frames = []
    for k in range(count):
        atoms = molecule("CH3CH2OH")
        rng = np.random.default_rng(k)
        atoms.positions += 0.02 * rng.normal(size=atoms.positions.shape)
        atoms.set_velocities(0.15 * rng.normal(size=atoms.positions.shape) / np.sqrt(atoms.get_masses())[:, None])
        frames.append(atoms)
    return frames


def run(model_file, output, seed=0, **options):
    settings = dict(initial_state="S2", method="fssh", trajectories=6, steps=60, sampling="file", seed=seed,
                    output=output, products=("long: distance 0 1 > 1.55", "bent: angle 0 1 2 < 100"), progress=False)
    return run_namd(model_file, frames_with_velocities(), **{**settings, **options})


def test_a_run_writes_what_photochemists_read(tmp_path, model_file):
    result = run(model_file, tmp_path / "run")
    out = tmp_path / "run"
    with open(out / "populations.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 31  # steps 0, 2, ..., 60
    fractions = np.array([[float(r[f"fraction_{s}"]) for s in ("S0", "S1", "S2")] for r in rows])
    populations = np.array([[float(r[f"population_{s}"]) for s in ("S0", "S1", "S2")] for r in rows])
    assert np.allclose(fractions.sum(1), 1) and np.allclose(populations.sum(1), 1, atol=1e-5)
    assert fractions[0].tolist() == [0, 0, 1]
    with open(out / "hops.csv") as f:
        hops = list(csv.DictReader(f))
    assert hops and len([h for h in hops if h["finished"] == "1"]) == result.hops_accepted + result.hops_frustrated
    for hop in hops:  # the geometry at the hop, measured by each criterion
        assert float(hop["long_distance"]) > 0 and 0 < float(hop["bent_angle"]) < 180
        if hop["accepted"] == "1":
            assert float(hop["total_energy_after_eV"]) == pytest.approx(float(hop["total_energy_before_eV"]), abs=1e-7)
    trajectory = read(out / "trajectories" / "0003.xyz", ":")
    assert len(trajectory) == 31 and trajectory[0].info["state"] == "S2"
    assert {"energy_S0", "energy_S1", "energy_S2", "population_S2", "time_fs"} <= set(trajectory[-1].info)
    assert trajectory[-1].arrays["velocities"].shape == (9, 3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trajectories"] == 6 and set(summary["yields"]) == {"long", "bent"}
    assert (out / "populations.png").stat().st_size > 1000
    # the initial conditions written are the ones run: read back, they give the same run
    again = run_namd(model_file, read(out / "initial_conditions.xyz", ":"), initial_state=2, trajectories=6, steps=60,
                     sampling="file", output=tmp_path / "again", progress=False)
    assert np.allclose(again.ensemble.positions[0], result.ensemble.positions[0], atol=1e-7)


def test_a_run_is_reproducible_from_its_seed(tmp_path, model_file):
    a = run(model_file, tmp_path / "a", seed=5, method="lz")
    b = run(model_file, tmp_path / "b", seed=5, method="lz")
    c = run(model_file, tmp_path / "c", seed=6, method="lz")
    assert (tmp_path / "a" / "hops.csv").read_text() == (tmp_path / "b" / "hops.csv").read_text()
    assert torch.equal(a.ensemble.active, b.ensemble.active) and torch.equal(a.ensemble.positions, b.ensemble.positions)
    assert not torch.equal(a.ensemble.active, c.ensemble.active) or a.hops_accepted == 0


def test_an_exploding_trajectory_stops_and_keeps_its_frames_while_the_others_go_on(tmp_path, model_file):
    frames = frames_with_velocities(2)
    frames[1].positions[1] = frames[1].positions[0] + [0.45, 0, 0]  # two atoms 0.45 Å apart: collapsed
    result = run_namd(model_file, frames, initial_state=1, method="lz", trajectories=4, steps=20, sampling="file",
                      output=tmp_path / "x", progress=False)
    assert [row["trajectory"] for row in result.stopped] == [1, 3]  # the trajectories started from frame 1
    assert {row["reason"] for row in result.stopped} == {"atoms closer than 0.5 Å"}
    assert all(row["time_fs"] == 0.5 and row["state"] == "S1" for row in result.stopped)
    stopped = read(tmp_path / "x" / "trajectories" / "0001.xyz", ":")
    finished = read(tmp_path / "x" / "trajectories" / "0000.xyz", ":")
    assert 1 <= len(stopped) < len(finished) == 11
    # counted the same way everywhere: every statistic over the two that ran to the end
    assert result.finished == 2
    table = np.genfromtxt(tmp_path / "x" / "populations.csv", delimiter=",", names=True)
    assert table["stopped"][0] == 0 and table["stopped"][-1] == 2
    on_states = np.stack([table[f"fraction_{s}"] for s in ("S0", "S1", "S2")], 1)
    assert np.allclose(on_states * 2, np.round(on_states * 2))  # fractions of 2 trajectories
    summary = json.loads((tmp_path / "x" / "summary.json").read_text())
    assert summary["finished"] == 2 and [r["trajectory"] for r in summary["stopped"]] == [1, 3]
    energy = result.ensemble.total_energy[:, [0, 2]]
    assert summary["max_energy_change_ev"] == pytest.approx(float((energy - energy[0]).abs().max()) * 27.211386245988)


def test_the_command_line_runs_and_prints_the_summary(tmp_path, model_file, capsys):
    from ase.io import write

    write(tmp_path / "start.xyz", frames_with_velocities())
    code = cli(["namd", str(model_file), str(tmp_path / "start.xyz"), "--sampling", "file", "--trajectories", "3",
                "--steps", "10", "--initial-state", "2", "--method", "fssh-ba", "--output", str(tmp_path / "cli"),
                "--product", "long: distance 0 1 > 1.55"])
    out = capsys.readouterr().out
    assert code == 0 and "steps/s for 3 trajectories" in out and "yield of long:" in out
    assert (tmp_path / "cli" / "summary.json").exists()


def test_criteria_measure_distances_angles_and_unsigned_dihedrals():
    positions = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [1.5, -1.0, 0.0]])
    trans = Criterion.parse("trans: dihedral 0 1 2 3 > 90")
    assert trans.measure(positions) == pytest.approx(180.0) and trans.holds(positions)
    cis = positions.copy()
    cis[3] = [1.5, 0.0, 1.0]  # a 90° twist, either sign
    assert trans.measure(cis) == pytest.approx(90.0)
    cis[3] = [1.5, 0.0, -1.0]
    assert trans.measure(cis) == pytest.approx(90.0)
    assert Criterion.parse("a: angle 0 1 2 < 100").measure(positions) == pytest.approx(90.0)
    assert Criterion.parse("d: distance 1 2 > 1").measure(positions) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="an atom appears twice"):
        Criterion.parse("d: distance 1 1 > 1")


def test_the_lifetime_fit_recovers_a_delayed_exponential():
    t = np.linspace(0, 300, 151)
    fraction = np.exp(-np.clip(t - 20.0, 0, None) / 80.0)
    fit = fit_lifetime(t, fraction)
    assert fit.tau == pytest.approx(80.0, rel=1e-3) and fit.delay == pytest.approx(20.0, abs=0.5)
    assert fit_lifetime(t, np.ones_like(t)) is None  # no decay, no lifetime


def _outputs(folder):
    """Every output file but the wall-clock figures (the summary's speed)."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
             if p.is_file() and p.name not in ("summary.json", "populations.png", "checkpoint.pt")}
    summary = json.loads((folder / "summary.json").read_text())
    summary.pop("steps_per_second")
    return files, summary


def _run_killed_at_call(model_file, output, death, **options):
    """``run`` interrupted inside the model call number ``death`` (the initial call, then steps
    1..death-2 done, dying inside the next)."""
    import tensorfuse.namd._model_surface as surface_module

    calls = {"n": 0}
    original = surface_module.ModelSurface.__call__

    def dying(self, x):
        calls["n"] += 1
        if calls["n"] == death:
            raise KeyboardInterrupt
        return original(self, x)

    surface_module.ModelSurface.__call__ = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            run(model_file, output, **options)
    finally:
        surface_module.ModelSurface.__call__ = original


@pytest.mark.parametrize("method, death, checkpointed", [("fssh", 38, 30), ("lz", 38, 30), ("fssh", 4, 0)])
def test_a_stopped_run_resumes_to_exactly_the_uninterrupted_run(tmp_path, model_file, method, death, checkpointed):
    """Stopped (an exception in the middle of step 37, after the checkpoint at step 30; or in step 3,
    before the first periodic checkpoint), then resumed from the folder alone: every file equals an
    uninterrupted run's."""
    options = dict(method=method, checkpoint_every=10, seed=3)
    run(model_file, tmp_path / "whole", **options)

    _run_killed_at_call(model_file, tmp_path / "killed", death, **options)
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["step"] == checkpointed
    assert not (tmp_path / "killed" / "populations.csv").exists()
    resumed = resume_namd(tmp_path / "killed", progress=False)
    assert resumed.steps == 60
    assert _outputs(tmp_path / "killed") == _outputs(tmp_path / "whole")


def test_resume_from_the_command_line_extends_a_finished_run(tmp_path, model_file, capsys):
    from ase.io import write

    write(tmp_path / "start.xyz", frames_with_velocities())
    base = ["namd", str(model_file), str(tmp_path / "start.xyz"), "--sampling", "file", "--trajectories", "3",
            "--initial-state", "2", "--method", "lz", "--output", str(tmp_path / "run")]
    assert cli(base + ["--steps", "10"]) == 0
    assert cli(["namd", "--output", str(tmp_path / "run"), "--resume", "--steps", "20"]) == 0
    with open(tmp_path / "run" / "populations.csv") as f:
        times = [float(row["time_fs"]) for row in csv.DictReader(f)]
    assert times[-1] == pytest.approx(10.0) and len(times) == 11  # 0, 1, ..., 10 fs
    capsys.readouterr()
    assert cli(["namd", "--output", str(tmp_path / "run"), "--resume", "--steps", "5"]) == 2
    assert "extended, not shortened" in capsys.readouterr().err
    assert cli(["namd", "--output", str(tmp_path / "nothing"), "--resume"]) == 2
    assert "no run was started" in capsys.readouterr().err


def test_a_frame_of_a_namd_trajectory_starts_a_run_with_its_velocities(tmp_path, model_file):
    """Trajectory frames carry a ``velocities`` array in Å/fs: a run from them starts there."""
    first = run(model_file, tmp_path / "first", steps=10)
    frame = read(tmp_path / "first" / "trajectories" / "0002.xyz", index=-1)
    again = run_namd(model_file, [frame], initial_state=2, trajectories=1, steps=2, sampling="file",
                     output=tmp_path / "again", progress=False)
    # written with 8 decimals in Å/fs: 5e-9 Å/fs is 2.3e-10 atomic units
    assert np.allclose(again.ensemble.velocities[0, 0], first.ensemble.velocities[-1, 2], rtol=0, atol=3e-10)


@pytest.fixture(scope="module")
def committee_files(tmp_path_factory, model_file):
    """The module's model and a second one of other weights: a committee that disagrees."""
    path = tmp_path_factory.mktemp("model") / "other.pt"
    save_model(build_model(ModelConfig(states=("S0", "S1", "S2"), couplings="diabatic", **CONFIG), dtype=torch.float64,
                           seed=1), path)
    return [model_file, path]


def test_a_committee_records_its_spread_and_writes_the_uncertain_frames(tmp_path, committee_files):
    from tensorfuse.model import UncertaintyLimits

    result = run(committee_files, tmp_path / "c", method="lz", uncertainty=UncertaintyLimits(0.01, None, None))
    frames = read(tmp_path / "c" / "trajectories" / "0000.xyz", ":")
    spreads = np.array([f.info["energy_spread"] for f in frames])
    assert spreads.max() > 0.01 and all("gap_spread" in f.info and "forces_spread" in f.info for f in frames)
    uncertain = read(tmp_path / "c" / "uncertain.xyz", ":")
    assert len(uncertain) == result.uncertain["frames"] > 0
    assert all(f.info["energy_spread"] > 0.01 for f in uncertain)
    assert result.uncertain["trajectories"] >= 1  # flagged, not stopped for it
    assert "committee spread beyond the limits" not in {row["reason"] for row in result.stopped}
    # and with stop: the uncertain trajectories end there, reported and left out of the statistics
    stopped = run(committee_files, tmp_path / "s", method="lz", uncertainty=UncertaintyLimits(0.01, None, None, True))
    assert stopped.finished == 6 - len(stopped.stopped) and stopped.stopped
    assert "committee spread beyond the limits" in {row["reason"] for row in stopped.stopped}
    assert all(row["time_fs"] == 0.5 for row in stopped.stopped if row["reason"].startswith("committee"))


def test_stopping_on_uncertainty_needs_a_committee(tmp_path, model_file):
    from tensorfuse.model import UncertaintyLimits

    with pytest.raises(ValueError, match="needs a committee"):
        run(model_file, tmp_path / "x", uncertainty=UncertaintyLimits(stop=True))


def test_the_engine_stops_on_the_command_lines_energy_tolerance_by_default():
    from tensorfuse.namd import HARTREE, SurfaceHopping

    assert SurfaceHopping(lambda x: None, [1.0]).energy_tolerance == pytest.approx(1.0 / HARTREE)


def test_the_checks_script_reads_a_run_and_finds_no_misordered_states(tmp_path, model_file):
    """benchmarks/namd_checks.py on a run of an ordered (diabatic) model: every frame in order, no hop
    at a negative gap, the hop geometries read back."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "namd_checks.py"
    spec = importlib.util.spec_from_file_location("namd_checks", script)
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    result = run(model_file, tmp_path / "run")
    report = checks.check(tmp_path / "run")
    assert result.ensemble.hops and report["frames"] > 0 and report["misordered_frames"] == 0
    assert report["hops_down_at_negative_gap"] == 0
    assert report["hops_down"] == sum(1 for h in result.ensemble.hops if h.accepted and h.source > h.target)
    assert len(read(tmp_path / "run" / "hops.xyz", ":")) == len(result.ensemble.hops)


def test_run_ensemble_on_a_surface_is_run_namd_and_resumes_with_the_surface(tmp_path, model_file):
    """Any surface drives the same ensemble: a model's surface given directly gives run_namd's files,
    and a run stopped half-way goes on with resume_namd(surface=...) to the same end."""
    from tensorfuse import load_model
    from tensorfuse.namd import ModelSurface, run_ensemble

    frames = frames_with_velocities()
    options = dict(initial_state="S2", method="fssh", trajectories=6, steps=30, seed=3, progress=False)
    reference = run_namd(model_file, frames, sampling="file", output=tmp_path / "model", **options)
    surface = ModelSurface(load_model(model_file), frames[0].numbers)
    names = ("S0", "S1", "S2")
    direct = run_ensemble(surface, names, frames, output=tmp_path / "surface", **options)
    assert (tmp_path / "model" / "hops.csv").read_text() == (tmp_path / "surface" / "hops.csv").read_text()
    assert torch.allclose(reference.ensemble.positions, direct.ensemble.positions, rtol=0, atol=1e-10)
    half = run_ensemble(surface, names, frames, output=tmp_path / "half", checkpoint_every=5,
                        **{**options, "steps": 15})
    assert half.steps == 15
    resumed = resume_namd(tmp_path / "half", steps=30, surface=surface, names=names, progress=False)
    assert torch.equal(resumed.ensemble.positions, direct.ensemble.positions)
    assert (tmp_path / "half" / "hops.csv").read_text() == (tmp_path / "surface" / "hops.csv").read_text()


@pytest.mark.slow
def test_the_casscf_surface_gives_the_labels_in_atomic_units_with_rigid_free_couplings():
    pytest.importorskip("pyscf")
    from tensorfuse.datasets import path
    from tensorfuse.namd import BOHR, HARTREE
    from tensorfuse.qm import CasscfSettings, CasscfSurface, label_sa_casscf

    atoms = read(path("ethylene_casscf"), index=0)
    surface = CasscfSurface(atoms.numbers, CasscfSettings(nstates=2))
    x = torch.tensor(atoms.positions.reshape(1, -1) / BOHR)
    point = surface(x)
    labels = label_sa_casscf(atoms, CasscfSettings(nstates=2))
    assert np.allclose(point.energies[0].numpy() * HARTREE, labels.energies, atol=1e-6)
    assert np.allclose(point.forces[0].numpy().reshape(2, -1, 3) * HARTREE / BOHR, labels.forces, atol=1e-4)
    d = point.couplings[0, 0, 1].reshape(-1, 3)
    assert float(d.sum(0).abs().max()) < 1e-10  # no rigid translation (nor rotation, by construction)
    assert surface.sign_memory["orbitals"].shape[0] == 1  # the orbitals carried to the next step
    active = torch.tensor([1])  # dynamics: the active state's gradient only, the other's after a hop
    point = surface(x, active)
    assert np.allclose(point.forces[0, 1].numpy().reshape(-1, 3) * HARTREE / BOHR, labels.forces[1], atol=1e-4)
    assert float(point.forces[0, 0].abs().max()) == 0.0
    other = surface.active_forces(x, torch.tensor([0]), [0])
    assert np.allclose(other[0].numpy().reshape(-1, 3) * HARTREE / BOHR, labels.forces[0], atol=1e-4)


def test_two_shares_of_an_ensemble_merge_into_the_files_of_one_process(tmp_path, model_file):
    """Two ranks, each half of the trajectories (run one after the other here), merged by rank 0:
    the files equal those of one process with the same seed and a half's chunk per model call."""
    options = dict(initial_state="S2", method="fssh", trajectories=6, steps=60, sampling="file", seed=0,
                   products=("long: distance 0 1 > 1.55",), progress=False)
    frames = frames_with_velocities()
    whole = run_namd(model_file, frames, output=tmp_path / "one", chunk=3, **options)
    run_namd(model_file, frames, output=tmp_path / "two", share=(1, 2), **options)
    merged = run_namd(model_file, frames, output=tmp_path / "two", share=(0, 2), **options)
    assert whole.ensemble.hops, "no hop: the test would not test the random numbers"
    for name in ("hops.csv", "populations.csv", "initial_conditions.xyz"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    for k in range(6):
        name = f"trajectories/{k:04d}.xyz"
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name
    assert torch.equal(whole.ensemble.positions, merged.ensemble.positions)
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    for summary in (one, two):
        summary.pop("steps_per_second")
    assert one == two


def test_the_command_line_splits_an_ensemble_over_launcher_ranks(tmp_path, model_file, monkeypatch):
    """`torchrun`/`mpirun` style: two processes (RANK/WORLD_SIZE), each a block; rank 0 merges."""
    import os
    import subprocess
    import sys

    from ase.io import write

    write(tmp_path / "start.xyz", frames_with_velocities())
    args = ["namd", str(model_file), str(tmp_path / "start.xyz"), "--sampling", "file", "--trajectories", "4",
            "--steps", "20", "--initial-state", "2", "--seed", "2"]
    assert cli(args + ["--output", str(tmp_path / "one"), "--chunk", "2"]) == 0
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "TENSORFUSE_PROGRESS": "0"}
    other = subprocess.Popen([sys.executable, "-m", "tensorfuse", *args, "--output", str(tmp_path / "two")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli(args + ["--output", str(tmp_path / "two")]) == 0
    out, _ = other.communicate(timeout=300)
    assert other.returncode == 0, out
    assert "process 1: share done" in out
    for name in ("hops.csv", "populations.csv", "trajectories/0003.xyz"):
        assert (tmp_path / "one" / name).read_text() == (tmp_path / "two" / name).read_text(), name


def test_load_ensemble_reads_a_finished_run_and_a_killed_one_as_far_as_it_got(tmp_path, model_file):
    from tensorfuse.namd import load_ensemble

    options = dict(method="fssh", checkpoint_every=10, seed=3)
    whole = run(model_file, tmp_path / "whole", **options)
    ensemble, settings = load_ensemble(tmp_path / "whole")
    assert settings.steps == 60
    assert torch.equal(ensemble.positions, whole.ensemble.positions)
    assert torch.equal(ensemble.active, whole.ensemble.active)
    assert [(h.trajectory, h.step) for h in ensemble.hops] == [(h.trajectory, h.step) for h in whole.ensemble.hops]

    _run_killed_at_call(model_file, tmp_path / "killed", 38, **options)  # after the checkpoint at step 30
    partial, _ = load_ensemble(tmp_path / "killed")
    rows = partial.positions.shape[0]
    assert 1 < rows < ensemble.positions.shape[0]
    assert torch.equal(partial.times, ensemble.times[:rows])
    assert torch.equal(partial.positions, ensemble.positions[:rows])
    with pytest.raises(ValueError, match="no readable surface-hopping run"):
        load_ensemble(tmp_path)


def test_three_averaged_states_keep_ethylene_s1_a_pi_pi_star_state():
    """SA2-CASSCF(2,2)/6-31G* swaps π* for a C–H σ* orbital at the first shared initial condition
    (its S1 lies 2 eV low there); averaging the orbitals over three states keeps the ππ* S1."""
    pytest.importorskip("pyscf")
    from tensorfuse.qm import CasscfSettings, label_sa_casscf

    atoms = read(Path(__file__).resolve().parents[2] / "benchmarks/data/ethylene_abinitio/initial_conditions.xyz",
                 index=0)
    two = label_sa_casscf(atoms, CasscfSettings(nstates=2), gradients=[], couplings=False)
    three = label_sa_casscf(atoms, CasscfSettings(nstates=2, average=3), gradients=[], couplings=False)
    assert three.energies.shape == (2,) and three.forces.shape == (2, 6, 3)
    assert np.ptp(three.energies) > 9.5 and np.ptp(two.energies) < 8.5
    with pytest.raises(ValueError, match="at least"):
        CasscfSettings(nstates=3, average=2)
