"""Export round trip: the exported program gives the Python model's energies, forces and stress."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from tensorfuse import ModelConfig, build_model, save_model
from tensorfuse._cli import main as cli
from tensorfuse.calculator import Calculator
from tensorfuse.export import export_model, load_exported


@pytest.mark.parametrize("basis,settings", [
    ("cartesian", {}),
    ("spherical", {}),
    ("cartesian", {"mace": {"product_basis": "fusion", "fusion_leaves": "distinct"}}),
    ("spherical", {"architecture": "cormorant", "cormorant": {"fusion": True}}),
    ("cartesian", {"states": ("S0", "S1", "S2"), "couplings": "vector"}),
], ids=["cartesian", "spherical", "fusion", "cormorant-fusion", "states"])
def test_exported_program_round_trip(tmp_path, basis, settings):
    config = ModelConfig(species=(1, 6, 8, 14), basis=basis, channels=4, l_max=1, l_max_edge=2,
                         num_bessel=4, radial_mlp=(8, 8), readout_hidden=4, r_max=4.0, **settings)
    model = build_model(config, dtype=torch.float64, seed=0)
    path = export_model(model, tmp_path / "model.pt2")
    exported = load_exported(path)
    for atoms in (molecule("CH3CH2OH"), molecule("C6H6"), bulk("Si", "diamond", a=5.43) * (2, 1, 1)):
        a, b = model.predict(atoms), exported.predict(atoms)
        # to 1e-10 of each quantity's scale: the untrained Cormorant-style model reaches |E| ~ 1e14 eV,
        # where the eager CPU kernels and the exported tensor path differ in summation order only
        for key in ("energy", "forces", "couplings", "stress"):
            if key in a:
                scale = max(1.0, float(np.abs(a[key]).max()))
                assert np.abs(np.asarray(b[key]) - np.asarray(a[key])).max() <= 1e-10 * scale, key
    atoms = molecule("CH4")
    atoms.calc = Calculator(str(path))
    assert np.allclose(atoms.get_potential_energy(), np.ravel(model.predict(atoms)["energy"])[0], atol=1e-10)


def test_export_command_and_bad_files(tmp_path, capsys):
    model = build_model(ModelConfig(species=(1, 8), channels=4, l_max_edge=1, mace={"correlation": 2},
                                    radial_mlp=(8,), readout_hidden=4), dtype=torch.float64)
    save_model(model, tmp_path / "m.pt")
    assert cli(["export", str(tmp_path / "m.pt"), str(tmp_path / "m.pt2")]) == 0
    assert "exported" in capsys.readouterr().out
    # an exported program is a model like any other: load_model and `tensorfuse eval` take it
    from tensorfuse import load_model

    atoms = molecule("H2O")
    assert load_model(tmp_path / "m.pt2").predict(atoms)["energy"] == pytest.approx(model.predict(atoms)["energy"],
                                                                                     abs=1e-10)
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    atoms.calc = SinglePointCalculator(atoms, energy=-1.0, forces=np.zeros((3, 3)))
    write(tmp_path / "water.xyz", [atoms])
    assert cli(["eval", str(tmp_path / "m.pt2"), str(tmp_path / "water.xyz"), "--output", str(tmp_path / "e")]) == 0
    assert "F MAE" in capsys.readouterr().out
    assert cli(["export", str(tmp_path / "m.pt"), str(tmp_path / "m.pt2"), "--overwrite"]) == 0
    (tmp_path / "junk.pt2").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not an exported tensorfuse model"):
        load_exported(tmp_path / "junk.pt2")


def test_exported_program_has_no_kernel_operators(tmp_path):
    """The CPU kernels are operators of this package: an exported program must not need them."""
    config = ModelConfig(species=(1, 6, 8), basis="cartesian", channels=4, l_max=1, l_max_edge=2,
                         num_bessel=4, radial_mlp=(8, 8), readout_hidden=4, r_max=4.0)
    model = build_model(config, dtype=torch.float64, seed=0)
    model.predict(molecule("CH3CH2OH"))  # eager call first: kernels loaded, plans built
    exported = torch.export.load(str(export_model(model, tmp_path / "model.pt2")))
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert targets and not any("tensorfuse" in t for t in targets)
