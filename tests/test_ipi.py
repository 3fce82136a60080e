"""i-PI drives a tensorfuse model through ``tensorfuse ipi``: a real i-PI server on the loopback
interface (TCP for a molecule, a UNIX socket for a periodic box) runs a few path-integral steps,
and the forces and potential it received match the calculator at the positions it wrote."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.io import read, write

from tensorfuse import ModelConfig, Statistics, build_model, save_model
from tensorfuse._cli import main as cli
from tensorfuse.calculator import Calculator
from tensorfuse.ipi import connect, parse_address
from tensorfuse.train import bundled_dataset

BEADS, STEPS = 2, 3

INPUT = """<simulation verbosity="low">
  <output prefix="sim">
    <properties stride="1" filename="out"> [ step, potential ] </properties>
    <trajectory filename="pos" stride="1" format="ase"> positions </trajectory>
    <trajectory filename="for" stride="1" format="ase"> forces </trajectory>
  </output>
  <total_steps>{steps}</total_steps>
  <prng><seed>31415</seed></prng>
  <ffsocket name="tensorfuse" mode="{mode}" pbc="{pbc}">
    <address>{address}</address>{port}
  </ffsocket>
  <system>
    <initialize nbeads="{beads}">
      <file mode="ase">init.xyz</file>
      <velocities mode="thermal" units="kelvin">300</velocities>
    </initialize>
    <forces><force forcefield="tensorfuse"/></forces>
    <ensemble><temperature units="kelvin">300</temperature></ensemble>
    <motion mode="dynamics">
      <dynamics mode="nvt">
        <timestep units="femtosecond">0.5</timestep>
        <thermostat mode="pile_l"><tau units="femtosecond">100</tau></thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
"""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny float64 model of H, C, O (random weights: the transport is under test, not the fit)."""
    config = ModelConfig(species=(1, 6, 8), channels=4, l_max=1, l_max_edge=1, mace={"correlation": 2},
                         num_bessel=4, radial_mlp=(8,), readout_hidden=4, r_max=4.0,
                         statistics=Statistics(energy_scale=0.1))
    path = tmp_path_factory.mktemp("ipi_model") / "model.pt"
    save_model(build_model(config, dtype=torch.float64, seed=0), path)
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _run_ipi_with_driver(folder: Path, driver_argv: list[str], timeout: float = 120.0) -> str:
    """Run i-PI in ``folder`` and ``tensorfuse ipi`` (in a thread) until i-PI ends; never hangs."""
    script = Path(sys.executable).parent / "i-pi"
    if not script.exists():
        pytest.skip("the i-pi script is not installed beside this Python")
    log = folder / "ipi.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, str(script), "input.xml"], cwd=folder, stdout=out,
                                  stderr=subprocess.STDOUT, env=env)
    codes = []
    driver = threading.Thread(target=lambda: codes.append(cli(driver_argv)), daemon=True)
    try:
        driver.start()
        deadline = time.monotonic() + timeout
        while server.poll() is None and time.monotonic() < deadline:
            if not driver.is_alive():  # the driver ended: i-PI finishes its step and writes its files, or waits forever
                try:
                    server.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    pass
                break
            time.sleep(0.05)
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        driver.join(timeout=30)
    text = log.read_text()
    assert not driver.is_alive(), "the driver did not end with i-PI\n" + text[-3000:]
    assert server.returncode == 0 and codes == [0], f"i-PI {server.returncode}, driver {codes}\n" + text[-3000:]
    return text


def _check_received_forces(folder: Path, bead: int, start: Atoms, calculator) -> list[float]:
    """The forces i-PI received for ``bead`` equal the calculator's at the positions it wrote (i-PI's
    "ase" trajectories are in Å and eV/Å, with 8 decimals); returns the calculator's energies there."""
    positions = read(folder / f"sim.pos_{bead}.extxyz", index=":")
    forces = read(folder / f"sim.for_{bead}.extxyz", index=":")
    assert len(positions) == len(forces) == STEPS + 1
    energies = []
    for frame, received in zip(positions, forces):
        atoms = start.copy()
        atoms.positions, atoms.cell = frame.positions, frame.cell
        atoms.calc = calculator
        expected = atoms.get_forces()
        got = received.calc.get_forces() if received.calc is not None else received.arrays["forces"]
        assert np.abs(got - expected).max() < 1e-6 * np.abs(expected).max(), (bead, got - expected)
        energies.append(atoms.get_potential_energy())
    return energies


