"""Reading and validating data: every bad input is a clear error naming file, frame and key."""

import warnings

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from tensorfuse.data._io import DataError, DataKeys, read_frames, validate_frames
from tensorfuse.train import bundled_dataset


def _molecule(energy=-10.0, shift=0.0, numbers=(8, 1, 1)):
    atoms = Atoms(numbers=list(numbers), positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]][: len(numbers)])
    atoms.positions += shift
    atoms.info["REF_energy"] = energy
    atoms.arrays["REF_forces"] = np.full((len(numbers), 3), 0.1)
    return atoms


KEYS = DataKeys(energy="REF_energy", forces="REF_forces")


def test_reads_extxyz_with_explicit_keys(tmp_path):
    path = tmp_path / "ok.xyz"
    write(path, [_molecule(-10.0), _molecule(-11.0, 0.1)])
    frames, report = read_frames(path, KEYS)
    assert len(frames) == 2 and frames[1].energy == -11.0 and frames[0].forces.shape == (3, 3)
    assert report.labels == {"REF_energy": 2, "REF_forces": 2, "stress": 0, "virial": 0}
    assert "2 frames" in report.row() and "O:2" in report.row()


def test_ase_calculator_key_clash_is_handled(tmp_path):
    """ASE >= 3.23 moves `energy`/`forces` of an extxyz file into a calculator: still found."""
    atoms = _molecule()
    atoms.calc = SinglePointCalculator(atoms, energy=-5.5, forces=np.ones((3, 3)))
    path = tmp_path / "calc.xyz"
    write(path, [atoms])
    frames, _ = read_frames(path)
    assert frames[0].energy == -5.5 and np.allclose(frames[0].forces, 1.0)


def test_unit_conversion_and_rmd17_npz(tmp_path):
    path = tmp_path / "kcal.xyz"
    write(path, [_molecule(-10.0)])
    frames, _ = read_frames(path, KEYS, energy_unit="kcal/mol")
    assert frames[0].energy == pytest.approx(-10.0 * 0.0433641043)
    npz = tmp_path / "mini.npz"
    np.savez(npz, nuclear_charges=np.array([8, 1, 1]), coords=np.zeros((2, 3, 3)) + np.eye(3),
             energies=np.array([1.0, 2.0]), forces=np.ones((2, 3, 3)))
    frames, report = read_frames(npz)
    assert report.energy_unit == "kcal/mol" and frames[1].energy == pytest.approx(2 * 0.0433641043)
    np.savez(tmp_path / "bad.npz", coords=np.zeros((1, 3, 3)))
    with pytest.raises(DataError, match=r"bad.npz.*missing \['nuclear_charges', 'energies', 'forces'\]"):
        read_frames(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    "mutate,match",
    [
        (lambda a: a.info.__setitem__("REF_energy", float("nan")), r"frame 1: key 'REF_energy' contains NaN"),
        (lambda a: a.arrays.__setitem__("REF_forces", np.full((3, 3), np.inf)), r"frame 1: key 'REF_forces' contains NaN"),
        (lambda a: a.info.__setitem__("REF_energy", [1.0, 2.0]), r"frame 1: key 'REF_energy' must be one number"),
        (lambda a: a.info.__setitem__("virial", [1.0, 2.0, 3.0]), r"frame 1: cannot be read by ASE .*virial"),
        (lambda a: a.info.__setitem__("config_weight", "heavy"), r"frame 1: key 'config_weight' must be a number"),
    ],
)
def test_malformed_labels_name_file_frame_and_key(tmp_path, mutate, match):
    bad = _molecule()
    mutate(bad)
    path = tmp_path / "bad.xyz"
    write(path, [_molecule(), bad])
    with pytest.raises(DataError, match="bad.xyz, " + match):
        read_frames(path, KEYS)


def test_wrong_force_shape_is_reported(tmp_path):
    path = tmp_path / "shape.xyz"
    path.write_text("3\nProperties=species:S:1:pos:R:3:REF_forces:R:2 REF_energy=1.0\n"
                    "O 0 0 0 1 1\nH 1 0 0 1 1\nH 0 1 0 1 1\n")
    with pytest.raises(DataError, match=r"shape.xyz, frame 0: key 'REF_forces' must have shape \(3, 3\)"):
        read_frames(path, KEYS)


