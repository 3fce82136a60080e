"""A catalogue of hostile inputs to the command line, one case each.

Every case runs ``tensorfuse ...`` (in process) in a copy of a small workspace (data files, a
trained run, a model, a structure, an earlier MD trajectory) and checks the exit code, a single
one-line message naming the file, frame or key at fault, no traceback, and that no file that
existed before the command changed (hashes before and after).
"""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import read, write

from tensorfuse._cli import main as cli
from tensorfuse.train import bundled_dataset

from ._frames import labelled

KEYS = ["--energy-key", "REF_energy", "--forces-key", "REF_forces"]
TINY = ["--model.channels", "4", "--model.l_max_edge", "1", "--model.radial_mlp", "[8]", "--model.readout_hidden",
        "4", "--model.num_bessel", "4", "--batch-size", "4", "--data.valid_fraction", "0.2"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """train.xyz, test.xyz, start.xyz, a trained spherical-basis run in run/, md/trajectory.xyz and md/md.log."""
    import os

    root = tmp_path_factory.mktemp("workspace")
    frames = labelled(read(bundled_dataset("train"), ":20"))
    write(root / "train.xyz", frames[:15])
    write(root / "test.xyz", frames[15:])
    write(root / "start.xyz", frames[0])
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert cli(["train", "--train-file", "train.xyz", "--test-file", "test.xyz", *KEYS, "--output", "run",
                    "--max-epochs", "2", "--basis", "spherical", *TINY]) == 0
        assert cli(["md", "run/model.pt", "start.xyz", "--steps", "4", "--interval", "2"]) == 0
    finally:
        os.chdir(cwd)
    return root


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


CASES: dict[str, object] = {}


def case(name: str, code: int = 2):
    """Register ``setup(ws) -> (argv, [fragments of the message])`` under ``name``."""
    def register(setup):
        CASES[name] = (setup, code)
        return setup
    return register


def write_xyz(path: Path, text: str) -> None:
    path.write_text(text)


WATER = "3\nProperties=species:S:1:pos:R:3:REF_forces:R:3 REF_energy=-10.0\n" \
        "O 0 0 0 0 0 0\nH 0.96 0 0 0 0 0\nH -0.24 0.93 0 0 0 0\n"


def water_file(ws: Path, name: str, extra: str = "", frames: int = 4) -> str:
    write_xyz(ws / name, WATER * frames + extra)
    return name


# -- train: the run folder and resume ------------------------------------------------------------
@case("train: resume with a setting that differs from the run's")
def _(ws):
    return ["train", "--output", "run", "--resume", "--basis", "cartesian"], ["model.basis='cartesian'", "'spherical'"]


@case("train: resume with another training file")
def _(ws):
    return (["train", "--output", "run", "--resume", "--train-file", "test.xyz"],
            ["data.train_file=", "test.xyz", "the run has"])


@case("train: resume after the training data changed elements (C became N)")
def _(ws):
    assert cli(["train", "--train-file", "train.xyz", *KEYS, "--output", "mine", "--max-epochs", "1", *TINY]) == 0
    frames = read(ws / "train.xyz", ":")
    for atoms in frames:
        atoms.numbers[atoms.numbers == 6] = 7
    write(ws / "train.xyz", frames)
    return ["train", "--output", "mine", "--resume"], ["checkpoint_last.pt", "Z=[1, 6, 8]", "Z=[1, 7, 8]"]


@case("train: resume from a truncated checkpoint")
def _(ws):
    path = ws / "run" / "checkpoint_last.pt"
    path.write_bytes(path.read_bytes()[:2000])
    return ["train", "--output", "run", "--resume"], ["checkpoint_last.pt", "cannot be read", "truncated"]


@case("train: resume from a foreign file (a pickled module) in place of the checkpoint")
def _(ws):
    torch.save(torch.nn.Linear(2, 2), ws / "run" / "checkpoint_last.pt")
    return ["train", "--output", "run", "--resume"], ["checkpoint_last.pt", "cannot be read"]


@case("train: resume from a checkpoint of another model (Cartesian basis)")
def _(ws):
    assert cli(["train", "--train-file", "train.xyz", "--test-file", "test.xyz", *KEYS, "--output", "other",
                "--max-epochs", "1", "--basis", "cartesian", *TINY]) == 0
    shutil.copy(ws / "other" / "checkpoint_last.pt", ws / "run" / "checkpoint_last.pt")
    return ["train", "--output", "run", "--resume"], ["checkpoint_last.pt", "other model settings", "basis='cartesian'"]


@case("train: resume in a folder without a run")
def _(ws):
    (ws / "empty").mkdir()
    return ["train", "--output", "empty", "--resume"], ["empty holds no training run to resume"]


@case("train: a new run into a folder that holds a finished run")
def _(ws):
    return (["train", "--train-file", "train.xyz", *KEYS, "--output", "run", *TINY],
            ["run already holds a training run", "--resume", "--overwrite"])


@case("train: --overwrite, but the new data are bad: the old run stays")
def _(ws):
    write_xyz(ws / "bad.xyz", WATER.replace("REF_energy=-10.0", "REF_energy=nan"))
    return (["train", "--train-file", "bad.xyz", *KEYS, "--output", "run", "--overwrite", *TINY],
            ["bad.xyz, frame 0", "'REF_energy'", "NaN"])


@case("train: --resume and --overwrite together")
def _(ws):
    return ["train", "--output", "run", "--resume", "--overwrite"], ["resume and overwrite exclude each other"]


@case("train: the output is a file")
def _(ws):
    return ["train", "--train-file", "train.xyz", *KEYS, "--output", "train.xyz"], ["train.xyz exists and is not a folder"]


@case("train: an output folder that cannot be created (below a file), found before any data are read")
def _(ws):
    return (["train", "--train-file", "train.xyz", *KEYS, "--output", "start.xyz/run", *TINY],
            ["cannot write to the output folder start.xyz/run", "start.xyz is a file, not a folder"])


@case("train: a device this torch build does not have")
def _(ws):
    if torch.cuda.is_available():
        return ["train", "--device", "cuda:99", "--output", "gpu"], ["only", "CUDA device(s)"]
    return ["train", "--device", "cuda", "--output", "gpu"], ["device 'cuda': no CUDA GPU is available"]


@case("train: a device name that is none")
def _(ws):
    return ["train", "--device", "gpu0", "--output", "gpu"], ["training.device='gpu0'", "expected auto, cpu"]


@case("md: an output below a file (it said 'File exists')")
def _(ws):
    return (["md", "run/model.pt", "start.xyz", "--steps", "2", "--output", "start.xyz/md"],
            ["cannot write start.xyz", "start.xyz is a file, not a folder"])


@case("eval: an output folder below a file (it said 'Not a directory')")
def _(ws):
    return (["eval", "run/model.pt", "test.xyz", *KEYS, "--output", "start.xyz/eval"],
            ["cannot write start.xyz/eval", "start.xyz is a file, not a folder"])


@case("train: a plain flag and its --section.key given with other values")
def _(ws):
    return (["train", "--train-file", "train.xyz", "--max-epochs", "3", "--training.max_epochs", "5"],
            ["settings given twice", "--max-epochs and --training.max_epochs"])


@case("train: a bad model setting is found before the data are read")
def _(ws):
    (ws / "junk.xyz").write_text("not\na structure\n")
    return ["train", "--train-file", "junk.xyz", "--model.channels", "abc"], ["channels='abc': expected int"]


@case("train: correlation beyond what is supported")
def _(ws):
    return ["train", "--model.mace.correlation", "9"], ["mace.correlation=9"]


@case("train: the Cormorant section with the MACE-style architecture")
def _(ws):
    return ["train", "--model.cormorant.fusion", "true"], ["applies only with architecture='cormorant'"]


@case("train: an option of the old flat layout")
def _(ws):
    return ["train", "--model.fusion_mode", "distinct"], ["model.fusion_mode", "moved into the architecture's section"]


@case("train: a YAML file that is not a mapping")
def _(ws):
    (ws / "list.yaml").write_text("- a\n- b\n")
    return ["train", "list.yaml"], ["list.yaml must hold a mapping of sections"]


@case("train: a YAML file that is not YAML")
def _(ws):
    (ws / "bad.yaml").write_text("data: {train_file: [unclosed\n")
    return ["train", "bad.yaml"], ["bad.yaml is not valid YAML"]


@case("train: a missing configuration file")
def _(ws):
    return ["train", "absent.yaml"], ["absent.yaml does not exist"]


# -- train: data ----------------------------------------------------------------------------------
@case("train: a forces key that matches nothing")
def _(ws):
    return (["train", "--train-file", "train.xyz", "--energy-key", "REF_energy", "--forces-key", "REF_force",
             "--output", "new", *TINY], ["train.xyz", "no frame has the key 'REF_force'", "data.forces_key", "REF_forces"])


@case("train: an energy key that matches nothing")
def _(ws):
    return (["train", "--train-file", "train.xyz", "--energy-key", "E", "--output", "new", *TINY],
            ["train.xyz", "'E'", "data.energy_key"])


@case("train: a stress key that matches nothing")
def _(ws):
    return (["train", "--train-file", "train.xyz", *KEYS, "--stress-key", "REF_stress", "--output", "new", *TINY],
            ["train.xyz", "'REF_stress'", "data.stress_key"])


@case("train: a coordinate of 1e6 Å (SIGFPE in the neighbour list before)")
def _(ws):
    frames = read(ws / "train.xyz", ":")
    frames[3].positions[0, 0] = 1e6
    write(ws / "far.xyz", frames)
    return (["train", "--train-file", "far.xyz", *KEYS, "--output", "new", *TINY],
            ["far.xyz, frame 3", "atom 0", "1e+06 Å"])


@case("train: a frame with no atoms (a NaN loss before)")
def _(ws):
    water_file(ws, "zero.xyz", "0\nProperties=species:S:1:pos:R:3 REF_energy=-1.0\n")
    return (["train", "--train-file", "zero.xyz", *KEYS, "--output", "new", *TINY],
            ["zero.xyz, frame 4", "no atoms"])


@case("train: NaN in the positions")
def _(ws):
    water_file(ws, "nan.xyz", WATER.replace("H 0.96 0 0", "H nan 0 0"))
    return ["train", "--train-file", "nan.xyz", *KEYS, "--output", "new", *TINY], ["nan.xyz, frame 4", "NaN", "atom 1"]


@case("train: NaN energy")
def _(ws):
    water_file(ws, "nanE.xyz", WATER.replace("REF_energy=-10.0", "REF_energy=nan"))
    return ["train", "--train-file", "nanE.xyz", *KEYS, "--output", "new", *TINY], ["nanE.xyz, frame 4", "'REF_energy'", "NaN"]


@case("train: forces of the wrong shape")
def _(ws):
    write_xyz(ws / "shape.xyz", "3\nProperties=species:S:1:pos:R:3:REF_forces:R:2 REF_energy=1.0\n"
                                "O 0 0 0 1 1\nH 1 0 0 1 1\nH 0 1 0 1 1\n")
    return ["train", "--train-file", "shape.xyz", *KEYS, "--output", "new"], ["shape.xyz, frame 0", "'REF_forces'", "shape (3, 3)"]


@case("train: two atoms 0.1 Å apart")
def _(ws):
    water_file(ws, "close.xyz", WATER.replace("H -0.24 0.93 0", "H 0.1 0 0"))
    return ["train", "--train-file", "close.xyz", *KEYS, "--output", "new", *TINY], ["close.xyz, frame 4", "0.100 Å apart"]


@case("train: an unknown energy unit")
def _(ws):
    return (["train", "--train-file", "train.xyz", *KEYS, "--energy-unit", "kcal"],
            ["data.energy_unit='kcal'", "kcal/mol"])


@case("train: a training file of isolated atoms only")
def _(ws):
    write_xyz(ws / "atoms.xyz", "1\nProperties=species:S:1:pos:R:3 REF_energy=-13.6\nH 0 0 0\n")
    return (["train", "--train-file", "atoms.xyz", "--energy-key", "REF_energy", "--output", "new"],
            ["atoms.xyz", "no training frames besides isolated atoms"])


@case("train: an empty training file")
def _(ws):
    (ws / "empty.xyz").write_text("")
    return ["train", "--train-file", "empty.xyz", "--output", "new"], ["empty.xyz"]


@case("train: a file that is not a structure file")
def _(ws):
    (ws / "junk.xyz").write_text("this is not\nan xyz file\n")
    return ["train", "--train-file", "junk.xyz", "--output", "new"], ["junk.xyz, frame 0", "cannot be read"]


@case("train: a missing training file")
def _(ws):
    return ["train", "--train-file", "absent.xyz"], ["data.train_file='absent.xyz': no such file"]


@case("train: a negative learning rate")
def _(ws):
    return ["train", "--training.lr", "-1"], ["training.lr=-1"]


@case("train: a learning rate of nan (it said 'expected float')")
def _(ws):
    return ["train", "--training.lr", "nan"], ["training.lr=nan: must be positive"]


@case("train: a loss weight of nan (it was accepted)")
def _(ws):
    return ["train", "--training.forces_weight", "nan"], ["training.forces_weight=nan: must be >= 0"]


@case("train: an unknown learning-rate schedule")
def _(ws):
    return ["train", "--training.scheduler", "linear"], ["training.scheduler='linear'", "expected one of"]


@case("train: early stopping with best_by last (nothing to watch)")
def _(ws):
    return (["train", "--training.best_by", "last", "--training.early_stopping_patience", "5"],
            ["training.early_stopping_patience=5", "best_by: last keeps the final epoch"])


@case("train: a cosine's final learning rate above the initial one")
def _(ws):
    return ["train", "--training.final_lr_factor", "2"], ["training.final_lr_factor=2", "must be in [0, 1]"]


@case("train: --init-model beside a model setting names that setting only (not 'preset')")
def _(ws):
    return (["train", "--train-file", "train.xyz", *KEYS, "--init-model", "run/model.pt", "--model.channels", "8",
             "--output", "tuned"], ["remove the model settings ['channels']"])


# -- train: several electronic states ----------------------------------------------------------------
STATES = ["--data.states", "[S0, S1]"]


def states_file(ws: Path, name: str, edit=None) -> str:
    """Water frames with S0/S1 energies, forces and couplings; ``edit(frames)`` spoils one."""
    frames = []
    for k in range(6):
        atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93 + 0.01 * k, 0]])
        atoms.info.update(energy_S0=-10.0 + 0.01 * k, energy_S1=-5.0 + 0.02 * k)
        for key in ("forces_S0", "forces_S1", "nac_S0_S1"):
            atoms.arrays[key] = np.full((3, 3), 0.1 * (k + 1))
        frames.append(atoms)
    if edit is not None:
        edit(frames)
    write(ws / name, frames)
    return name


