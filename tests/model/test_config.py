import pytest
import torch

from tensorfuse import ModelConfig, Statistics, build_model


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("basis", "polar", "basis='polar'"),
        ("l_max", 9, "l_max=9"),
        ("l_max", -1, "l_max=-1"),
        ("correlation", 0, "correlation=0"),
        ("num_layers", 0, "num_layers=0"),
        ("channels", 0, "channels=0"),
        ("product_basis", "dense", "product_basis='dense'"),
        ("parity", "odd", "parity='odd'"),
        ("r_max", -1.0, "r_max=-1.0"),
        ("species", (), "species=()"),
        ("species", (1, 1), "species=(1, 1)"),
        ("species", (0,), "species=(0,)"),
        ("l_max_edge", 0, "l_max=1"),
        ("channels", "64", "channels='64': expected int"),
        ("r_max", True, "r_max=True: expected float"),
        ("latent_channels", 1.5, "latent_channels=1.5: expected int or null"),
    ],
)
def test_bad_configuration_names_field_and_value(field, value, match):
    kwargs = dict(species=(1, 8))
    kwargs[field] = value
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**kwargs)


def test_contraction_stops_at_correlation_three_with_a_pointer_to_the_alternatives():
    with pytest.raises(ValueError, match="correlation=4.*symmetric"):
        ModelConfig(species=(1,), product_basis="contraction", correlation=4)


def test_statistics_are_validated():
    with pytest.raises(ValueError, match="avg_num_neighbors"):
        Statistics(avg_num_neighbors=0)
    with pytest.raises(ValueError, match="not in species"):
        ModelConfig(species=(1,), statistics=Statistics(atomic_energies={8: -2000.0}))


def test_presets_and_overrides():
    config = ModelConfig.preset("medium", species=(1, 6, 8), basis="spherical")
    assert config.channels == 64 and config.basis == "spherical" and config.correlation == 3
    with pytest.raises(ValueError, match="'huge'"):
        ModelConfig.preset("huge", species=(1,))
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown model configuration key"):
        ModelConfig.from_dict({"species": [1], "chanels": 4})


def test_reports_parameters_and_memory_per_edge():
    config = ModelConfig.preset("small", species=(1, 6, 8))
    assert config.num_parameters() == sum(p.numel() for p in build_model(config).parameters())
    assert 1000 < config.memory_per_edge() < 10**6
    assert config.memory_per_edge(4) * 2 == config.memory_per_edge(8)


def test_unknown_element_is_a_clear_error():
    model = build_model(ModelConfig(species=(1, 8), channels=4), dtype=torch.float64)
    import ase.build

    with pytest.raises(ValueError, match=r"atomic number \[6\].*\[1, 8\]"):
        model.predict(ase.build.molecule("CH4"))
