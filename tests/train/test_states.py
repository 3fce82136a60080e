"""Several electronic states: reading their labels, the phase-free coupling loss, training, eval."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write

from tensorfuse import ModelConfig, TrainConfig, build_model, load_model, train
from tensorfuse._cli import main as cli
from tensorfuse.data._dataset import GraphDataset
from tensorfuse.data._io import DataError, read_frames
from tensorfuse.data._states import StateKeys
from tensorfuse.train._objective import StatesObjective

KEYS = StateKeys(("S0", "S1", "S2"))


def water(seed: int, missing: tuple = (), nac_order: str = "01") -> Atoms:
    """A labelled water molecule with three states (energies in order) and their couplings."""
    rng = np.random.default_rng(seed)
    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]] + rng.normal(scale=0.05, size=(3, 3)))
    for s, name in enumerate(KEYS.names):
        if f"energy_{name}" not in missing:
            atoms.info[f"energy_{name}"] = -10.0 + 2.0 * s + rng.normal(scale=0.1)
        if f"forces_{name}" not in missing:
            atoms.arrays[f"forces_{name}"] = rng.normal(size=(3, 3))
    for i, j in KEYS.pairs:
        a, b = KEYS.names[i], KEYS.names[j]
        key = f"nac_{a}_{b}" if nac_order == "01" else f"nac_{b}_{a}"
        if f"nac_{a}_{b}" not in missing:
            atoms.arrays[key] = rng.normal(size=(3, 3))
    return atoms


def test_state_labels_are_read_with_masks_and_couplings_scaled_by_the_gap(tmp_path):
    frames = [water(0), water(1, missing=("forces_S2", "nac_S1_S2")), water(2, nac_order="10")]
    write(tmp_path / "w.xyz", frames)
    read, report = read_frames(tmp_path / "w.xyz", states=StateKeys(KEYS.names, coupling_projection="none"))
    assert report.labels["forces_S2"] == 2 and report.labels["nac_S1_S2"] == 2 and report.labels["energy_S0"] == 3
    labels = read[0].states
    e = labels.energies
    assert np.allclose(labels.couplings[0], (e[1] - e[0]) * frames[0].arrays["nac_S0_S1"])  # ΔE·d, eV/Å
    assert read[0].energy == e[0] and np.allclose(read[0].forces, frames[0].arrays["forces_S0"])
    assert read[1].states.has_forces.tolist() == [True, True, False]
    assert read[1].states.has_couplings.tolist() == [True, True, False]
    reversed_pair = read[2].states
    d = frames[2].arrays["nac_S1_S0"]  # stored as d_10 = -d_01
    assert np.allclose(reversed_pair.couplings[0], -(reversed_pair.energies[1] - reversed_pair.energies[0]) * d)


def test_couplings_are_read_without_their_rigid_translations_and_rotations(tmp_path):
    """By default: sum_A h_A = 0 and sum_A r_A x h_A = 0 (a hop along them keeps both momenta), and
    what is removed is a rigid motion (the internal part is the file's)."""
    frames = [water(k) for k in range(3)]
    write(tmp_path / "w.xyz", frames)
    raw = read_frames(tmp_path / "w.xyz", states=StateKeys(KEYS.names, coupling_projection="none"))[0]
    projected = read_frames(tmp_path / "w.xyz", states=KEYS)[0]
    for before, after in zip(raw, projected):
        for p in range(len(KEYS.pairs)):
            h, h0 = after.states.couplings[p], before.states.couplings[p]
            assert np.abs(h.sum(0)).max() < 1e-12
            assert np.abs(np.cross(after.positions, h).sum(0)).max() < 1e-12
            removed = (h0 - h).ravel()
            centred = after.positions - after.positions.mean(0)
            rigid = np.stack([np.tile(np.eye(3)[k], 3) for k in range(3)]
                             + [np.cross(np.eye(3)[k], centred).ravel() for k in range(3)], axis=1)
            coefficients = np.linalg.lstsq(rigid, removed, rcond=None)[0]
            assert np.abs(rigid @ coefficients - removed).max() < 1e-10
            assert abs(float(h.ravel() @ removed)) < 1e-10  # an orthogonal projection


@pytest.mark.parametrize("mutate,match", [
    (lambda a: a.info.__setitem__("energy_S1", float("nan")), r"frame 1: key 'energy_S1' contains NaN"),
    (lambda a: a.arrays.__setitem__("forces_S2", np.full((3, 3), np.inf)), r"frame 1: key 'forces_S2' contains NaN"),
    (lambda a: a.info.__setitem__("energy_S2", [1.0, 2.0]), r"frame 1: key 'energy_S2' must be one number"),
], ids=["nan-energy", "inf-forces", "energy-not-a-number"])
def test_bad_state_labels_name_file_frame_and_key(tmp_path, mutate, match):
    bad = water(1)
    mutate(bad)
    write(tmp_path / "bad.xyz", [water(0), bad])
    with pytest.raises(DataError, match="bad.xyz, " + match):
        read_frames(tmp_path / "bad.xyz", states=KEYS)


def test_a_coupling_of_the_wrong_shape_is_an_error(tmp_path):
    path = tmp_path / "shape.xyz"
    path.write_text("3\nProperties=species:S:1:pos:R:3:nac_S0_S1:R:2 energy_S0=1.0 energy_S1=2.0 energy_S2=3.0\n"
                    "O 0 0 0 1 1\nH 1 0 0 1 1\nH 0 1 0 1 1\n")
    with pytest.raises(DataError, match=r"shape.xyz, frame 0: key 'nac_S0_S1' must have shape \(3, 3\)"):
        read_frames(path, states=KEYS)


def test_states_out_of_order_are_a_warning_with_counts(tmp_path):
    swapped = water(1)
    swapped.info["energy_S1"] = swapped.info["energy_S0"] - 1.0
    write(tmp_path / "order.xyz", [water(0), swapped, water(2)])
    with pytest.warns(UserWarning, match=r"in 1 of 3 frames a state's energy lies below .*frame 1"):
        read_frames(tmp_path / "order.xyz", states=KEYS)


def _batch(frames, model):
    dataset = GraphDataset(frames, model.r_max, torch.float64)
    return dataset.collate(list(range(len(frames))))


def test_the_coupling_loss_does_not_see_the_sign_of_any_frames_coupling(tmp_path):
    write(tmp_path / "w.xyz", [water(k) for k in range(4)])
    frames, _ = read_frames(tmp_path / "w.xyz", states=KEYS)
    config = ModelConfig(species=(1, 8), channels=4, l_max_edge=2, states=KEYS.names, couplings="vector")
    model = build_model(config, dtype=torch.float64, seed=0)
    objective = StatesObjective(KEYS.names, config.state_pairs, [1.0] * 3, [10.0] * 3, 5.0)
    graph, targets = _batch(frames, model)
    out = {k: v.detach() for k, v in model(graph, forces=True).items()}
    reference = objective.loss(out, graph, targets, objective.counts(graph, targets))
    metrics = objective.metrics(objective.error_sums(out, graph, targets))
    for frame, pair in ((0, 0), (2, 1), (3, 2), (1, 0)):
        frames[frame].states.couplings[pair] *= -1
        graph, targets = _batch(frames, model)
        flipped = objective.loss(out, graph, targets, objective.counts(graph, targets))
        assert float(flipped) == pytest.approx(float(reference), rel=1e-12)
        flipped_metrics = objective.metrics(objective.error_sums(out, graph, targets))
        assert flipped_metrics["c_mae_S0_S1"] == pytest.approx(metrics["c_mae_S0_S1"], rel=1e-12)
        assert flipped_metrics["c_cos_S1_S2"] == pytest.approx(metrics["c_cos_S1_S2"], rel=1e-12)
    # and it is a real loss: the exact couplings (either sign per frame) give zero coupling error
    exact = {**out, "couplings": targets.states.couplings * torch.tensor([1.0, -1.0, 1.0, -1.0])[graph.batch, None, None]}
    assert objective.metrics(objective.error_sums(exact, graph, targets))["c_mae_S0_S1"] == 0.0
    assert objective.metrics(objective.error_sums(exact, graph, targets))["c_cos_S0_S2"] == pytest.approx(1.0)


def test_a_frames_config_weight_scales_all_its_loss_terms(tmp_path):
    """``config_weight`` (MACE's per-frame weight) scales every term of its frame, energies, forces,
    stress and couplings alike: a frame of weight 0 does not train whatever its labels, one of
    weight 2 counts twice. Both objectives (one state, several states)."""
    from tensorfuse.data._io import DataKeys
    from tensorfuse.train._loss import LossWeights, batch_counts, loss_terms

    frames = [water(k) for k in range(3)]
    frames[1].info["config_weight"] = 0.0
    frames[2].info["config_weight"] = 2.0
    config = ModelConfig(species=(1, 8), channels=4, l_max_edge=1, states=KEYS.names, couplings="vector")
    model = build_model(config, dtype=torch.float64, seed=0)
    objective = StatesObjective(KEYS.names, config.state_pairs, [1.0] * 3, [10.0] * 3, 5.0)
    single = build_model(ModelConfig(species=(1, 8), channels=4, l_max_edge=1), dtype=torch.float64, seed=0)

    def losses(changed: int | None, factor: float):
        images = [a.copy() for a in frames]
        if changed is not None:  # every label of one frame moved
            a = images[changed]
            for s, name in enumerate(KEYS.names):
                a.info[f"energy_{name}"] += factor
                a.arrays[f"forces_{name}"] += factor
            for i, j in KEYS.pairs:
                a.arrays[f"nac_{KEYS.names[i]}_{KEYS.names[j]}"] *= 1 + factor
        for a in images:  # the ground state's labels also as one state's
            a.info["energy"], a.arrays["forces"] = a.info["energy_S0"], a.arrays["forces_S0"]
        write(tmp_path / "w.xyz", images)
        states, _ = read_frames(tmp_path / "w.xyz", states=KEYS)
        graph, targets = _batch(states, model)
        out = {k: v.detach() for k, v in model(graph, forces=True).items()}
        multi = float(objective.loss(out, graph, targets, objective.counts(graph, targets)))
        plain, _ = read_frames(tmp_path / "w.xyz", keys=DataKeys())
        graph, targets = _batch(plain, single)
        out = {k: v.detach() for k, v in single(graph, forces=True).items()}
        one = float(loss_terms(out, graph, targets, LossWeights(1.0, 10.0, 1.0), batch_counts(graph, targets)))
        return multi, one

    reference = losses(None, 0.0)
    assert losses(1, 0.5) == pytest.approx(reference, rel=1e-12)  # weight 0: its labels do not matter
    for changed in (0, 2):
        moved = losses(changed, 0.5)
        assert all(abs(m - r) > 1e-3 * r for m, r in zip(moved, reference))  # weights 1 and 2: they do
    # weight 2 counts twice: the change of the loss is twice that of the same change at weight 1
    frames[2].info["config_weight"] = 1.0
    once = [m - r for m, r in zip(losses(2, 0.5), losses(None, 0.0))]
    frames[2].info["config_weight"] = 2.0
    twice = [m - r for m, r in zip(losses(2, 0.5), losses(None, 0.0))]
    assert twice == pytest.approx([2 * x for x in once], rel=1e-10)


def test_one_backward_pass_for_all_states_equals_one_per_state():
    """The batched derivatives (inference) and the per-state ones (training) are the same numbers."""
    from tensorfuse.data import AtomicGraph, batch_graphs
    from tensorfuse.testing import random_molecule

    for couplings in ("vector", "gradient"):
        config = ModelConfig(species=(1, 6, 8), channels=4, l_max_edge=2, states=KEYS.names, couplings=couplings)
        model = build_model(config, dtype=torch.float64, seed=0)
        graph = batch_graphs([AtomicGraph.from_arrays(*random_molecule((1, 6, 8), n, seed=n), cutoff=5.0,
                                                      dtype=torch.float64) for n in (5, 7)])
        batched = model(graph, forces=True)
        per_state = model(graph, forces=True, create_graph=True)
        for key in ("forces", "couplings"):
            assert torch.allclose(batched[key], per_state[key].detach(), atol=1e-13), key


def _dataset(tmp_path, count=24):
    write(tmp_path / "states.xyz", [water(k) for k in range(count)])
    return str(tmp_path / "states.xyz")


def test_train_eval_and_reload_a_multi_state_model(tmp_path, capsys):
    path = _dataset(tmp_path)
    result = train(TrainConfig(
        data={"train_file": path, "test_file": path, "states": list(KEYS.names), "valid_fraction": 0.25},
        model={"channels": 4, "l_max_edge": 1, "radial_mlp": [8], "couplings": "vector", "readout_hidden": 4},
        training={"max_epochs": 2, "batch_size": 4, "state_forces_weights": [100, 50, 10], "couplings_weight": 10},
        output=str(tmp_path / "run"),
    ))
    assert {"f_mae_S0", "f_mae_S2", "gap_mae_S1_S2", "c_mae_S0_S2", "c_cos_S1_S2"} <= set(result.metrics["test"])
    assert {"valid_f_mae_S1", "train_c_mae_S0_S1"} <= set(result.history[-1])
    out = capsys.readouterr().out
    assert "S2 |" in out and "S0_S1 |" in out  # the per-state and per-pair tables
    model = load_model(tmp_path / "run" / "model.pt")  # weights_only inside
    assert model.config.states == KEYS.names and model.config.couplings == "vector"
    assert len(model.config.statistics.energy_shift[8]) == 3  # a shift per state
    assert cli(["eval", str(tmp_path / "run" / "model.pt"), path, "--output", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "S1 |" in out and "S0_S2 |" in out
    for state in KEYS.names:
        assert (tmp_path / "eval" / f"parity_states_{state}.png").stat().st_size > 1000
    # MD on an excited state's surface
    assert cli(["md", str(tmp_path / "run" / "model.pt"), path, "--state", "S2", "--ensemble", "nve", "--steps", "4",
                "--interval", "2", "--temperature", "0", "--output", str(tmp_path / "md.xyz")]) == 0
    from ase.io import read

    frames = read(tmp_path / "md.xyz", ":")
    reference = load_model(tmp_path / "run" / "model.pt").predict(frames[0])["energy"]
    assert frames[0].get_potential_energy() == pytest.approx(float(reference[2]), abs=1e-9)


def test_a_committee_is_evaluated_by_its_mean(tmp_path, capsys):
    """``evaluate(..., committee=...)`` (``tensorfuse eval --committee``): the predictions are the
    members' means (couplings aligned in sign), a committee of one model twice has that model's
    errors and no spread, and two models report their spread."""
    from tensorfuse import save_model
    from tensorfuse.train import evaluate

    path = _dataset(tmp_path, count=6)
    files = []
    for seed in (0, 1):
        files.append(tmp_path / f"m{seed}.pt")
        config = ModelConfig(species=(1, 8), channels=4, l_max_edge=1, radial_mlp=(8,), states=KEYS.names,
                             couplings="vector", r_max=4.0)
        save_model(build_model(config, dtype=torch.float64, seed=seed), files[-1])
    alone = [evaluate(f, path, tmp_path / f"e{k}", progress=False) for k, f in enumerate(files)]
    twice = evaluate(files[0], path, tmp_path / "twice", progress=False, committee=[files[0]])
    for key, value in alone[0].metrics.items():
        assert twice.metrics[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
    assert twice.metrics["spread_energy"] == 0 and twice.metrics["spread_forces"] == 0
    both = evaluate(files[0], path, tmp_path / "both", progress=False, committee=[files[1]])
    assert both.metrics["spread_energy"] > 0 and both.metrics["spread_gap"] > 0
    for mean, a, b in zip(both.predictions, alone[0].predictions, alone[1].predictions):
        for name in KEYS.names:
            assert mean[f"energy_{name}"] == pytest.approx((a[f"energy_{name}"] + b[f"energy_{name}"]) / 2, abs=1e-10)
            assert np.allclose(mean[f"forces_{name}"], (a[f"forces_{name}"] + b[f"forces_{name}"]) / 2, atol=1e-10)
        c_a, c_b, c = (p["coupling_S0_S1"] for p in (a, b, mean))
        sign = 1.0 if (c_a * c_b).sum() >= 0 else -1.0
        assert np.allclose(c, (c_a + sign * c_b) / 2, atol=1e-10)
    assert cli(["eval", str(files[0]), path, "--committee", str(files[1]), "--output", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "the committee of 2 models" in out and "committee spread" in out


def test_wrong_numbers_of_state_weights_and_couplings_without_data_are_errors(tmp_path):
    path = _dataset(tmp_path, 8)
    config = dict(data={"train_file": path, "states": list(KEYS.names)},
                  model={"channels": 4, "l_max_edge": 1, "radial_mlp": [8]}, output=str(tmp_path / "run"))
    with pytest.raises(ValueError, match=r"training.state_forces_weights=\[1.0, 2.0\]: expected 3 weights"):
        train(TrainConfig(**config, training={"max_epochs": 1, "state_forces_weights": [1, 2]}))
    without = str(tmp_path / "no_couplings.xyz")
    write(without, [water(k, missing=("nac_S0_S1", "nac_S0_S2", "nac_S1_S2")) for k in range(8)])
    with pytest.raises(ValueError, match="predicts vector couplings but no training frame has couplings"):
        train(TrainConfig(data={"train_file": without, "states": list(KEYS.names)},
                          model={"channels": 4, "l_max_edge": 1, "radial_mlp": [8], "couplings": "vector"},
                          training={"max_epochs": 1}, output=str(tmp_path / "run2")))
    assert not (tmp_path / "run" / "config.yaml").exists()  # nothing was started


def test_fine_tuning_a_multi_state_model_fits_the_state_shifts_on_the_new_data(tmp_path):
    """The per-state energy shifts are the new data's (as E0s), not dropped and not the old ones."""
    from tensorfuse.train._statistics import compute_statistics
    from tensorfuse.train._trainer import Trainer

    path = _dataset(tmp_path)
    data = {"train_file": path, "states": list(KEYS.names), "valid_fraction": 0.25}
    model = {"channels": 4, "l_max_edge": 1, "radial_mlp": [8], "couplings": "vector", "readout_hidden": 4}
    train(TrainConfig(data=data, model=model, training={"max_epochs": 1, "batch_size": 4},
                      output=str(tmp_path / "run")))
    other = tmp_path / "other.xyz"
    frames = [water(k + 100) for k in range(24)]
    for atoms in frames:  # an offset of the excited states: new shifts
        atoms.info[KEYS.energy_key(1)] += 0.5
        atoms.info[KEYS.energy_key(2)] += 1.0
    write(other, frames)
    trainer = Trainer(TrainConfig(data={**data, "train_file": str(other)},
                                  training={"max_epochs": 1, "batch_size": 4,
                                            "init_model": str(tmp_path / "run" / "model.pt")},
                                  output=str(tmp_path / "tuned")))
    fresh = compute_statistics(trainer.data.train, 1.0, trainer.model.config.statistics.atomic_energies,
                               trainer.config.data.state_keys()).energy_shift
    shifts = trainer.model.config.statistics.energy_shift
    assert set(shifts) == {1, 8} and shifts == fresh


def test_a_test_fraction_is_held_out_of_the_training_file_and_written_for_eval(tmp_path):
    frames = [water(k) for k in range(20)]
    write(tmp_path / "w.xyz", frames)
    result = train(TrainConfig(
        data={"train_file": str(tmp_path / "w.xyz"), "states": ["S0", "S1", "S2"], "test_fraction": 0.25,
              "valid_fraction": 0.1},
        model={"species": (1, 8), "channels": 4, "l_max": 1, "l_max_edge": 1, "num_bessel": 4, "radial_mlp": (8,),
               "readout_hidden": 4, "couplings": "diabatic"},
        training={"max_epochs": 1, "batch_size": 5}, output=str(tmp_path / "run")))
    from ase.io import read

    held_out = read(tmp_path / "run" / "test.xyz", ":")
    assert len(held_out) == 5 and np.isfinite(result.metrics["test"]["f_mae_S1"])
    source = {tuple(np.round(f.positions.ravel(), 6)): f for f in read(tmp_path / "w.xyz", ":")}
    for frame in held_out:  # the source's frames, labels as they were
        original = source[tuple(np.round(frame.positions.ravel(), 6))]
        assert frame.info["energy_S2"] == original.info["energy_S2"]
        assert np.array_equal(frame.arrays["nac_S1_S2"], original.arrays["nac_S1_S2"])


@pytest.mark.parametrize("kind", ["diabatic", "gaps"])
def test_the_energy_shift_refit_recovers_the_shifts_of_ordered_states(tmp_path, kind):
    """Gauss–Newton on the nonlinear (eigenvalue or soft-gap) dependence: shifts moved away from
    those that made the labels come back, and the energies with them (to 1e-6 eV)."""
    import dataclasses

    from tensorfuse import DataConfig, Statistics
    from tensorfuse.data._dataset import GraphDataset
    from tensorfuse.train._data import read_labelled
    from tensorfuse.train._statistics import refit_energy_shift

    shifts = {1: [0.1, 1.0], 8: [-0.3, 2.5]}
    config = ModelConfig(species=(1, 8), channels=4, l_max=1, l_max_edge=1, num_bessel=4, radial_mlp=(8,),
                         readout_hidden=4, states=("S0", "S1"), state_energies=kind,
                         statistics=Statistics(energy_scale=0.5, energy_shift=shifts))
    model = build_model(config, dtype=torch.float64, seed=0)
    frames = [water(k) for k in range(12)]
    for atoms in frames:
        energies = model.predict(atoms)["energy"]
        atoms.info.update(energy_S0=float(energies[0]), energy_S1=float(energies[1]))
    write(tmp_path / "w.xyz", frames)
    labelled, _ = read_labelled(tmp_path / "w.xyz", DataConfig(states=("S0", "S1")))
    moved = dataclasses.replace(config.statistics, energy_shift={1: [0.3, 0.6], 8: [-0.1, 3.0]})
    model.energy_model.set_statistics(moved)
    refit_energy_shift(model, GraphDataset(labelled, model.r_max, torch.float64), batch_size=5)
    for atoms in frames:
        energies = model.predict(atoms)["energy"]
        assert abs(energies[0] - atoms.info["energy_S0"]) < 1e-6 and abs(energies[1] - atoms.info["energy_S1"]) < 1e-6


@pytest.mark.parametrize("kind", ["single", "independent", "diabatic"])
def test_the_energy_shift_refit_counts_each_frame_by_its_config_weight(tmp_path, kind):
    """Half the frames' energies 1 eV off at ``config_weight`` 0: the refit (linear or Gauss–Newton)
    ignores them and recovers the shifts of the others; at weight 1 it would split the difference."""
    import dataclasses

    from tensorfuse import DataConfig, Statistics
    from tensorfuse.data._dataset import GraphDataset
    from tensorfuse.train._data import read_labelled
    from tensorfuse.train._statistics import refit_energy_shift

    states = ("S0", "S1")[: 1 if kind == "single" else 2]
    keys = ["energy"] if kind == "single" else [f"energy_{s}" for s in states]
    shifts = {1: 0.1, 8: -0.3} if kind == "single" else {1: [0.1, 1.0], 8: [-0.3, 2.5]}
    extra = {} if kind == "single" else {"states": states, "state_energies": kind}
    config = ModelConfig(species=(1, 8), channels=4, l_max=1, l_max_edge=1, num_bessel=4, radial_mlp=(8,),
                         readout_hidden=4, **extra, statistics=Statistics(energy_scale=0.5, energy_shift=shifts))
    model = build_model(config, dtype=torch.float64, seed=0)

    def energies_of(atoms):
        return np.atleast_1d(model.predict(atoms)["energy"])

    frames = [water(k) for k in range(12)]
    for k, atoms in enumerate(frames):
        offset = 1.0 if k % 2 else 0.0
        atoms.info.update({key: float(e) + offset for key, e in zip(keys, energies_of(atoms))},
                          config_weight=0.0 if k % 2 else 1.0)
    write(tmp_path / "w.xyz", frames)
    labelled, _ = read_labelled(tmp_path / "w.xyz", DataConfig(states=() if kind == "single" else states))
    moved = {z: ([v + 0.2 for v in s] if isinstance(s, list) else s + 0.2) for z, s in shifts.items()}
    model.energy_model.set_statistics(dataclasses.replace(config.statistics, energy_shift=moved))
    refit_energy_shift(model, GraphDataset(labelled, model.r_max, torch.float64), batch_size=5)
    for k, atoms in enumerate(frames):
        expected = np.array([atoms.info[key] for key in keys]) - (1.0 if k % 2 else 0.0)
        assert np.abs(energies_of(atoms) - expected).max() < 1e-6


def test_best_by_forces_keeps_the_epoch_of_the_lowest_force_and_coupling_error(tmp_path):
    """``training.best_by: forces`` keeps the epoch whose validation force MAE (mean over states) plus
    coupling MAE is lowest, whatever the loss did; ``loss`` keeps the lowest validation loss, ``last``
    the final epoch."""
    import json

    from tensorfuse import TrainConfig, train
    from tensorfuse.datasets import path

    def run(best_by):
        config = TrainConfig(
            data={"train_file": str(path("ethylene_casscf")), "states": ["S0", "S1"], "max_train_frames": 20,
                  "max_valid_frames": 8},
            model={"channels": 4, "l_max_edge": 1, "radial_mlp": [8], "readout_hidden": 4, "num_bessel": 4,
                   "couplings": "diabatic"},
            # a loss of energies alone: its best epoch is not the forces' (epochs 6 and 1 with this seed)
            training={"max_epochs": 6, "batch_size": 4, "seed": 0, "best_by": best_by, "lr": 0.05,
                      "energy_weight": 1000.0, "forces_weight": 1.0, "couplings_weight": 0.0},
            output=str(tmp_path / best_by))
        return train(config)

    kept = {}
    for best_by in ("forces", "loss", "last"):
        result = run(best_by)
        def score(row):
            if best_by == "last":
                return -row["epoch"]
            if best_by == "loss":
                return row["valid_loss"]
            return (row["valid_f_mae_S0"] + row["valid_f_mae_S1"]) / 2 + row["valid_c_mae_S0_S1"]
        kept[best_by] = json.loads((tmp_path / best_by / "results.json").read_text())["best_epoch"]
        assert kept[best_by] == min(result.history, key=score)["epoch"]
    assert kept["forces"] != kept["loss"]
    assert kept["last"] == 6 != kept["forces"]