@case("train: states whose energy key matches nothing")
def _(ws):
    return (["train", "--train-file", "train.xyz", *STATES, "--output", "new", *TINY],
            ["train.xyz", "no frame has the key 'energy_S0'", "data.state_energy_key", "REF_energy"])


@case("train: a frame without one state's energy")
def _(ws):
    states_file(ws, "s.xyz", lambda frames: frames[4].info.pop("energy_S1"))
    return (["train", "--train-file", "s.xyz", *STATES, "--output", "new", *TINY],
            ["1 of", "'energy_S1'", "s.xyz, frame 4"])


@case("train: NaN in one state's forces")
def _(ws):
    states_file(ws, "s.xyz", lambda frames: frames[2].arrays["forces_S1"].__setitem__((1, 1), np.nan))
    return (["train", "--train-file", "s.xyz", *STATES, "--output", "new", *TINY],
            ["s.xyz, frame 2", "'forces_S1'", "NaN"])


@case("train: couplings of the wrong shape")
def _(ws):
    name = states_file(ws, "s.xyz")
    text = (ws / name).read_text().replace("nac_S0_S1:R:3", "nac_S0_S1:R:2", 1)
    lines = text.splitlines()
    lines[2:5] = [" ".join(line.split()[:-1]) for line in lines[2:5]]  # frame 0: two components per atom
    (ws / name).write_text("\n".join(lines) + "\n")
    return (["train", "--train-file", "s.xyz", *STATES, "--output", "new", *TINY],
            ["s.xyz, frame 0", "'nac_S0_S1'", "shape (3, 3)"])


