"""Fine-tuning (``training.init_model``): the pretrained weights, new E0s, frozen parts, clear errors."""

import pytest
import torch

from tensorfuse import ModelConfig, build_model, load_model
from tensorfuse.model._transfer import species_axes, transfer_weights
from tensorfuse.train import TrainConfig, bundled_dataset, train
from tensorfuse.train._trainer import Trainer

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


# -- new elements --------------------------------------------------------------------------------
def ethanol_frames(count):
    from ase.io import read

    return read(bundled_dataset("train"), f":{count}")


def nitrogen_data(tmp_path, count=12):
    """Ethanol frames, a third of them with the O turned into N (an element the pretrained model
    lacks: it lands between C and O, so O's rows move), labelled by EMT (synthetic: any consistent
    labels do)."""
    from ase import Atoms
    from ase.calculators.emt import EMT
    from ase.io import write

    frames = []
    for k, atoms in enumerate(ethanol_frames(count)):
        numbers = atoms.numbers.copy()
        if k % 3 == 0:
            numbers[numbers == 8] = 7
        frame = Atoms(numbers=numbers, positions=atoms.positions)
        frame.calc = EMT()
        frame.info["REF_energy"] = frame.get_potential_energy()
        frame.arrays["REF_forces"] = frame.get_forces()
        frame.calc = None
        frames.append(frame)
    write(tmp_path / "with_n.xyz", frames)
    return str(tmp_path / "with_n.xyz")


def nitrogen_config(tmp_path, output, **training):
    data = {"train_file": nitrogen_data(tmp_path), "energy_key": "REF_energy", "forces_key": "REF_forces",
            "valid_fraction": 0.25}
    return TrainConfig(data=data, training={"max_epochs": 2, "batch_size": 4, "valid_batch_size": 8, "seed": 5,
                                            **training}, output=str(output))


def rows_of(model, z):
    """The rows of element ``z`` in every species-indexed tensor of ``model`` (an energy model)."""
    k = model.config.species.index(z)
    state = model.state_dict()
    return {name: state[name].select(axis, k) for name, axis in species_axes(model).items()}


def test_fine_tuning_to_a_new_element_starts_as_the_pretrained_model_on_its_elements(pretrained, tmp_path):
    before = load_model(pretrained)
    trainer = Trainer(nitrogen_config(tmp_path, tmp_path / "tuned", init_model=str(pretrained)))
    model = trainer.model
    assert model.config.species == (1, 6, 7, 8) and before.config.species == (1, 6, 8)
    # N's rows are the fresh initialization of the run's seed; O's rows are the pretrained O rows
    fresh = build_model(trainer.model_config, dtype=torch.float64, seed=5).energy_model
    for name, rows in rows_of(model.energy_model, 7).items():
        assert torch.equal(rows, rows_of(fresh, 7)[name]), name
    for name, rows in rows_of(model.energy_model, 8).items():
        assert torch.equal(rows, rows_of(before.energy_model, 8)[name]), name
    # the E0s of the data's elements are refitted; with the pretrained statistics back, the model is
    # the pretrained one on structures of its elements
    assert 7 in model.config.statistics.atomic_energies
    model.energy_model.set_statistics(before.config.statistics)
    old, new = before.predict(ethanol_frames(3)), model.predict(ethanol_frames(3))
    assert abs(new["energy"] - old["energy"]).max() < 1e-12 * abs(old["energy"]).max()
    assert abs(new["forces"] - old["forces"]).max() < 1e-12


def test_fine_tuning_to_a_new_element_trains_its_rows(pretrained, tmp_path):
    config = nitrogen_config(tmp_path, tmp_path / "tuned", init_model=str(pretrained), freeze=["readouts"])
    train(config)
    before, after = load_model(pretrained), load_model(tmp_path / "tuned" / "model.pt")
    assert after.config.species == (1, 6, 7, 8)
    assert after.config.statistics.energy_scale == before.config.statistics.energy_scale
    assert set(after.config.statistics.atomic_energies) == {1, 6, 7, 8}
    fresh = build_model(after.config, dtype=torch.float64, seed=5).energy_model
    initial = rows_of(fresh, 7)
    for name, rows in rows_of(after.energy_model, 7).items():
        assert not torch.equal(rows, initial[name]), name  # trained on the N frames
    for name, weight in after.energy_model.named_parameters():
        if name.startswith("readouts."):
            assert torch.equal(weight, dict(before.energy_model.named_parameters())[name]), name
    assert after.predict(ethanol_frames(1)[0])["forces"].shape == (9, 3)


