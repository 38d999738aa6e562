"""The allowed import directions, written down once and checked on every run.

A module may import from its own layer and the layers below it, never from a layer above:
a lower layer that reaches up (even lazily, inside a function) ties the kernel to the CLI or
the trainers to the evaluation. ``docs/architecture.md`` explains the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Source folder -> its package (pyproject's package-dir).
PACKAGES = {
    "skysearch": "skysearch",
    "ingest": "skysearch.ingest",
    "encoders": "skysearch.encoders",
    "retrieval": "skysearch.retrieval",
    "workflows": "skysearch.workflows",
    "cli": "skysearch.cli",
}

#: Lowest first. A module belongs to the longest prefix that names it.
LAYERS = [
    ("kernel", ["skysearch"]),  # errors, config, time, atomic writes
    ("ingest", ["skysearch.ingest"]),
    ("encoders", ["skysearch.encoders"]),
    ("store", ["skysearch.retrieval", "skysearch.retrieval.store"]),
    ("indexing and search", ["skysearch.retrieval.indexing", "skysearch.retrieval.search"]),
    (
        "evaluation, service and client",
        ["skysearch.retrieval.evaluation", "skysearch.retrieval.service", "skysearch.client"],
    ),
    ("workflows", ["skysearch.workflows"]),
    ("cli", ["skysearch.cli"]),
]

#: Entry points may import the top: ``python -m skysearch`` runs the CLI.
ENTRY_POINTS = {"skysearch.__main__"}


def layer_of(module: str) -> int:
    best, level = "", -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, level = prefix, index
    return level


def module_name(path: Path) -> str:
    folder, *rest = path.relative_to(REPO).with_suffix("").parts
    return ".".join([PACKAGES[folder], *(p for p in rest if p != "__init__")])


def imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in out if name.split(".")[0] == "skysearch"]


def sources() -> list[Path]:
    return sorted(p for folder in PACKAGES for p in (REPO / folder).rglob("*.py"))


def test_every_module_has_a_layer():
    assert len(sources()) > 60
    assert all(layer_of(module_name(p)) >= 0 for p in sources())


def test_no_module_imports_a_higher_layer():
    wrong = []
    for path in sources():
        module = module_name(path)
        if module in ENTRY_POINTS:
            continue
        for line, target in imports(path):
            if layer_of(target) > layer_of(module):
                wrong.append(
                    f"{path.relative_to(REPO)}:{line} {module} ({LAYERS[layer_of(module)][0]}) "
                    f"imports {target} ({LAYERS[layer_of(target)][0]})"
                )
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    """The walk finds lazy imports inside functions, the kind that crept in before."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from skysearch.cli.app import app\n    return app\n")
    assert imports(source) == [(2, "skysearch.cli.app")]
    assert layer_of("skysearch.cli.app") > layer_of("skysearch.encoders.training.text_image")
    assert layer_of("skysearch.retrieval.store.filters") < layer_of("skysearch.retrieval.search")