@case("train: a coupling template without the state names")
def _(ws):
    return ["train", "--data.states", "[S0, S1]", "--data.coupling_key", "nac"], ["data.coupling_key='nac'", "{i} and {j}"]


@case("train: couplings asked of a single-state model")
def _(ws):
    return ["train", "--model.couplings", "vector"], ["couplings='vector'", "at least two states"]


@case("train: a test fraction beside a test file")
def _(ws):
    return (["train", "--data.test_fraction", "0.2", "--test-file", "test.xyz"],
            ["data.test_fraction=0.2", "not both"])


@case("train: a test fraction that leaves nothing to train on")
def _(ws):
    return ["train", "--data.test_fraction", "0.97"], ["data.test_fraction=0.97", "leave frames to train on"]


@case("train: an unknown way to order the states")
def _(ws):
    return (["train", *STATES, "--model.state_energies", "sorted"],
            ["state_energies='sorted'", "expected one of", "diabatic"])


@case("train: diabatic couplings without a diabatic matrix")
def _(ws):
    return (["train", *STATES, "--model.state_energies", "gaps", "--model.couplings", "diabatic"],
            ["couplings='diabatic'", "need state_energies='diabatic'"])


@case("train: ordered states asked of a single-state model")
def _(ws):
    return ["train", "--model.state_energies", "gaps"], ["state_energies='gaps'", "two or more states"]


