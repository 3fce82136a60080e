"""MkDocs hooks: the pages generated from the code, so that nothing in them is written twice.

* ``reference/configuration.md``: every setting of ``tensorfuse train`` and ``tensorfuse
  adaptive`` (key, type, default, meaning) from the typed configuration dataclasses
  (:func:`tensorfuse.utils._dataclasses.describe_fields`), and the model presets;
* ``reference/cli.md``: every command's ``--help`` from the parser;
* ``reference/results.md`` and one page per ``benchmarks/results/*.md`` (figures included).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARKERS = {"configuration": "<!-- generated: configuration -->", "cli": "<!-- generated: cli -->",
           "results": "<!-- generated: results -->"}


def configuration_sections() -> list[tuple[str, type]]:
    """(YAML section, dataclass) of every section a user writes, in reading order."""
    from tensorfuse.adaptive._config import (AdaptiveConfig, DynamicsOptions, LabellerOptions, SelectionOptions,
                                             StopOptions)
    from tensorfuse.model._config import CormorantOptions, MaceOptions, ModelConfig
    from tensorfuse.train._config import DataConfig, OptimConfig, TrainConfig

    return [("train: top level", TrainConfig), ("train: data", DataConfig), ("train: model", ModelConfig),
            ("train: model.mace", MaceOptions), ("train: model.cormorant", CormorantOptions),
            ("train: training", OptimConfig), ("adaptive: top level", AdaptiveConfig),
            ("adaptive: dynamics", DynamicsOptions), ("adaptive: selection", SelectionOptions),
            ("adaptive: labeller", LabellerOptions), ("adaptive: stop", StopOptions)]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def configuration_reference() -> str:
    from tensorfuse.model._config import PRESETS
    from tensorfuse.utils._dataclasses import describe_fields

    parts = []
    for title, cls in configuration_sections():
        parts += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for f in describe_fields(cls):
            parts.append(f"| `{f.name}` | `{_cell(f.type)}` | `{_cell(f.default)}` | {_cell(f.meaning)} |")
        parts.append("")
    parts += ["## Model presets", "", "`model.preset` sets these fields; any field given beside it wins.", "",
              "| preset | settings |", "|---|---|"]
    for name, values in PRESETS.items():
        parts.append(f"| `{name}` | " + ", ".join(f"`{k}: {_cell(v)}`" for k, v in values.items()) + " |")
    return "\n".join(parts) + "\n"


def cli_reference() -> str:
    import argparse

    from tensorfuse._cli import build_parser

    parser = build_parser()
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in commands.choices.items():
        sub.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
        parts += [f"## tensorfuse {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def _title(path: Path) -> str:
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return path.stem


def results_index() -> str:
    lines = ["| file | what it measured |", "|---|---|"]
    for path in sorted(RESULTS.glob("*.md")):
        lines.append(f"| [{path.name}](results/{path.name}) | {_cell(_title(path))} |")
    return "\n".join(lines) + "\n"


def on_files(files, config):
    """Add the results files (and their figures) as pages under ``reference/results/``."""
    from mkdocs.structure.files import File

    for path in sorted(RESULTS.glob("*.md")) + sorted(RESULTS.glob("*.png")):
        uri = f"reference/results/{path.name}"
        if path.suffix == ".md":
            text = path.read_text()
            if not text.lstrip().startswith("#"):
                text = f"# {path.stem}\n\n" + text
            files.append(File.generated(config, uri, content=text))
        else:
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    generators = {"configuration": configuration_reference, "cli": cli_reference, "results": results_index}
    for key, marker in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generators[key]())
    return markdown

