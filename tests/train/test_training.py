"""Training: a short run learns, checkpoints resume exactly, files are safe to load, errors are clear."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tensorfuse import TrainConfig, load_model, train
from tensorfuse.train import resume_config
from tensorfuse._cli import main as cli

TINY = {"channels": 4, "l_max": 1, "l_max_edge": 1, "mace": {"correlation": 2}, "num_bessel": 4,
        "radial_mlp": [8, 8], "readout_hidden": 4, "r_max": 4.0}


def tiny_config(output, **training):
    return TrainConfig(
        data={"max_train_frames": 24, "max_valid_frames": 6, "valid_fraction": 0.1},
        model=TINY,
        training={"max_epochs": 3, "batch_size": 4, "valid_batch_size": 8, "seed": 1, **training},
        output=str(output),
    )


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_short_run_learns_and_writes_its_files(tmp_path, capsys):
    result = train(tiny_config(tmp_path / "run", max_epochs=4))
    history = result.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for name in ("config.yaml", "model.pt", "checkpoint_last.pt", "metrics.csv", "results.csv", "results.json"):
        assert (tmp_path / "run" / name).exists(), name
    assert set(result.metrics) == {"train", "valid", "test"}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert set(results["splits"]) == {"train", "valid", "test"}
    assert results["splits"]["test"]["f_mae"] == pytest.approx(result.metrics["test"]["f_mae"])
    with open(tmp_path / "run" / "results.csv") as f:
        assert [row["split"] for row in csv.DictReader(f)] == ["train", "valid", "test"]
    # the epoch line shows the energy error left after a shift fit beside the raw one
    assert all(r["valid_e_rmse_shifted"] <= r["valid_e_rmse"] for r in history)
    out = capsys.readouterr().out
    assert "after a shift refit" in out
    assert "epoch    4" in out and "errors, best epoch" in out and "read " in out
    model = load_model(tmp_path / "run" / "model.pt")  # plain data: weights_only=True inside
    assert model.config.species == (1, 6, 8) and model.config.statistics.avg_num_neighbors > 1


def test_model_and_checkpoint_files_load_with_weights_only(tmp_path):
    train(tiny_config(tmp_path / "run", max_epochs=1))
    for name in ("model.pt", "checkpoint_last.pt"):
        torch.load(tmp_path / "run" / name, weights_only=True)


def test_foreign_and_newer_model_files_are_clear_errors(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="not a tensorfuse model file"):
        load_model(tmp_path / "pickled.pt")
    torch.save({"format": "tensorfuse-model", "format_version": 99, "config": {}}, tmp_path / "new.pt")
    with pytest.raises(ValueError, match="version 99.*upgrade tensorfuse"):
        load_model(tmp_path / "new.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a tensorfuse model file"):
        load_model(tmp_path / "junk.pt")


def test_resume_after_a_kill_ends_in_the_same_state(tmp_path):
    """Kill a training process after its second epoch's checkpoint, resume it from the run folder
    alone (as ``tensorfuse train --output DIR --resume``), compare with a run that was not killed."""
    full = train(tiny_config(tmp_path / "full", max_epochs=4))
    run = tmp_path / "killed"
    script = (
        "import sys, torch; torch.set_num_threads(%d)\n"
        "from tensorfuse._cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n" % torch.get_num_threads()
    )
    config = tiny_config(run, max_epochs=100)
    from tensorfuse.train._run_folder import RunFolder

    RunFolder(run).store_config(config)  # what `tensorfuse train` writes first; the CLI then trains it
    args = ["train", "--output", str(run), "--resume"]
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        last = run / "checkpoint_last.pt"
        if last.exists():
            try:
                if torch.load(last, weights_only=True)["state"]["epoch"] >= 2:
                    break
            except Exception:  # being replaced right now: try again
                pass
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = torch.load(run / "checkpoint_last.pt", weights_only=True)["state"]["epoch"]
    assert 2 <= killed_at < 4
    resumed = train(resume_config(run, {"training.max_epochs": 4}))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    a, b = _weights(tmp_path / "full" / "model.pt"), _weights(run / "model.pt")
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-12), key
    assert resumed.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], rel=1e-10)


def test_resume_without_a_run_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="holds no training run to resume"):
        train(tiny_config(tmp_path / "none").with_overrides({"resume": True}))


def test_time_budget_stops_early(tmp_path):
    result = train(tiny_config(tmp_path / "budget", max_epochs=1000, time_budget=0.05))
    assert 1 <= len(result.history) < 1000


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--model.chanels", "4"], "unknown key(s) model.chanels"),
        (["train", "--training.lr", "-1"], "training.lr=-1"),
        (["train", "--train-file", "/nonexistent.xyz"], "data.train_file='/nonexistent.xyz': no such file"),
        (["train", "--bogus.key", "1"], "sections are data, model and training"),
        (["train", "--preset", "small", "--model.basis", "polar"], "basis='polar'"),
        (["eval", "/nonexistent/model.pt", "data.xyz"], "does not exist"),
        (["train", "missing.yaml"], "missing.yaml does not exist"),
        (["train", "--training.forces_weight", "abc"], "training.forces_weight='abc': expected float"),
        (["train", "--training.max_epochs", "2.5"], "training.max_epochs=2.5: expected int"),
        (["train", "--training.refit_energy_shift", "maybe"], "refit_energy_shift='maybe': expected bool"),
        (["train", "--data.valid_fraction", "x"], "data.valid_fraction='x': expected float"),
        (["train", "--model.channels", "abc"], "channels='abc': expected int"),
    ],
)
def test_cli_user_errors_are_one_line_without_traceback(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1


def test_yaml_configuration_mirrors_the_typed_configs(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(
        "data:\n  max_train_frames: 8\n  valid_fraction: 0.2\nmodel:\n  preset: small\n  channels: 4\n"
        "training:\n  max_epochs: 1\n  batch_size: 4\noutput: " + str(tmp_path / "yaml_run") + "\n"
    )
    config = TrainConfig.from_yaml(path)
    assert config.model == {"preset": "small", "channels": 4} and config.training.max_epochs == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  max_epochs: 1\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown key\\(s\\) training.learning_rate"):
        TrainConfig.from_yaml(bad)


def test_eval_command_writes_plot_and_predictions(tmp_path, capsys):
    from tensorfuse.train import bundled_dataset

    train(tiny_config(tmp_path / "run", max_epochs=1))
    assert cli(["eval", str(tmp_path / "run" / "model.pt"), str(bundled_dataset("test")),
                "--output", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    assert "E MAE" in out and "F MAE" in out
    assert (tmp_path / "eval" / "parity_ethanol_test.png").stat().st_size > 1000
    from ase.io import read

    frames = read(tmp_path / "eval" / "predictions_ethanol_test.xyz", ":")
    assert len(frames) == 100 and "pred_forces" in frames[0].arrays
    # frames without an energy: the errors say over how many frames they are
    from ase.io import write

    unlabelled = read(bundled_dataset("test"), ":")
    for atoms in unlabelled[:3]:
        atoms.calc = None
        atoms.arrays["forces"] = frames[0].arrays["pred_forces"] * 0 + 0.1
    write(tmp_path / "partial.xyz", unlabelled)
    assert cli(["eval", str(tmp_path / "run" / "model.pt"), str(tmp_path / "partial.xyz"),
                "--output", str(tmp_path / "eval")]) == 0
    assert "errors are over the labelled frames only: energy 97 of 100" in capsys.readouterr().out


@pytest.mark.parametrize("architecture", ["mace", "cormorant"])
def test_fusion_models_train_from_yaml_in_both_architectures(tmp_path, architecture):
    """Fusion blocks are configured from YAML like everything else, and the pipeline trains them."""
    sections = {"mace": {"mace": {"correlation": 2, "product_basis": "fusion", "fusion_leaves": "distinct"}},
                "cormorant": {"cormorant": {"fusion": True, "second_message": "distinct"}}}
    model = {**{k: v for k, v in TINY.items() if k != "mace"}, "architecture": architecture,
             **sections[architecture], "basis": "spherical" if architecture == "mace" else "cartesian"}
    yaml_text = (
        "data: {max_train_frames: 16, max_valid_frames: 4, valid_fraction: 0.2}\n"
        f"model: {model}\n".replace("'", "")
        + "training: {max_epochs: 2, batch_size: 4, seed: 1}\n"
        + f"output: {tmp_path / 'run'}\n"
    )
    (tmp_path / "config.yaml").write_text(yaml_text)
    assert cli(["train", str(tmp_path / "config.yaml")]) == 0
    loaded = load_model(tmp_path / "run" / "model.pt")
    assert loaded.config.architecture == architecture and loaded.config.densities_per_layer() > 1


def test_energy_shift_refit_zeroes_the_mean_residual_and_keeps_forces(tmp_path):
    from tensorfuse import ModelConfig, build_model
    from tensorfuse.data._dataset import GraphDataset
    from tensorfuse.data._io import read_frames
    from tensorfuse.train._statistics import refit_energy_shift

    frames = read_frames(Path(__file__).resolve().parents[2] / "src/tensorfuse/datasets/ethanol_test.xyz")[0][:12]
    dataset = GraphDataset(frames, 4.0)
    model = build_model(ModelConfig(species=(1, 6, 8), **TINY), dtype=torch.float64, seed=0)
    graph, targets = dataset.collate(list(range(12)))
    before = model(graph)
    shifts = refit_energy_shift(model, dataset, batch_size=5)
    after = model(graph)
    residual = (targets.energy - after["energy"]).detach()
    assert abs(float(residual.mean())) < 1e-8 * float(targets.energy.abs().mean())
    assert torch.allclose(after["forces"], before["forces"], atol=1e-12)
    assert model.config.statistics.energy_shift == shifts


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run(tmp_path):
    """training.compile: the same losses and weights as the eager run, to rounding (compiles minutes)."""
    # (a budget, so that the bundled demo data's short default does not end the compiling run)
    eager = train(tiny_config(tmp_path / "eager", max_epochs=2, time_budget=60))
    compiled = train(tiny_config(tmp_path / "compiled", max_epochs=2, time_budget=60, compile=True))
    assert len(compiled.history) == len(eager.history) == 2
    for a, b in zip(eager.history, compiled.history):
        for key in ("train_loss", "valid_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-9), key
    for name, weight in _weights(tmp_path / "eager" / "model.pt").items():
        torch.testing.assert_close(_weights(tmp_path / "compiled" / "model.pt")[name], weight, rtol=1e-8, atol=1e-10)


def test_the_shifted_energy_error_is_what_a_per_element_least_squares_shift_leaves():
    """``e_rmse_shifted`` adds up from batch sums; it equals the RMSE of the residuals after the
    least-squares per-element shift over all frames (mixed compositions: several elements count)."""
    import numpy as np

    from tensorfuse.data._dataset import GraphDataset
    from tensorfuse.data._io import Frame
    from tensorfuse.testing import random_molecule
    from tensorfuse.train._loss import LossWeights
    from tensorfuse.train._objective import EnergyObjective

    rng = np.random.default_rng(3)
    frames = []
    for seed in range(12):
        positions, numbers = random_molecule([1, 6, 8], int(rng.integers(3, 8)), seed)
        frames.append(Frame(numbers=numbers, positions=positions, cell=np.zeros((3, 3)), pbc=np.zeros(3, bool),
                            energy=float(rng.normal()), forces=rng.normal(size=positions.shape)))
    dataset = GraphDataset(frames, 3.0)
    objective = EnergyObjective(LossWeights(1.0, 1.0, 0.0), (1, 6, 8))
    sums, residuals, counts = {k: 0.0 for k in objective.sum_keys}, [], []
    for batch in ([0, 1, 2, 3, 4], [5, 6, 7], [8, 9, 10, 11]):
        graph, targets = dataset.collate(batch)
        predicted = targets.energy + torch.tensor(rng.normal(size=len(batch)) + 5.0)
        for k, v in objective.error_sums({"energy": predicted, "forces": targets.forces}, graph, targets).items():
            sums[k] += v
        residuals += (targets.energy - predicted).tolist()
        counts += [[int((frames[i].numbers == z).sum()) for z in (1, 6, 8)] for i in batch]
    metrics = objective.metrics(sums)
    shift = np.linalg.lstsq(np.array(counts, float), np.array(residuals), rcond=None)[0]
    left = np.array(residuals) - np.array(counts, float) @ shift
    assert metrics["e_rmse_shifted"] == pytest.approx(1000 * np.sqrt(np.mean(left**2)), rel=1e-9)
    assert metrics["e_rmse_shifted"] < 0.5 * metrics["e_rmse"]


def test_parity_plot_tick_labels_do_not_overlap():
    """Absolute energies per atom (about -412.3 eV for ethanol, spread 0.01 eV) gave tick labels that
    ran into each other on the energy axis: they are drawn relative to the mean now."""
    import numpy as np
    from matplotlib.pyplot import close

    from tensorfuse.data._io import read_frames
    from tensorfuse.train import bundled_dataset
    from tensorfuse.train._evaluate import _parity_figure

    frames, _ = read_frames(bundled_dataset("test"))
    rng = np.random.default_rng(0)
    predictions = [{"energy": f.energy + rng.normal(scale=0.05), "forces": f.forces + rng.normal(size=f.forces.shape)}
                   for f in frames]
    fig = _parity_figure(frames, predictions, {"e_atom_mae": 1.0, "f_mae": 1.0})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    try:
        for ax in fig.axes:
            for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
                boxes = [t.get_window_extent(renderer) for t in labels if t.get_text() and t.get_visible()]
                assert len(boxes) >= 2
                assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), \
                    [t.get_text() for t in labels]
    finally:
        close(fig)