@case("train: an unknown coupling projection")
def _(ws):
    return (["train", *STATES, "--data.coupling_projection", "translations"],
            ["data.coupling_projection='translations'", "expected one of", "rigid"])


# -- eval -----------------------------------------------------------------------------------------
@case("eval: a model without an element of the data")
def _(ws):
    frames = read(ws / "test.xyz", ":")
    frames[1].numbers[0] = 7
    write(ws / "nitrogen.xyz", frames)
    return ["eval", "run/model.pt", "nitrogen.xyz", *KEYS], ["nitrogen.xyz, frame 1", "['N']", "not in the model's species"]


@case("eval: a forces key that matches nothing")
def _(ws):
    return (["eval", "run/model.pt", "test.xyz", "--energy-key", "REF_energy", "--forces-key", "F"],
            ["test.xyz", "no frame has the key 'F'"])


@case("eval: a coordinate of 1e6 Å")
def _(ws):
    frames = read(ws / "test.xyz", ":")
    frames[0].positions[2, 1] = -1e6
    write(ws / "far.xyz", frames)
    return ["eval", "run/model.pt", "far.xyz", *KEYS], ["far.xyz, frame 0", "atom 2"]


@case("eval: a frame with no atoms")
def _(ws):
    water_file(ws, "zero.xyz", "0\nProperties=species:S:1:pos:R:3 REF_energy=-1.0\n", frames=1)
    return ["eval", "run/model.pt", "zero.xyz", *KEYS], ["zero.xyz, frame 1", "no atoms"]


@case("eval: a missing model file")
def _(ws):
    return ["eval", "absent.pt", "test.xyz"], ["absent.pt does not exist"]


@case("eval: a training checkpoint in place of a model")
def _(ws):
    return ["eval", "run/checkpoint_last.pt", "test.xyz", *KEYS], ["checkpoint_last.pt is a training checkpoint"]


@case("eval: a pickled module in place of a model (never run)")
def _(ws):
    torch.save(torch.nn.Linear(2, 2), ws / "pickled.pt")
    return ["eval", "pickled.pt", "test.xyz"], ["pickled.pt is not a tensorfuse model file"]


# -- md -------------------------------------------------------------------------------------------
@case("md: an existing trajectory without --overwrite")
def _(ws):
    return (["md", "run/model.pt", "start.xyz", "--steps", "4"],
            ["md/trajectory.xyz and md/md.log already exist", "--overwrite"])


@case("md: --overwrite, but the start-up fails (unknown element): the old trajectory stays")
def _(ws):
    write(ws / "iron.xyz", Atoms("Fe2", positions=[[0, 0, 0], [2.3, 0, 0]]))
    return ["md", "run/model.pt", "iron.xyz", "--overwrite"], ["[26]", "not in the model's species"]


@case("md: temperature NaN")
def _(ws):
    return ["md", "run/model.pt", "start.xyz", "--temperature", "nan", "--output", "t.xyz"], ["temperature must be", "nan"]


@case("md: temperature infinite")
def _(ws):
    return ["md", "run/model.pt", "start.xyz", "--temperature", "inf", "--output", "t.xyz"], ["temperature must be", "inf"]


@case("md: negative friction")
def _(ws):
    return ["md", "run/model.pt", "start.xyz", "--friction", "-0.1", "--output", "t.xyz"], ["friction must be", "-0.1"]


@case("md: zero time step")
def _(ws):
    return ["md", "run/model.pt", "start.xyz", "--timestep", "0", "--output", "t.xyz"], ["timestep must be"]


@case("md: an unknown device")
def _(ws):
    return ["md", "run/model.pt", "start.xyz", "--device", "foo", "--output", "t.xyz"], ["unknown device 'foo'"]


@case("md: a CUDA device where there is none")
def _(ws):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    return ["md", "run/model.pt", "start.xyz", "--device", "cuda", "--output", "t.xyz"], ["'cuda'", "no CUDA GPU"]


@case("md: a frame the file does not have")
def _(ws):
    return ["md", "run/model.pt", "test.xyz", "--frame", "99", "--output", "t.xyz"], ["test.xyz has 5 frame(s)", "no frame 99"]


@case("md: a state the model does not have")
def _(ws):
    return ["md", "run/model.pt", "start.xyz", "--state", "S1", "--output", "t.xyz"], ["unknown state 'S1'"]


@case("md: a single atom (an all-NaN trajectory before)")
def _(ws):
    write(ws / "atom.xyz", Atoms("C", positions=[[0, 0, 0]]))
    return ["md", "run/model.pt", "atom.xyz", "--output", "t.xyz"], ["a single atom without a periodic cell"]


@case("md: a structure with no atoms")
def _(ws):
    write_xyz(ws / "none.xyz", "0\nProperties=species:S:1:pos:R:3\n")
    return ["md", "run/model.pt", "none.xyz", "--output", "t.xyz"], ["none.xyz, frame 0", "no atoms"]


@case("md: a coordinate of 1e6 Å")
def _(ws):
    atoms = read(ws / "start.xyz")
    atoms.positions[4] = [0, 1e6, 0]
    write(ws / "far.xyz", atoms)
    return ["md", "run/model.pt", "far.xyz", "--output", "t.xyz"], ["far.xyz, frame 0", "atom 4"]


