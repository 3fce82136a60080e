"""The ASE calculator, committees, MD runs and energy conservation."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress

from tensorfuse import ModelConfig, Statistics, build_model, save_model
from tensorfuse.calculator import Calculator
from tensorfuse.md import MDExplosion, run_md

CONFIG = dict(channels=4, l_max=1, l_max_edge=2, mace={"correlation": 2}, num_bessel=4, radial_mlp=(8, 8),
              readout_hidden=4)


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(species=(1, 6, 8, 14), r_max=4.0, **CONFIG), dtype=torch.float64, seed=0)


def test_calculator_matches_the_model_and_numerical_derivatives(model):
    atoms = molecule("CH3CH2OH")
    atoms.calc = Calculator(model)
    direct = model.predict(atoms)
    assert atoms.get_potential_energy() == pytest.approx(direct["energy"], abs=1e-12)
    assert np.allclose(atoms.get_forces(), direct["forces"], atol=1e-12)
    assert atoms.get_potential_energies().sum() == pytest.approx(direct["energy"], abs=1e-10)
    numeric = calculate_numerical_forces(atoms, eps=1e-5)
    assert np.allclose(atoms.get_forces(), numeric, atol=1e-6)


def test_stress_for_periodic_cells_matches_ase_numerical_stress(model):
    atoms = bulk("Si", "diamond", a=5.43) * (2, 1, 1)
    atoms.rattle(0.05, seed=1)
    atoms.calc = Calculator(model)
    stress = atoms.get_stress()
    numeric = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.allclose(stress, numeric, atol=1e-7)


def test_skin_reuses_the_neighbour_list_and_stays_exact(model):
    atoms = bulk("Si", "diamond", a=5.43) * 2
    reused, fresh = Calculator(model, skin=1.0), Calculator(model, skin=0.0)
    rng = np.random.default_rng(0)
    for _ in range(6):
        atoms.positions += rng.normal(scale=0.02, size=atoms.positions.shape)
        atoms.calc = reused
        e1, f1 = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = fresh
        e2, f2 = atoms.get_potential_energy(), atoms.get_forces()
        assert e1 == pytest.approx(e2, abs=1e-10) and np.allclose(f1, f2, atol=1e-10)
    assert reused.neighbor_list_builds == 1 and fresh.neighbor_list_builds == 6


def test_committee_returns_mean_and_spread(tmp_path, model):
    other = build_model(ModelConfig(species=(1, 6, 8, 14), r_max=4.0, **CONFIG), dtype=torch.float64, seed=7)
    save_model(model, tmp_path / "a.pt")
    save_model(other, tmp_path / "b.pt")
    atoms = molecule("H2O")
    atoms.calc = Calculator([tmp_path / "a.pt", tmp_path / "b.pt"])
    energy = atoms.get_potential_energy()
    results = atoms.calc.results
    members = [model.predict(atoms)["energy"], other.predict(atoms)["energy"]]
    assert energy == pytest.approx(np.mean(members), abs=1e-10)
    assert results["energy_std"] == pytest.approx(np.std(members), abs=1e-10)
    assert results["forces_std"].shape == (3, 3) and results["forces_committee"].shape == (2, 3, 3)


def test_unknown_elements_and_bad_arguments_are_clear(model):
    atoms = Atoms("Fe", positions=[[0, 0, 0]])
    atoms.calc = Calculator(model)
    with pytest.raises(ValueError, match=r"\[26\] are not in the model's species"):
        atoms.get_potential_energy()
    with pytest.raises(ValueError, match="dtype"):
        Calculator(model, dtype="float16")
    with pytest.raises(ValueError, match="does not exist"):
        Calculator("/nonexistent/model.pt")


@pytest.fixture(scope="module")
def gentle_model():
    """An untrained model with small forces (energy scale 0.01 eV), so that short MD stays calm."""
    config = ModelConfig(species=(1, 6, 8, 14), r_max=4.0, statistics=Statistics(energy_scale=0.01), **CONFIG)
    return build_model(config, dtype=torch.float64, seed=0)


def test_md_writes_trajectory_and_log_in_every_ensemble(tmp_path, gentle_model):
    model = gentle_model
    calc = Calculator(model)
    for ensemble, atoms in (("nve", molecule("CH4")), ("nvt", molecule("CH4")),
                            ("npt", bulk("Si", "diamond", a=5.43) * (2, 2, 2))):
        result = run_md(calc if ensemble != "npt" else Calculator(model), atoms, ensemble, steps=20,
                        timestep=0.5, temperature=300, output=tmp_path / f"{ensemble}.xyz", interval=5,
                        progress=False)
        from ase.io import read

        frames = read(result.trajectory, ":")
        assert len(frames) == 5 and frames[-1].get_forces().shape == (len(atoms), 3)
        lines = result.log.read_text().splitlines()
        assert lines[0].startswith("# step") and len(lines) == 6
    with pytest.raises(ValueError, match="NPT needs a structure periodic"):
        run_md(calc, molecule("CH4"), "npt", steps=2, output=tmp_path / "x.xyz", progress=False)


def test_md_stops_cleanly_when_the_structure_explodes(tmp_path, model):
    atoms = molecule("CH4")
    with pytest.raises(MDExplosion, match="temperature .* exceeds"):
        run_md(Calculator(model), atoms, "nve", steps=50, temperature=20000.0, max_temperature=100.0,
               output=tmp_path / "boom.xyz", interval=5, progress=False)
    from ase.io import read

    assert len(read(tmp_path / "boom.xyz", ":")) >= 1  # what was written is kept


@pytest.mark.parametrize("basis", ["cartesian", pytest.param("spherical", marks=pytest.mark.slow)])
def test_nve_conserves_energy_with_a_trained_model(tmp_path, basis):
    from tensorfuse import TrainConfig, train
    from tensorfuse.train import bundled_dataset
    from ase.io import read

    result = train(TrainConfig(
        data={"max_train_frames": 40, "max_valid_frames": 8},
        model={**CONFIG, "basis": basis, "r_max": 4.0, "radial_mlp": [8, 8]},
        training={"max_epochs": 6, "batch_size": 5, "seed": 0},
        output=str(tmp_path / "demo"),
    ))
    atoms = read(bundled_dataset("test"), index=0)
    md = run_md(Calculator(result.model), atoms, "nve", steps=400, timestep=0.25, temperature=100,
                output=tmp_path / "nve.xyz", interval=20, progress=False)
    energies = np.loadtxt(md.log)[:, 2]
    # fluctuation and drift of the total energy stay below 1 meV/atom over 100 fs
    assert np.ptp(energies) / len(atoms) < 1e-3, np.ptp(energies)


def test_md_keeps_an_existing_trajectory_unless_told_and_checks_before_replacing(tmp_path, gentle_model):
    """`tensorfuse md` deleted an earlier trajectory and log before checking anything."""
    atoms = molecule("CH4")
    first = run_md(Calculator(gentle_model), atoms, "nve", steps=4, interval=2, output=tmp_path / "md.xyz",
                   progress=False)
    before = first.trajectory.read_bytes(), first.log.read_bytes()
    with pytest.raises(ValueError, match="md.xyz and .*md.log already exist"):
        run_md(Calculator(gentle_model), atoms, "nve", steps=4, output=tmp_path / "md.xyz", progress=False)
    with pytest.raises(ValueError, match=r"\[26\] are not in the model's species"):  # fails at start-up
        run_md(Calculator(gentle_model), Atoms("Fe2", positions=[[0, 0, 0], [2.3, 0, 0]]), "nve", steps=4,
               output=tmp_path / "md.xyz", overwrite=True, progress=False)
    assert (first.trajectory.read_bytes(), first.log.read_bytes()) == before
    run_md(Calculator(gentle_model), atoms, "nve", steps=6, interval=2, output=tmp_path / "md.xyz", overwrite=True,
           progress=False)
    from ase.io import read

    assert len(read(tmp_path / "md.xyz", ":")) == 4  # replaced, not appended to


def test_md_of_two_atoms_and_of_a_periodic_single_atom_is_finite(tmp_path, gentle_model):
    """A single free atom is refused (before: an all-NaN trajectory and "done"); what remains valid runs."""
    from ase.io import read

    for name, atoms in (("dimer", Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]])),
                        ("crystal", bulk("Si", "sc", a=2.6))):
        result = run_md(Calculator(gentle_model), atoms, "nvt", steps=4, interval=2, output=tmp_path / f"{name}.xyz",
                        progress=False)
        frames = read(result.trajectory, ":")
        assert all(np.isfinite(f.positions).all() and np.isfinite(f.get_velocities()).all() for f in frames)
    with pytest.raises(ValueError, match="single atom without a periodic cell"):
        run_md(Calculator(gentle_model), Atoms("C"), "nvt", steps=4, output=tmp_path / "atom.xyz", progress=False)


def test_multi_state_calculator_gives_every_state_and_a_settable_active_state(tmp_path):
    config = ModelConfig(species=(1, 6, 8, 14), r_max=4.0, states=("S0", "S1", "S2"), couplings="vector", **CONFIG)
    model = build_model(config, dtype=torch.float64, seed=0)
    atoms = molecule("CH3CH2OH")
    direct = model.predict(atoms)
    atoms.calc = Calculator(model)
    assert np.allclose(atoms.calc.get_property("state_energies", atoms), direct["energy"])
    assert atoms.get_potential_energy() == pytest.approx(direct["energy"][0], abs=1e-12)
    assert np.allclose(atoms.calc.get_property("state_forces", atoms)[2], direct["forces"][:, 2], atol=1e-12)
    assert atoms.calc.get_property("couplings", atoms).shape == (3, len(atoms), 3)
    atoms.calc.active_state = "S1"
    assert atoms.get_potential_energy() == pytest.approx(direct["energy"][1], abs=1e-12)
    assert np.allclose(atoms.get_forces(), direct["forces"][:, 1], atol=1e-12)
    assert np.allclose(calculate_numerical_forces(atoms, eps=1e-5), atoms.get_forces(), atol=1e-6)
    with pytest.raises(ValueError, match="unknown state 'T1'"):
        atoms.calc.active_state = "T1"
    save_model(model, tmp_path / "a.pt")
    save_model(build_model(config, dtype=torch.float64, seed=3), tmp_path / "b.pt")
    committee = Calculator([tmp_path / "a.pt", tmp_path / "b.pt"], active_state=2)
    atoms.calc = committee
    atoms.get_potential_energy()
    assert committee.results["state_energies_std"].shape == (3,) and committee.results["state_energies_std"][2] > 0
    assert committee.results["energy_std"] == pytest.approx(committee.results["state_energies_std"][2])


def test_a_calculator_of_another_dtype_leaves_the_callers_model_alone(model):
    """``Module.to`` works in place: a float32 calculator of a float64 model must not convert it."""
    atoms = molecule("CH3CH2OH")
    atoms.calc = Calculator(model, dtype="float32")
    atoms.get_potential_energy()
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_md_with_a_committee_records_spreads_and_writes_or_stops_on_uncertain_frames(tmp_path, gentle_model):
    from ase.io import read

    from tensorfuse.md import MDUncertain
    from tensorfuse.model import UncertaintyLimits

    other = build_model(gentle_model.config, dtype=torch.float64, seed=5)
    calc = Calculator([gentle_model, other])
    result = run_md(calc, molecule("CH4"), "nve", steps=20, output=tmp_path / "c.xyz", interval=5, progress=False,
                    uncertainty=UncertaintyLimits(energy=1e-6, gap=None, forces=None))
    frames = read(result.trajectory, ":")
    assert all(f.info["energy_spread"] > 1e-6 for f in frames)
    assert result.uncertain == tmp_path / "c_uncertain.xyz" and result.uncertain_frames == len(frames) == 5
    assert len(read(result.uncertain, ":")) == 5
    with pytest.raises(MDUncertain, match="crossed the limits"):
        run_md(Calculator([gentle_model, other]), molecule("CH4"), "nve", steps=20, output=tmp_path / "s.xyz",
               interval=5, progress=False, uncertainty=UncertaintyLimits(energy=1e-6, stop=True))
    with pytest.raises(ValueError, match="needs a committee"):
        run_md(Calculator(gentle_model), molecule("CH4"), "nve", steps=5, output=tmp_path / "one.xyz",
               progress=False, uncertainty=UncertaintyLimits(stop=True))
