"""Fine-tuning (``training.init_model``): the pretrained weights, new E0s, frozen parts, clear errors."""

import pytest
import torch

from tensorfuse import load_model
from tensorfuse.train import TrainConfig, train

TINY = {"species": [1, 6, 8], "channels": 4, "l_max": 1, "l_max_edge": 1, "radial_mlp": [8], "readout_hidden": 4,
        "num_bessel": 4}


def config(output, model=None, **training):
    return TrainConfig(
        data={"max_train_frames": 12, "max_valid_frames": 4, "valid_fraction": 0.2},
        model=model if model is not None else {"preset": "small"},
        training={"max_epochs": 1, "batch_size": 4, "valid_batch_size": 8, "seed": 1, **training},
        output=str(output),
    )


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pretrained")
    train(config(folder, model=TINY, max_epochs=2))
    return folder / "model.pt"


def test_fine_tuning_starts_from_the_pretrained_weights_and_keeps_frozen_parts(pretrained, tmp_path):
    train(config(tmp_path / "tuned", init_model=str(pretrained), freeze=["embedding", "layers.0"], seed=5))
    before, after = load_model(pretrained), load_model(tmp_path / "tuned" / "model.pt")
    assert after.config.species == before.config.species and after.config.channels == before.config.channels
    old = dict(before.energy_model.named_parameters())
    changed = []
    for name, weight in after.energy_model.named_parameters():
        if name.startswith(("embedding.", "layers.0.")):
            assert torch.equal(weight, old[name]), name  # frozen: exactly the pretrained weights
        elif not torch.equal(weight, old[name]):
            changed.append(name)
    assert any(n.startswith("layers.1.") for n in changed) and any(n.startswith("readouts.") for n in changed)
    # the network's normalization is the pretrained one; E0s are fitted to this run's data
    assert after.config.statistics.energy_scale == before.config.statistics.energy_scale
    assert after.config.statistics.avg_num_neighbors == before.config.statistics.avg_num_neighbors


def test_fine_tuning_refuses_model_settings_unknown_parts_and_missing_files(pretrained, tmp_path):
    with pytest.raises(ValueError, match="the architecture comes from"):
        train(config(tmp_path / "a", model=TINY, init_model=str(pretrained)))
    with pytest.raises(ValueError, match=r"training.freeze: 'layers.7' names no part"):
        train(config(tmp_path / "b", init_model=str(pretrained), freeze=["layers.7"]))
    with pytest.raises(ValueError, match="does not exist"):
        train(config(tmp_path / "c", init_model=str(tmp_path / "absent.pt")))
    with pytest.raises(ValueError, match="applies only with training.init_model"):
        config(tmp_path / "d", freeze=["embedding"])
    with pytest.raises(ValueError, match=r"training.freeze='nan': expected a list of model parts"):
        config(tmp_path / "e", init_model=str(pretrained), freeze="nan")  # a bare string, not a list


def test_fine_tuning_refuses_data_with_elements_the_model_lacks(pretrained, tmp_path):
    from ase import Atoms
    from ase.io import write

    frames = []
    for k in range(6):
        atoms = Atoms("NH3", positions=[[0, 0, 0], [1.0, 0, 0], [0, 1.0 + 0.01 * k, 0], [0, 0, 1.0]])
        atoms.info["energy"] = -1.0 * k
        atoms.arrays["forces"] = torch.zeros(4, 3).numpy()
        frames.append(atoms)
    write(tmp_path / "nh3.xyz", frames)
    bad = TrainConfig(data={"train_file": str(tmp_path / "nh3.xyz"), "forces_key": "forces", "valid_fraction": 0.34},
                      training={"max_epochs": 1, "init_model": str(pretrained)}, output=str(tmp_path / "e"))
    with pytest.raises(ValueError, match=r"element\(s\) \[7\] of the training data are not in the species"):
        train(bad)