@case("md: NPT of a molecule")
def _(ws):
    return ["md", "run/model.pt", "start.xyz", "--ensemble", "npt", "--output", "t.xyz"], ["NPT needs a structure periodic"]


@case("md: a missing structure file")
def _(ws):
    return ["md", "run/model.pt", "absent.xyz", "--output", "t.xyz"], ["absent.xyz does not exist"]


@case("md: the trajectory and the log are the same file")
def _(ws):
    return ["md", "run/model.pt", "start.xyz", "--output", "t.xyz", "--log", "t.xyz"], ["same file: t.xyz"]


# -- namd: surface hopping ------------------------------------------------------------------------
def states_model(ws: Path, couplings: str | None = "vector") -> str:
    """An untrained two-state model of the workspace's elements (C, H, O)."""
    from tensorfuse import ModelConfig, Statistics, build_model, save_model

    name = f"states_{couplings}.pt"
    if not (ws / name).exists():
        config = ModelConfig(species=(1, 6, 8), r_max=4.0, channels=4, l_max=1, l_max_edge=1, num_bessel=4,
                             radial_mlp=(8,), readout_hidden=4, states=("S0", "S1"), couplings=couplings,
                             statistics=Statistics(energy_scale=0.01))
        save_model(build_model(config, dtype=torch.float64, seed=0), ws / name)
    return name


def moving(ws: Path) -> str:
    """start.xyz with velocities, for --sampling file."""
    atoms = read(ws / "start.xyz")
    atoms.set_velocities(np.full((len(atoms), 3), 0.001))
    write(ws / "moving.xyz", atoms)
    return "moving.xyz"


NAMD_FILE = ["--sampling", "file", "--steps", "2", "--trajectories", "2", "--output", "nd"]


@case("namd: a single-state model")
def _(ws):
    return ["namd", "run/model.pt", moving(ws), *NAMD_FILE], ["two or more electronic states", "has one"]


@case("namd: FSSH with a model without couplings")
def _(ws):
    return ["namd", states_model(ws, None), moving(ws), *NAMD_FILE], ["FSSH needs coupling vectors", "--method lz"]


@case("namd: an unknown initial state")
def _(ws):
    return ["namd", states_model(ws), moving(ws), "--initial-state", "T1", *NAMD_FILE], ["unknown state 'T1'",
                                                                                         "['S0', 'S1']"]


@case("namd: an initial state out of range")
def _(ws):
    return ["namd", states_model(ws), moving(ws), "--initial-state", "2", *NAMD_FILE], ["state index 2 out of range"]


@case("namd: a product criterion that cannot be read")
def _(ws):
    return ["namd", states_model(ws), moving(ws), "--product", "trans dihedral", *NAMD_FILE], [
        "cannot read the product criterion 'trans dihedral'"]


@case("namd: a product criterion naming an atom the molecule lacks")
def _(ws):
    return ["namd", states_model(ws), moving(ws), "--product", "x: distance 0 40 > 2", *NAMD_FILE], [
        "atom 40 does not exist", "9 atoms"]


@case("namd: a dihedral of three atoms")
def _(ws):
    return ["namd", states_model(ws), moving(ws), "--product", "x: dihedral 0 1 2 > 90", *NAMD_FILE], [
        "a dihedral takes 4 atoms"]


@case("namd: an earlier run in the output folder")
def _(ws):
    (ws / "nd").mkdir(exist_ok=True)
    (ws / "nd" / "populations.csv").write_text("time_fs\n0\n")
    return ["namd", states_model(ws), moving(ws), *NAMD_FILE], ["nd already holds a run", "--overwrite"]


@case("namd: file sampling from frames without velocities")
def _(ws):
    return ["namd", states_model(ws), "start.xyz", *NAMD_FILE], ["--sampling file needs frames with velocities",
                                                                 "frame 0 has none"]


@case("namd: Wigner sampling where the model has no minimum")
def _(ws):
    return ["namd", states_model(ws), "start.xyz", "--no-optimize", "--steps", "2", "--trajectories", "2",
            "--output", "nd"], [
        "not a minimum", "--sampling file"]


@case("namd: a negative committee spread limit")
def _(ws):
    return (["namd", states_model(ws), moving(ws), *NAMD_FILE, "--committee", states_model(ws),
             "--max-energy-spread", "-0.1"], ["energy spread limit must be a positive number"])


@case("namd: a spread limit that is not a number")
def _(ws):
    return (["namd", states_model(ws), moving(ws), *NAMD_FILE, "--max-gap-spread", "wide"],
            ["--max-gap-spread must be a number or none", "'wide'"])


@case("namd: stopping uncertain trajectories without a committee")
def _(ws):
    return ["namd", states_model(ws), moving(ws), *NAMD_FILE, "--stop-uncertain"], ["--stop-uncertain needs a committee"]


@case("namd: a committee of models with other couplings")
def _(ws):
    return (["namd", states_model(ws), moving(ws), *NAMD_FILE, "--committee", states_model(ws, None)],
            ["committee models must have the same states and couplings"])


@case("md: stopping on uncertainty without a committee")
def _(ws):
    return ["md", "run/model.pt", "start.xyz", "--steps", "2", "--stop-uncertain"], ["--stop-uncertain needs a committee"]


def adaptive_yaml(ws: Path, **changes) -> str:
    """An adaptive-sampling configuration of the workspace's files, with ``changes`` on top."""
    import yaml

    settings = {"data": "train.xyz", "states": ["S0", "S1"], "dynamics": {"start": "start.xyz"},
                "labeller": {"kind": "model", "model": "run/model.pt"}, "output": "loop"}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            settings.setdefault(section, {})[name] = value
        else:
            settings[section] = value
    (ws / "adaptive.yaml").write_text(yaml.safe_dump(settings))
    return "adaptive.yaml"


