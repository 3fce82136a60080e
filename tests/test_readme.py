"""The README's set-up commands are the ones CI runs."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = [line for line in ci.splitlines() if "pytest" in line]
    assert len(command) == 1 and command[0] in readme


def test_readme_installs_cpu_torch_before_the_package():
    readme = (ROOT / "README.md").read_text()
    for line in readme.splitlines():
        if "pip install -e" in line:
            assert line.index("torch==2.13.0") < line.index("pip install -e")


def test_the_readme_resume_example_works_as_written(tmp_path, monkeypatch):
    """`tensorfuse train --output runs/x --resume` continues a run from its folder alone (here one
    killed before its first epoch: only its configuration is stored)."""
    import csv
    import shlex

    from tensorfuse import TrainConfig
    from tensorfuse._cli import main as cli
    from tensorfuse.train._run_folder import RunFolder

    monkeypatch.chdir(tmp_path)
    config = TrainConfig(data={"max_train_frames": 8, "max_valid_frames": 2},
                         model={"preset": "small", "channels": 4, "radial_mlp": [8], "l_max_edge": 1},
                         training={"max_epochs": 2}, output="runs/x")
    RunFolder("runs/x").store_config(config)
    readme = (ROOT / "README.md").read_text().splitlines()
    line = next(line for line in readme if line.startswith("tensorfuse train --output runs/x --resume "))
    assert cli(shlex.split(line, comments=True)[1:]) == 0
    with open(tmp_path / "runs/x/metrics.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["1", "2"]


def test_the_readme_yaml_configuration_is_valid():
    import yaml

    from tensorfuse import Statistics, TrainConfig

    block = (ROOT / "README.md").read_text().split("```yaml\n", 1)[1].split("```", 1)[0]
    sections = yaml.safe_load(block)
    del sections["data"]["train_file"], sections["data"]["test_file"]  # files of the reader's own
    model = TrainConfig.from_dict(sections).model_config([1, 8], Statistics())
    assert model.channels == 64 and model.mace.product_basis == "symmetric" and model.mace.correlation == 3


def _photodynamics_commands() -> list[list[str]]:
    """The photodynamics example's commands, lines joined, ``$DATA`` as the bundled file."""
    import shlex

    from tensorfuse.datasets import path

    text = (ROOT / "README.md").read_text().split("## Photodynamics", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    text = text.replace("\\\n", " ").replace("$DATA", str(path("ethylene_casscf")))
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.startswith("tensorfuse ")]


def test_the_readme_photodynamics_example_parses_and_its_data_exist():
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


def test_the_readme_photodynamics_example_runs_as_written(tmp_path, monkeypatch):
    """The whole example with a shorter training and ensemble (the minutes of the README are for
    a useful model): the trained model has a minimum to sample, the run and the resume work."""
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