def _structure(periodic: bool) -> Atoms:
    frame = read(bundled_dataset("train"), index=0)
    atoms = Atoms(numbers=frame.numbers, positions=frame.positions - frame.positions.mean(0))
    if periodic:  # a box small enough that periodic images interact (r_max = 4 Å)
        atoms.cell, atoms.pbc = np.eye(3) * 6.0, True
    else:  # i-PI needs a cell even for a molecule: a large one, which the driver ignores
        atoms.cell, atoms.pbc = np.eye(3) * 20.0, False
    atoms.positions += atoms.cell.sum(0) / 2
    return atoms


@pytest.mark.parametrize("mode, periodic", [("inet", False), ("unix", True)], ids=["tcp-molecule", "unix-periodic"])
def test_ipi_receives_the_models_forces(mode, periodic, model_file, tmp_path, capsys):
    pytest.importorskip("ipi")
    start = _structure(periodic)
    write(tmp_path / "init.xyz", start, format="extxyz")
    if mode == "inet":
        port = _free_port()
        socket_xml, address = dict(address="127.0.0.1", port=f"<port>{port}</port>"), ["--address", f"127.0.0.1:{port}"]
    else:
        name = f"tensorfuse-test-{uuid.uuid4().hex[:12]}"
        socket_xml, address = dict(address=name, port=""), ["--unix", name]
    (tmp_path / "input.xml").write_text(INPUT.format(steps=STEPS, beads=BEADS, mode=mode,
                                                     pbc="true" if periodic else "false", **socket_xml))
    try:
        _run_ipi_with_driver(tmp_path, ["ipi", str(model_file), str(tmp_path / "init.xyz"), *address])
    finally:
        if mode == "unix":
            Path(f"/tmp/ipi_{name}").unlink(missing_ok=True)  # i-PI removes it unless killed
    out = capsys.readouterr().out
    assert "connected" in out and "done: i-PI ended the run" in out, out

    calculator = Calculator(model_file)
    bead_energies = [_check_received_forces(tmp_path, bead, start, calculator) for bead in range(BEADS)]
    assert not np.allclose(bead_energies[0], bead_energies[1])  # the beads are distinct configurations
    # i-PI's potential: the beads' mean, in hartree
    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    assert table[:, 0].tolist() == list(range(STEPS + 1))
    np.testing.assert_allclose(table[:, 1] * units.Hartree, np.mean(bead_energies, axis=0), rtol=1e-7, atol=1e-6)


def test_the_example_runs_as_the_readme_says(model_file, tmp_path, capsys):
    """examples/ipi as committed (8 beads), cut to 2 steps on a free port, driven by the command of
    the manual's i-PI page (docs/ipi.md)."""
    import shlex
    import shutil

    pytest.importorskip("ipi")
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "ipi.md").read_text()
    block = page.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    assert [c[:2] for c in commands] == [["tensorfuse", "train"], ["i-pi", "input.xml"], ["tensorfuse", "ipi"]]
    driver = commands[2][1:]
    assert driver[1:3] == ["run/model.pt", "init.xyz"] and driver[3:] == ["--address", "localhost:31415"]
    example = (root / "examples" / "ipi" / "README.md").read_text()
    assert " ".join(commands[2]) in example and "i-pi input.xml > ipi.log &" in example

    for name in ("input.xml", "init.xyz"):
        shutil.copy(root / "examples" / "ipi" / name, tmp_path / name)
    port = _free_port()
    text = (tmp_path / "input.xml").read_text()
    assert "<total_steps>2000</total_steps>" in text and "<port>31415</port>" in text and 'nbeads="8"' in text
    text = text.replace("<total_steps>2000<", "<total_steps>2<").replace("<port>31415<", f"<port>{port}<")
    (tmp_path / "input.xml").write_text(text)
    driver[1:] = [str(model_file), str(tmp_path / "init.xyz"), "--address", f"localhost:{port}"]
    _run_ipi_with_driver(tmp_path, driver)
    assert "after 24 force calls" in capsys.readouterr().out  # 8 beads: the start and 2 steps
    assert np.loadtxt(tmp_path / "sim.out", ndmin=2).shape == (1, 6)  # step 0 (a row every 10 steps)
    assert len(read(tmp_path / "sim.xc.xyz", index=":")) == 1


