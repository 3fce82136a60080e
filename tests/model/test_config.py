import re

import pytest
import torch

from tensorfuse import ModelConfig, Statistics, build_model
from tensorfuse.model import CormorantOptions, MaceOptions


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("basis", "polar", "basis='polar'"),
        ("l_max", 9, "l_max=9"),
        ("l_max", -1, "l_max=-1"),
        ("mace", {"correlation": 0}, "mace.correlation=0"),
        ("num_layers", 0, "num_layers=0"),
        ("channels", 0, "channels=0"),
        ("mace", {"product_basis": "dense"}, "mace.product_basis='dense'"),
        ("mace", {"product_basis": "symmetric", "fusion_leaves": "distinct"},
         "mace.fusion_leaves='distinct': applies only with product_basis='fusion'"),
        ("mace", {"latent_channels": 4}, "mace.latent_channels=4: applies only with product_basis='latent'"),
        ("mace", {"correlation": 2.5}, "mace.correlation=2.5: expected int"),
        ("mace", {"corelation": 2}, "unknown key(s) ['corelation']"),
        ("cormorant", {"fusion": True}, "applies only with architecture='cormorant'"),
        ("product_basis", "fusion", "unexpected keyword"),
        ("parity", "odd", "parity='odd'"),
        ("r_max", -1.0, "r_max=-1.0"),
        ("species", (), "species=()"),
        ("species", (1, 1), "species=(1, 1)"),
        ("species", (0,), "species=(0,)"),
        ("l_max_edge", 0, "l_max=1"),
        ("channels", "64", "channels='64': expected int"),
        ("r_max", True, "r_max=True: expected float"),
        ("mace", {"product_basis": "latent", "latent_channels": 1.5}, "latent_channels=1.5: expected int or null"),
        ("mace", {"level_copies": 2}, "level_copies=2: applies only with product_basis='reduced'"),
        ("mace", {"product_basis": "reduced", "level_copies": 0}, "level_copies=0: must be >= 1"),
    ],
)
def test_bad_configuration_names_field_and_value(field, value, match):
    kwargs = dict(species=(1, 8))
    kwargs[field] = value
    with pytest.raises((ValueError, TypeError), match=re.escape(match)):
        ModelConfig(**kwargs)


def test_architecture_options_do_not_leak_across_architectures():
    """Each architecture's options live in its own section; the other's is refused."""
    with pytest.raises(ValueError, match="mace=.*applies only with architecture='mace'"):
        ModelConfig(species=(1,), architecture="cormorant", mace={"correlation": 4})
    with pytest.raises(ValueError, match="second_message='distinct': applies only with fusion=true"):
        ModelConfig(species=(1,), architecture="cormorant", cormorant={"second_message": "distinct"})
    config = ModelConfig(species=(1,), architecture="cormorant", cormorant={"fusion": True})
    assert "mace" not in config.to_dict() and config.to_dict()["cormorant"]["fusion"] is True
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_model_files_of_the_flat_layout_still_load():
    """tensorfuse 0.1 stored architecture options flat; ``fusion_mode`` meant other things per architecture."""
    mace = ModelConfig.from_dict({"species": [1, 8], "product_basis": "fusion", "fusion_mode": "distinct",
                                  "correlation": 2, "fusion_shape": "caterpillar", "latent_channels": None,
                                  "l_internal": None})
    assert mace.mace == MaceOptions(product_basis="fusion", correlation=2, fusion_leaves="distinct")
    cormorant = ModelConfig.from_dict({"species": [1, 8], "architecture": "cormorant", "product_basis": "fusion",
                                       "fusion_mode": "density", "correlation": 3, "fusion_shape": "balanced",
                                       "latent_channels": None, "l_internal": None})
    assert cormorant.cormorant == CormorantOptions(fusion=True, second_message="shared", fusion_shape="balanced")


def test_contraction_stops_at_correlation_three_with_a_pointer_to_the_alternatives():
    with pytest.raises(ValueError, match="correlation=4.*symmetric"):
        ModelConfig(species=(1,), mace=dict(product_basis="contraction", correlation=4))


def test_statistics_are_validated():
    with pytest.raises(ValueError, match="avg_num_neighbors"):
        Statistics(avg_num_neighbors=0)
    with pytest.raises(ValueError, match="not in species"):
        ModelConfig(species=(1,), statistics=Statistics(atomic_energies={8: -2000.0}))


def test_presets_and_overrides():
    config = ModelConfig.preset("medium", species=(1, 6, 8), basis="spherical")
    assert config.channels == 64 and config.basis == "spherical" and config.mace.correlation == 3
    merged = ModelConfig.preset("small", species=(1,), mace={"product_basis": "latent"})
    assert merged.mace == MaceOptions(product_basis="latent", correlation=2)  # the preset's correlation kept
    cormorant = ModelConfig.preset("small", species=(1,), architecture="cormorant")
    assert cormorant.mace == MaceOptions() and cormorant.channels == 32
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
