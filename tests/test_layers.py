"""The package's layers only point down: the algebra, layers, data and model never import the
applications built on them (training, dynamics, interfaces, the command line) or test helpers."""

import ast
from pathlib import Path

import tensorfuse

PACKAGE = Path(tensorfuse.__file__).parent
# lowest first: a module may import its own layer and those below it
LAYERS = [("utils",), ("o3",), ("nn", "data"), ("model",)]
APPLICATIONS = ("train", "namd", "qm", "adaptive", "md", "calculator", "lammps", "ipi", "bench", "export", "testing",
                "datasets", "_cli", "_selfcheck")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tensorfuse."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("tensorfuse."))
    return names


def test_lower_layers_never_import_higher_ones_or_test_helpers():
    wrong = []
    for level, layer in enumerate(LAYERS):
        allowed = {name for below in LAYERS[: level + 1] for name in below}
        higher = {name for above in LAYERS[level + 1 :] for name in above} | set(APPLICATIONS)
        for package in layer:
            for path in sorted((PACKAGE / package).rglob("*.py")):
                for name in _imports(path) - allowed:
                    if name in higher:
                        wrong.append(f"{path.relative_to(PACKAGE)} imports tensorfuse.{name}")
    assert not wrong, wrong


def test_every_application_takes_a_model_through_one_loader():
    """``tensorfuse.model.load_potential``: nothing else reaches into another module's private loader."""
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "_as_model" not in text, path
        if path.parent.name != "model":
            assert "from tensorfuse.export import" not in text, path