@case("adaptive: a configuration file that does not exist")
def _(ws):
    return ["adaptive", "nowhere.yaml"], ["configuration file nowhere.yaml does not exist"]


@case("adaptive: a committee of one")
def _(ws):
    return ["adaptive", adaptive_yaml(ws, committee=1)], ["committee=1", "two or more members"]


@case("adaptive: data that do not exist")
def _(ws):
    return ["adaptive", adaptive_yaml(ws, data="absent.xyz")], ["data='absent.xyz'", "no such file"]


@case("adaptive: an unknown labeller")
def _(ws):
    return ["adaptive", adaptive_yaml(ws, labeller={"kind": "oracle"})], ["labeller.kind='oracle'", "expected one of"]


@case("adaptive: a labelling command without its files")
def _(ws):
    return (["adaptive", adaptive_yaml(ws, labeller={"kind": "command", "command": "run_qm"})],
            ["must contain {input} and {output}"])


@case("adaptive: an unknown key")
def _(ws):
    return ["adaptive", adaptive_yaml(ws, iterations=3)], ["unknown key(s)", "iterations"]


@case("adaptive: a starting state the data do not have")
def _(ws):
    return (["adaptive", adaptive_yaml(ws, dynamics={"start": "start.xyz", "initial_state": "S2"})],
            ["dynamics.initial_state='S2'", "not one of the states"])


@case("namd: no trajectories")
def _(ws):
    return ["namd", states_model(ws), moving(ws), *NAMD_FILE, "--trajectories", "0"], ["trajectories must be >= 1"]


@case("namd: a decoherence constant that is not a number")
def _(ws):
    return ["namd", states_model(ws), moving(ws), *NAMD_FILE, "--decoherence", "strong"], ["--decoherence must be"]


@case("namd: an element the model does not know")
def _(ws):
    write(ws / "si.xyz", Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]], velocities=[[0, 0, 0.01], [0, 0, 0]]))
    return ["namd", states_model(ws), "si.xyz", *NAMD_FILE], ["atomic number [14]", "not in the model's species"]


@case("namd: a missing structure file")
def _(ws):
    return ["namd", states_model(ws), "absent.xyz", *NAMD_FILE], ["absent.xyz does not exist"]


# -- export ---------------------------------------------------------------------------------------
@case("export: the output is the model itself (it was destroyed before)")
def _(ws):
    return ["export", "run/model.pt", "run/model.pt"], ["run/model.pt is the model itself"]


@case("export: an existing output without --overwrite")
def _(ws):
    (ws / "old.pt2").write_bytes(b"an earlier export")
    return ["export", "run/model.pt", "old.pt2"], ["old.pt2 already exists", "--overwrite"]


@case("export: an output that cannot be written (below a file)")
def _(ws):
    return ["export", "run/model.pt", "start.xyz/model.pt2"], ["cannot write start.xyz/model.pt2",
                                                                 "start.xyz is a file, not a folder"]


@case("export: an output without the .pt2 suffix")
def _(ws):
    return ["export", "run/model.pt", "exported.pt"], ["exported.pt", ".pt2"]


@case("export: a model file that is not one")
def _(ws):
    (ws / "junk.pt").write_bytes(b"junk")
    return ["export", "junk.pt", "junk.pt2"], ["junk.pt is not a tensorfuse model file"]


@case("export --for lammps: an existing output without --overwrite")
def _(ws):
    (ws / "old.pt2").write_bytes(b"an earlier compiled model")
    return ["export", "run/model.pt", "old.pt2", "--for", "lammps"], ["old.pt2 already exists", "--overwrite"]


@case("export --for lammps: an output without the .pt2 suffix")
def _(ws):
    return ["export", "run/model.pt", "compiled.so", "--for", "lammps"], ["compiled.so", ".pt2"]


@case("export --for lammps: a folder as the output")
def _(ws):
    (ws / "out.pt2").mkdir()
    return ["export", "run/model.pt", "out.pt2", "--for", "lammps"], ["cannot write out.pt2: it is a folder"]


@case("export: --dtype without --for lammps")
def _(ws):
    return ["export", "run/model.pt", "x.pt2", "--dtype", "float32"], ["--dtype applies to --for lammps"]


# -- fine-tuning ----------------------------------------------------------------------------------
@case("train: --init-model names a missing file")
def _(ws):
    return ["train", "--train-file", "train.xyz", *KEYS, "--init-model", "absent.pt", "--output", "ft"], \
        ["absent.pt does not exist"]


@case("train: --init-model with model settings beside it")
def _(ws):
    return ["train", "--train-file", "train.xyz", *KEYS, "--init-model", "run/model.pt", "--basis", "cartesian",
            "--output", "ft"], ["the architecture comes from run/model.pt"]


@case("train: --training.freeze without --init-model")
def _(ws):
    return ["train", "--train-file", "train.xyz", *KEYS, "--training.freeze", "[embedding]", "--output", "ft"], \
        ["training.freeze", "applies only with training.init_model"]


@case("train: --init-model, data with a new element (N) and a frozen part that holds its rows")
def _(ws):
    frames = read(ws / "train.xyz", ":")
    frames[0].numbers[frames[0].numbers == 8] = 7  # new elements are fine; freezing their rows is not
    write(ws / "with_n.xyz", frames)
    return ["train", "--train-file", "with_n.xyz", *KEYS, "--init-model", "run/model.pt", "--training.freeze",
            "[embedding]", "--output", "ft"], ["training.freeze: 'embedding' holds per-element weights", "[7]"]


# -- bench ----------------------------------------------------------------------------------------
@case("bench: a missing structure file")
def _(ws):
    return ["bench", "run/model.pt", "absent.xyz"], ["absent.xyz does not exist"]


@case("bench: a missing model file")
def _(ws):
    return ["bench", "absent.pt", "start.xyz"], ["absent.pt does not exist"]


