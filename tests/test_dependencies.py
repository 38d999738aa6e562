"""Every third-party package the code imports is declared in pyproject's dependencies.

A package that only arrives as another one's dependency (pydantic through fastapi) may vanish
or change major version under us on the next release of that other package.
"""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["skysearch", "ingest", "encoders", "retrieval", "workflows", "cli"]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_level_modules() -> dict[str, str]:
    """Top-level module -> first file importing it, for every module outside the stdlib."""
    found: dict[str, str] = {}
    for folder in SOURCES:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "skysearch":
                        found.setdefault(top, str(path.relative_to(REPO)))
    return found


#: Extras the code may import: optional engines, imported only by their own module (which
#: names the install command when the package is missing).
OPTIONAL_EXTRAS = ("ray",)


def declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in OPTIONAL_EXTRAS:
        specs += project["optional-dependencies"][extra]
    return {normalize(Requirement(spec).name) for spec in specs}


def test_every_imported_package_is_a_declared_dependency():
    modules = imported_top_level_modules()
    assert {"numpy", "pyarrow", "torch"} <= set(modules)  # the scan sees the code
    distributions = packages_distributions()
    wanted = declared()
    missing = sorted(
        f"{module} (imported by {where})"
        for module, where in modules.items()
        if not {normalize(d) for d in distributions.get(module, [module])} & wanted
    )
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
