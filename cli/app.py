"""The ``skysearch`` typer application: registers one module per command group."""

from __future__ import annotations

import sys

import typer

from skysearch.errors import SkySearchError

app = typer.Typer(
    name="skysearch",
    help="Search satellite imagery and satellite video: ingest archives, train encoders, "
    "index into Qdrant, search by clip, image or free text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register() -> None:
    """Import command modules; each adds its commands or sub-apps to ``app``."""
    from skysearch.cli import commands  # noqa: F401  (registers on import)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: expected errors become one line on stderr and exit code 2."""
    _register()
    try:
        app(args=argv, prog_name="skysearch", standalone_mode=False)
    except SkySearchError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted: re-run the same command to resume", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