def test_address_parsing():
    assert parse_address("127.0.0.1:31415") == ("127.0.0.1", 31415)
    assert parse_address(":2000") == ("localhost", 2000) == parse_address("2000")
    assert parse_address("[::1]:9") == ("::1", 9)
    for bad in ("localhost", "host:0", "host:70000"):
        with pytest.raises(ValueError, match="--address"):
            parse_address(bad)


def test_a_server_that_never_answers_is_given_up_on_in_time():
    """A listening socket with a full backlog leaves new connections unanswered (like a host that drops
    packets): each attempt is bounded by the timeout, and the error names the address."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            start = time.monotonic()
            with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
                connect("127.0.0.1", port, timeout=1.0)
            assert time.monotonic() - start < 5
        finally:
            for filler in fillers:
                filler.close()


@pytest.mark.parametrize("periodic", [False, True], ids=["molecule", "periodic"])
def test_ipis_own_python_driver_runs_the_model_in_process(periodic, model_file, tmp_path, capsys):
    """``i-pi-py_driver -m custom -P $(tensorfuse ipi --pes-file) -o template=...,model=...``: i-PI's
    own driver loads the model; the forces i-PI received are the calculator's, and a molecule gets
    a zero virial where a periodic box gets the model's."""
    pytest.importorskip("ipi")
    driver_script = Path(sys.executable).parent / "i-pi-py_driver"
    if not driver_script.exists():
        pytest.skip("i-pi-py_driver is not installed beside this Python")
    page = (Path(__file__).resolve().parents[1] / "docs" / "ipi.md").read_text()  # the command the manual gives
    assert 'i-pi-py_driver -m custom -P "$(tensorfuse ipi --pes-file)" -a localhost -p 31415 ' \
           '-o template=init.xyz,model=run/model.pt' in page
    assert cli(["ipi", "--pes-file"]) == 0
    pes_file = capsys.readouterr().out.strip()
    assert pes_file.endswith("ipi_pes.py") and Path(pes_file).exists()
    start = _structure(periodic)
    write(tmp_path / "init.xyz", start, format="extxyz")
    port = _free_port()
    (tmp_path / "input.xml").write_text(
        INPUT.format(steps=STEPS, beads=1, mode="inet", pbc="true" if periodic else "false", address="127.0.0.1",
                     port=f"<port>{port}</port>").replace("[ step, potential ]", "[ step, potential, pressure_md ]"))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "ipi.log", "w") as out:
        server = subprocess.Popen([sys.executable, str(Path(sys.executable).parent / "i-pi"), "input.xml"],
                                  cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
        time.sleep(1.0)
        client = subprocess.Popen([sys.executable, str(driver_script), "-m", "custom", "-P", pes_file,
                                   "-a", "127.0.0.1", "-p", str(port),
                                   "-o", f"template={tmp_path / 'init.xyz'},model={model_file}"],
                                  cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            assert server.wait(timeout=120) == 0, (tmp_path / "ipi.log").read_text()[-3000:]
            client.wait(timeout=30)
        finally:
            for process in (server, client):
                if process.poll() is None:
                    process.kill()
    energies = _check_received_forces(tmp_path, 0, start, Calculator(model_file))
    table = np.loadtxt(tmp_path / "sim.out", ndmin=2)
    assert table.shape[0] == STEPS + 1
    np.testing.assert_allclose(table[:, 1] * units.Hartree, energies, rtol=1e-7, atol=1e-6)