def test_fine_tuning_to_a_new_element_refuses_freezing_its_rows(pretrained, tmp_path):
    # frozen, the new element's embedding row would stay random
    for part, held in (("embedding", "embedding.weight"), ("layers.0", "layers.0.product.weights")):
        config = nitrogen_config(tmp_path, tmp_path / part, init_model=str(pretrained), freeze=[part])
        with pytest.raises(ValueError, match=rf"training.freeze: '{part}' holds per-element weights \({held}\) "
                                             r"and the data bring element\(s\) \[7\] new to"):
            train(config)


# -- the weights' transfer, for every architecture -------------------------------------------------
SMALL = dict(channels=4, l_max=1, l_max_edge=2, r_max=4.0, num_bessel=4, radial_mlp=(8,), readout_hidden=4)
VARIANTS = {
    "symmetric": {},
    "full": {"mace": {"product_basis": "full", "correlation": 2}},
    "latent": {"mace": {"product_basis": "latent", "latent_channels": 2, "correlation": 2}},
    "reduced": {"mace": {"product_basis": "reduced", "correlation": 3, "level_copies": 1}},
    "contraction": {"mace": {"product_basis": "contraction", "correlation": 2}},
    "fusion-density": {"mace": {"product_basis": "fusion", "correlation": 2}},
    "fusion-distinct": {"mace": {"product_basis": "fusion", "fusion_leaves": "distinct", "correlation": 2}},
    "cormorant": {"architecture": "cormorant"},
    "cormorant-fusion": {"architecture": "cormorant", "cormorant": {"fusion": True, "second_message": "distinct"}},
    "states-vector": {"states": ("S0", "S1"), "couplings": "vector"},
    "states-gradient": {"states": ("S0", "S1"), "couplings": "gradient"},
}


def variant(name, basis, species, **statistics):
    return ModelConfig(species=species, basis=basis, statistics=statistics, **SMALL, **VARIANTS[name])


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_tensor_that_depends_on_the_species_declares_its_species_axis(name):
    three = build_model(variant(name, "cartesian", (1, 6, 8)), dtype=torch.float64).energy_model
    four = build_model(variant(name, "cartesian", (1, 6, 7, 8)), dtype=torch.float64).energy_model
    shapes = {k: v.shape for k, v in three.state_dict().items()}
    changed = {}
    for key, value in four.state_dict().items():
        if value.shape != shapes[key]:
            axes = [a for a, (m, n) in enumerate(zip(shapes[key], value.shape)) if (m, n) == (3, 4)]
            assert len(axes) == 1, key
            changed[key] = axes[0]
    assert species_axes(four) == changed  # (with 4 channels, a guess by shape would take channels for species)


@pytest.mark.parametrize("basis", ["cartesian", "spherical"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_a_model_on_more_elements_computes_what_the_source_computes_on_its_elements(name, basis):
    states = len(VARIANTS[name].get("states", ())) or 1
    shift = {z: [0.1 * z, 0.2 * z] for z in (1, 6, 8)} if states > 1 else {}
    statistics = dict(avg_num_neighbors=3.0, energy_scale=0.7, atomic_energies={1: -13.6, 6: -1029.0, 8: -2041.0},
                      energy_shift=shift)
    source_species = (8, 1, 6) if name == "symmetric" else (1, 6, 8)  # any order of the source's elements
    source = build_model(variant(name, basis, source_species, **statistics), dtype=torch.float64, seed=0)
    target = build_model(variant(name, basis, (1, 6, 7, 8), **statistics), dtype=torch.float64, seed=1)
    fresh = rows_of(target.energy_model, 7)
    transfer_weights(source.energy_model, target.energy_model)
    for key, rows in rows_of(target.energy_model, 7).items():
        assert torch.equal(rows, fresh[key]), key
    frames = ethanol_frames(2)
    old, new = source.predict(frames), target.predict(frames)
    for key in old:
        assert abs(new[key] - old[key]).max() <= 1e-12 * max(1.0, abs(old[key]).max()), key


def test_the_transfer_refuses_a_target_without_the_sources_elements():
    source = build_model(variant("symmetric", "cartesian", (1, 6, 8)), dtype=torch.float64)
    target = build_model(variant("symmetric", "cartesian", (1, 6, 7)), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"element\(s\) \[8\] of the source model are not in \[1, 6, 7\]"):
        transfer_weights(source.energy_model, target.energy_model)
