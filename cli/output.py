"""Rendering helpers shared by the command modules.

Convention: with ``--json`` a command prints exactly one JSON object, last, on stdout;
progress bars and logs go to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer


def emit_json(payload: Any) -> None:
    """Print the command's machine-readable result as one JSON object on stdout."""
    sys.stdout.write(json.dumps(payload, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def info(message: str) -> None:
    """A human-readable line on stderr (never mixed into --json stdout)."""
    typer.echo(message, err=True)


def result_text(text: str, json_out: bool) -> None:
    """A command's human-readable result: on stdout (so it can be piped or saved), unless
    ``--json`` owns stdout, then on stderr."""
    typer.echo(text, err=json_out)


def per_name(counts: dict[str, int]) -> str:
    """``{"clips": 20, "frames": 12}`` -> ``clips 20, frames 12`` (none: "none")."""
    return ", ".join(f"{name} {n}" for name, n in counts.items()) or "none"


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Plain aligned text table (no colours: pipes and logs stay readable)."""
    cells = [[str(row.get(col, "")) for col in columns] for row in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    lines = ["  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)