@case("bench: elements the model does not know")
def _(ws):
    write(ws / "iron.xyz", Atoms("Fe2", positions=[[0, 0, 0], [2.3, 0, 0]]))
    return ["bench", "run/model.pt", "iron.xyz"], ["[26]", "not in the model's species"]


@case("bench: a frame the file does not have")
def _(ws):
    return ["bench", "run/model.pt", "start.xyz", "--frame", "3"], ["start.xyz has 1 frame(s)", "no frame 3"]


@case("bench: zero repeats")
def _(ws):
    return ["bench", "run/model.pt", "start.xyz", "--repeats", "0"], ["repeats and threads must be >= 1"]


@case("ipi: --pes-file with a model (it was ignored)")
def _(ws):
    return ["ipi", "--pes-file", "run/model.pt"], ["--pes-file prints the PES module's path", "-o template="]


@case("bench: repeats that would run for days (it printed nothing for hours)")
def _(ws):
    return ["bench", "run/model.pt", "start.xyz", "--repeats", str(10**12)], ["repeats=1000000000000", "10,000"]


@case("bench: a CUDA device on a machine without one (a raw AssertionError before)")
def _(ws):
    if torch.cuda.is_available():
        return ["bench", "run/model.pt", "start.xyz", "--device", "cuda:99"], ["CUDA device(s)"]
    return ["bench", "run/model.pt", "start.xyz", "--device", "cuda"], ["no CUDA GPU is available"]


# -- ipi ------------------------------------------------------------------------------------------
def unused_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@case("ipi: a missing model file")
def _(ws):
    return ["ipi", "absent.pt", "start.xyz", "--address", "localhost:31415"], ["absent.pt does not exist"]


@case("ipi: a missing structure file")
def _(ws):
    return ["ipi", "run/model.pt", "absent.xyz", "--address", "localhost:31415"], ["absent.xyz does not exist"]


@case("ipi: elements the model does not know")
def _(ws):
    write(ws / "iron.xyz", Atoms("Fe2", positions=[[0, 0, 0], [2.3, 0, 0]]))
    return ["ipi", "run/model.pt", "iron.xyz", "--unix", "x"], ["iron.xyz", "[26]", "not in the model's species"]


@case("ipi: no i-PI listens at the address")
def _(ws):
    port = unused_port()
    return ["ipi", "run/model.pt", "start.xyz", "--address", f"127.0.0.1:{port}", "--connect-timeout", "0.5"], [
        f"cannot connect to i-PI at 127.0.0.1:{port}", "connection refused", "tried for 0.5 s"]


@case("ipi: no i-PI UNIX socket of that name")
def _(ws):
    name = f"tensorfuse-absent-{uuid.uuid4().hex[:8]}"
    return ["ipi", "run/model.pt", "start.xyz", "--unix", name, "--connect-timeout", "0.5"], [
        f"/tmp/ipi_{name}", "no such socket"]


@case("ipi: an address without a port")
def _(ws):
    return ["ipi", "run/model.pt", "start.xyz", "--address", "localhost"], ["--address must be HOST:PORT"]


@case("ipi: neither --address nor --unix")
def _(ws):
    return ["ipi", "run/model.pt", "start.xyz"], ["--address HOST:PORT", "--unix NAME"]


# -- lammps ---------------------------------------------------------------------------------------
def lammps_input(ws: Path, units: str = "metal", run: str = "run 2", extra: str = "") -> str:
    """in.lammps: the workspace's start.xyz (C, H, O as types 1-3) in a box, and a short run."""
    atoms = read(ws / "start.xyz")
    atoms.cell, atoms.pbc = [15.0, 15.0, 15.0], True
    atoms.positions += 7.5 - atoms.positions.mean(0)
    write(ws / "start.data", atoms, format="lammps-data", specorder=["C", "H", "O"], masses=True)
    (ws / "in.lammps").write_text(f"units {units}\natom_style atomic\nread_data start.data\n{extra}"
                                  f"fix integrate all nve\n{run}\n")
    return "in.lammps"


@case("lammps: a missing model file")
def _(ws):
    return ["lammps", "absent.pt", lammps_input(ws), "--elements", "C", "H", "O"], ["absent.pt does not exist"]


@case("lammps: a missing input script")
def _(ws):
    return ["lammps", "run/model.pt", "absent.in", "--elements", "C", "H", "O"], ["absent.in: no such LAMMPS input"]


@case("lammps: a binary file as the input script")
def _(ws):
    (ws / "junk.in").write_bytes(bytes(range(256)))
    return ["lammps", "run/model.pt", "junk.in", "--elements", "C", "H", "O"], ["junk.in: not a text file"]


@case("lammps: an input without run or minimize")
def _(ws):
    return (["lammps", "run/model.pt", lammps_input(ws, run=""), "--elements", "C", "H", "O", "--quiet"],
            ["in.lammps: no run or minimize command"])


@case("lammps: an element the model does not know")
def _(ws):
    return (["lammps", "run/model.pt", lammps_input(ws), "--elements", "C", "H", "Fe", "--quiet"],
            ["['Fe'] are not in the model's species", "'H'"])


@case("lammps: fewer elements than atom types")
def _(ws):
    return (["lammps", "run/model.pt", lammps_input(ws), "--elements", "C", "H", "--quiet"],
            ["3 atom type(s) but 2 element(s)", "in type order"])


@case("lammps: not an element symbol")
def _(ws):
    return (["lammps", "run/model.pt", lammps_input(ws), "--elements", "C", "H", "Ox", "--quiet"],
            ["unknown element(s) ['Ox']"])


@case("lammps: units other than metal")
def _(ws):
    return (["lammps", "run/model.pt", lammps_input(ws, units="real"), "--elements", "C", "H", "O", "--quiet"],
            ["'units real'", "units metal"])


