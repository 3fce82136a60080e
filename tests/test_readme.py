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