def test_empty_missing_and_unreadable_files(tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.xyz"):
        read_frames(empty)
    with pytest.raises(DataError, match="no such file"):
        read_frames(tmp_path / "absent.xyz")
    junk = tmp_path / "junk.xyz"
    junk.write_text("this is not\nan xyz file\n")
    with pytest.raises(DataError, match="junk.xyz, frame 0: cannot be read"):
        read_frames(junk)


def test_validation_errors_and_warnings(tmp_path):
    path = tmp_path / "v.xyz"
    far = _molecule(numbers=(8, 1))
    far.positions[1] = [0, 0, 9.0]
    close = _molecule()
    close.positions[2] = [0.1, 0.0, 0.0]
    unlabelled = _molecule()
    del unlabelled.info["REF_energy"]
    write(path, [_molecule(), far, close, unlabelled])
    frames, _ = read_frames(path, KEYS)
    with pytest.raises(DataError, match=r"frame 2: atoms 0 and 2 are 0.100 Å apart"):
        validate_frames(frames, r_max=5.0, require=(), keys=KEYS)
    with pytest.raises(DataError, match=r"1 of 3 frames have no 'REF_energy' label \(first: .*frame 3\)"):
        validate_frames([frames[0], frames[1], frames[3]], keys=KEYS)
    with pytest.warns(UserWarning, match="1 of 2 frames have no 'REF_energy'"):
        validate_frames([frames[0], frames[3]], keys=KEYS, allow_missing=True)
    with pytest.raises(DataError, match=r"frame 0: element\(s\) \['O'\] \(Z=\[8\]\) are not in the model's species"):
        validate_frames(frames[:1], species=[1, 6], keys=KEYS)
    with pytest.warns(UserWarning, match="2 atoms in 1 frames have no neighbour within r_max=5.0"):
        validate_frames(frames[:2], r_max=5.0, keys=KEYS)


def test_bundled_dataset_is_in_ev_and_labelled():
    frames, report = read_frames(bundled_dataset("train"))
    assert report.frames == 300 and report.labels["energy"] == 300 and report.labels["forces"] == 300
    assert -4300 < frames[0].energy < -4100  # eV, not kcal/mol
    test, _ = read_frames(bundled_dataset("test"))
    assert len(test) == 100


def test_custom_stress_key_with_voigt_components(tmp_path):
    atoms = _molecule()
    atoms.cell, atoms.pbc = [5, 5, 5], True
    atoms.info["my_stress"] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    path = tmp_path / "s.xyz"
    write(path, [atoms])
    frames, _ = read_frames(path, DataKeys(energy="REF_energy", forces="REF_forces", stress="my_stress"))
    assert np.allclose(frames[0].stress, [[1, 6, 5], [6, 2, 4], [5, 4, 3]])
    atoms.info["my_stress"] = [1.0, 2.0]
    write(path, [atoms])
    with pytest.raises(DataError, match=r"s.xyz, frame 0: key 'my_stress' must have 9 or 6"):
        read_frames(path, DataKeys(energy="REF_energy", forces="REF_forces", stress="my_stress"))


def _ethanol(frames=":12"):
    from ase.io import read

    return read(bundled_dataset("train"), frames)


def _tiny_run(tmp_path, train_file, **data):
    from tensorfuse import TrainConfig, train

    return train(TrainConfig(
        data={"train_file": str(train_file), **data},
        model={"channels": 4, "l_max_edge": 1, "radial_mlp": [8], "readout_hidden": 4, "num_bessel": 4},
        training={"max_epochs": 1, "batch_size": 4},
        output=str(tmp_path / "run"),
    ))


def test_a_file_without_forces_trains_on_energies_with_a_warning(tmp_path):
    frames = []
    for atoms in _ethanol():
        plain = Atoms(numbers=atoms.numbers, positions=atoms.positions)
        plain.info["E"] = atoms.get_potential_energy()
        frames.append(plain)
    write(tmp_path / "energies.xyz", frames)
    with pytest.warns(UserWarning, match=r"energies.xyz: no training frame has forces \('forces'\): training on "
                                         "energies only"):
        result = _tiny_run(tmp_path, tmp_path / "energies.xyz", energy_key="E")
    assert result.metrics["train"]["f_mae"] != result.metrics["train"]["f_mae"]  # NaN: no force labels


def test_kcal_per_mol_read_as_ev_is_flagged(tmp_path):
    frames = _ethanol(":3")
    for atoms in frames:
        atoms.calc.results["energy"] /= 0.0433641043  # the same energies in kcal/mol
    write(tmp_path / "kcal.xyz", frames)
    with pytest.warns(UserWarning, match=r"kcal.xyz: 3 of 3 frames have energies larger in magnitude than any total "
                                         r"energy in eV .*frame 0.*--energy-unit"):
        read_frames(tmp_path / "kcal.xyz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read with its unit, nothing to say; real eV data neither
        read_frames(tmp_path / "kcal.xyz", energy_unit="kcal/mol")
        read_frames(bundled_dataset("test"))


def test_a_one_frame_training_file_trains_without_a_validation_set(tmp_path, capsys):
    """It was reported as "no training frame has an energy" (the frame went to validation); then
    every epoch line printed "valid loss nan"."""
    write(tmp_path / "one.xyz", _ethanol(":1"))
    with pytest.warns(UserWarning, match="only 1 training frame: no validation set"):
        result = _tiny_run(tmp_path, tmp_path / "one.xyz")
    assert set(result.metrics) == {"train"} and len(result.history) == 1
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert epoch_lines and all("(no validation set)" in line and "nan" not in line for line in epoch_lines)


def test_coordinates_beyond_the_supported_range_are_refused_before_the_neighbour_list():
    from tensorfuse.data import neighbor_list

    positions = np.zeros((2, 3))
    positions[1, 0] = 1e6  # vesin's cell list died with SIGFPE here
    with pytest.raises(ValueError, match="coordinate of 1e\\+06 Å"):
        neighbor_list(positions, np.zeros((3, 3)), np.zeros(3, dtype=bool), 5.0)
    with pytest.raises(ValueError, match="cell vectors"):
        neighbor_list(np.zeros((1, 3)), np.eye(3) * 1e7, np.ones(3, dtype=bool), 5.0)


def test_reference_energies_of_one_composition_are_the_defined_minimum_norm_split(monkeypatch):
    """Frames of one molecule fix only ``sum_Z n_Z E0_Z``: the fit says so and returns the
    minimum-norm split, the same whatever the order and chunking of the frames (before, a solve of
    the near-singular system gave per-element values that moved by ~0.1 eV with both)."""
    from tensorfuse.train import _statistics

    frames, _ = read_frames(bundled_dataset("train"))
    species = [1, 6, 8]
    with pytest.warns(UserWarning, match=r"determine only 1 combination\(s\) of the 3"):
        whole = _statistics.least_squares_e0s(frames, species)
    monkeypatch.setattr(_statistics, "CHUNK", 7)
    with pytest.warns(UserWarning):
        chunked = _statistics.least_squares_e0s(frames[::-1], species)
    counts = np.array([6.0, 2.0, 1.0])  # C2H6O
    mean = np.mean([f.energy for f in frames])
    expected = counts * mean / (counts @ counts)
    for z, e in zip(species, expected):
        assert whole[z] == pytest.approx(e, abs=1e-9)
        assert chunked[z] == pytest.approx(whole[z], abs=1e-9)


def test_reference_energies_of_independent_compositions_are_exact_and_silent():
    from tensorfuse.data._io import Frame
    from tensorfuse.train._statistics import least_squares_e0s

    truth = {1: -13.6, 8: -2041.0}
    frames = []
    for numbers in ([1, 1, 8], [1, 8], [8, 8], [1, 1, 1, 8]):
        numbers = np.array(numbers)
        frames.append(Frame(numbers=numbers, positions=np.zeros((len(numbers), 3)), cell=np.zeros((3, 3)),
                            pbc=np.zeros(3, bool),
                            energy=float(sum(truth[z] for z in numbers))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted = least_squares_e0s(frames, [1, 8])
    assert fitted == pytest.approx(truth, abs=1e-9)
