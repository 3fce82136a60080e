"""The README's set-up commands are the ones CI runs; its example commands work (the pages of the
manual are tested in test_docs.py)."""

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