@case("lammps: a LAMMPS error in the script (one line, LAMMPS's message)")
def _(ws):
    return (["lammps", "run/model.pt", lammps_input(ws, extra="fix oops all nonsense\n"), "--elements", "C", "H",
             "O", "--quiet"], ["in.lammps: ERROR: Unrecognized fix style 'nonsense'"])


# -- preprocess and data sets on disk ---------------------------------------------------------------
def data_set(ws: Path, name: str = "data.h5") -> str:
    pytest.importorskip("h5py")
    assert cli(["preprocess", "train.xyz", name, *KEYS]) == 0
    return name


@case("preprocess: a missing input file")
def _(ws):
    return ["preprocess", "absent.xyz", "out.h5"], ["absent.xyz: no such file"]


@case("preprocess: an existing output without --overwrite")
def _(ws):
    (ws / "old.h5").write_bytes(b"an earlier data set")
    return ["preprocess", "train.xyz", "old.h5", *KEYS], ["old.h5 already exists", "--overwrite"]


@case("preprocess: a key no frame has (a typo)")
def _(ws):
    return (["preprocess", "train.xyz", "out.h5", "--energy-key", "REF_energie"],
            ["train.xyz: no frame has the key 'REF_energie'", "--energy-key", "REF_energy"])


@case("preprocess: NaN forces in a frame, with --overwrite: the old data set stays")
def _(ws):
    data_set(ws, "old.h5")
    write_xyz(ws / "bad.xyz", WATER * 2 + WATER.replace("H 0.96 0 0 0 0 0", "H 0.96 0 0 nan 0 0"))
    return (["preprocess", "bad.xyz", "old.h5", *KEYS, "--overwrite"],
            ["bad.xyz, frame 2", "'REF_forces'", "NaN"])


@case("preprocess: a frame ASE cannot read")
def _(ws):
    write_xyz(ws / "broken.xyz", WATER + "3\nProperties=species:S:1:pos:R:3 REF_energy=1\nO 0 0\n")
    return ["preprocess", "broken.xyz", "out.h5"], ["broken.xyz, frame 1", "cannot be read by ASE"]


@case("preprocess: an unknown energy unit")
def _(ws):
    return ["preprocess", "train.xyz", "out.h5", "--energy-unit", "kcal"], ["--energy-unit 'kcal'", "kcal/mol"]


@case("preprocess: an output name without .h5")
def _(ws):
    return ["preprocess", "train.xyz", "out.xyz"], ["out.xyz", ".h5"]


@case("preprocess: a data set given as input")
def _(ws):
    return ["preprocess", data_set(ws), "again.h5"], ["data.h5 is an HDF5 file already"]


@case("train: an HDF5 file that is not a tensorfuse data set")
def _(ws):
    h5py = pytest.importorskip("h5py")
    with h5py.File(ws / "other.h5", "w") as handle:
        handle["numbers"] = np.arange(3)
    return ["train", "--train-file", "other.h5", "--output", "new", *TINY], \
        ["other.h5: an HDF5 file but not a tensorfuse data set", "tensorfuse preprocess"]


@case("train: a truncated data set")
def _(ws):
    path = ws / data_set(ws)
    path.write_bytes(path.read_bytes()[:4000])
    return ["train", "--train-file", "data.h5", "--output", "new", *TINY], ["data.h5: cannot be read as HDF5"]


@case("train: a data set with another energy key than it was written with")
def _(ws):
    return (["train", "--train-file", data_set(ws), "--energy-key", "energy_pbe", "--output", "new", *TINY],
            ["data.h5 was written by tensorfuse preprocess with data.energy_key='REF_energy'", "'energy_pbe'"])


@case("train: a budget of no atoms")
def _(ws):
    return (["train", "--train-file", "train.xyz", *KEYS, "--training.batch_atoms", "0", "--output", "new"],
            ["training.batch_atoms=0", "must be >= 1"])


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_input(name, workspace, tmp_path, monkeypatch, capsys):
    setup, code = CASES[name]
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    monkeypatch.chdir(ws)
    argv, fragments = setup(ws)
    capsys.readouterr()
    before = _hashes(ws)
    assert cli(argv) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    after = _hashes(ws)
    changed = [path for path, digest in before.items() if after.get(path) != digest]
    assert not changed, f"changed or removed: {changed}"


def test_md_output_is_a_folder_and_the_old_trajectory_form_still_works(workspace, tmp_path, monkeypatch, capsys):
    """``--output`` is a folder for every command; ``md --output run.xyz`` (the old form) writes the
    trajectory there as before, with a one-line deprecation."""
    monkeypatch.chdir(tmp_path)
    model = str(workspace / "run" / "model.pt")
    start = str(workspace / "start.xyz")
    assert cli(["md", model, start, "--steps", "2", "--interval", "1", "--output", "here"]) == 0
    assert len(read("here/trajectory.xyz", ":")) == 3 and Path("here/md.log").exists()
    capsys.readouterr()
    assert cli(["md", model, start, "--steps", "2", "--interval", "1", "--output", "old.xyz"]) == 0
    err = capsys.readouterr().err
    assert "warning: --output old.xyz: naming the trajectory file is deprecated" in err
    assert len(err.strip().splitlines()) == 1
    assert len(read("old.xyz", ":")) == 3 and Path("old.log").exists()


def test_bench_prints_both_dtypes_on_the_users_structure(workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    assert cli(["bench", "run/model.pt", "start.xyz", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| float")]
    assert [r[1].strip() for r in rows] == ["float32", "float64"], out
    for r in rows:
        ms, rate = float(r[2]), float(r[3].replace(",", ""))
        assert ms > 0 and rate > 0
        assert abs(rate - 9 * 1000 / ms) < 0.02 * rate  # 9 atoms (ethanol): atom-steps/s = atoms / (s per call)


def test_the_catalogue_is_large():
    assert len(CASES) >= 40
