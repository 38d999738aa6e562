"""The ``skysearch`` typer application. Command modules (one per domain, listed in
``cli/commands.py``) register themselves on it."""

from __future__ import annotations

import errno
import gc
import sys
import traceback
import warnings
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from typer.exceptions import TyperException

from skysearch.cpus import configure_threads
from skysearch.errors import SkySearchError

app = typer.Typer(
    name="skysearch",
    help="Search satellite imagery and satellite video: ingest archives, train encoders, "
    "index into Qdrant, search by clip, frame, image or free text.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)


def _print_version(value: bool) -> None:
    if value:
        from skysearch import __version__

        typer.echo(f"skysearch {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options before any command."""


#: Parameter names (the library's, in ``SkySearchError.params``) whose flag is not simply
#: ``--`` + the name with dashes.
FLAG_NAMES = {
    "model_id": "--model",
    "model_name": "--model",  # train text-image: the architecture
    "frame_files": "--frames",
    "image_files": "--file",
    "gap_minutes": "--gap",
    "tolerance_minutes": "--tolerance",
}


def flag(param: str) -> str:
    """The CLI flag of a library parameter name: ``clip_id`` -> ``--clip-id``."""
    return FLAG_NAMES.get(param, "--" + param.replace("_", "-"))


def _register() -> None:
    """Import command modules; each adds its commands or sub-apps to ``app``."""
    from skysearch.cli import commands  # noqa: F401  (registers on import)


def console_main() -> None:
    """The ``skysearch`` command: :func:`main`, then the process ends without the interpreter's
    last collections, which walk every object torch and the store's client created (1.3-1.8 s
    after a search, 0.4 s without; bench/RESULTS.md). Nothing needs them: the process is
    ending, and files and stores are closed by then."""
    try:
        main()
    finally:
        gc.freeze()


#: Exit code of a failure that is a bug: distinct from 1 (a job's "some inputs skipped") and 2
#: (a usage error), so a scheduler never reads a crash as a partial success.
INTERNAL_ERROR = 3


#: OSErrors a user's files cause, and what to look at.
_NO_WRITE = "no permission (a read-only or another user's workspace?)"
_WRONG_KIND = "a file where a folder belongs, or the reverse"
_WORKSPACE_ERRNOS = {
    errno.EACCES: _NO_WRITE,
    errno.EPERM: _NO_WRITE,
    errno.EROFS: "the file system is read-only",
    errno.EEXIST: _WRONG_KIND,
    errno.ENOTDIR: _WRONG_KIND,
    errno.EISDIR: _WRONG_KIND,
}


def _caused_by_files(exc: OSError) -> bool:
    """An OSError of one path that the files on disk explain: a permission or read-only file
    system, or a file found where a folder belongs (or the reverse), seen on disk now. Anything
    else (two-path calls such as os.link, a claim the disk does not bear out) is a bug."""
    if exc.errno not in _WORKSPACE_ERRNOS or not exc.filename or exc.filename2:
        return False
    path = Path(exc.filename)
    if exc.errno == errno.EEXIST:  # mkdir over a file
        return path.exists() and not path.is_dir()
    if exc.errno == errno.EISDIR:
        return path.is_dir()
    if exc.errno == errno.ENOTDIR:  # a parent is a file
        return any(p.exists() and not p.is_dir() for p in path.parents)
    return True


def os_error_line(exc: OSError) -> str | None:
    """The ``error:`` text of an OSError that the disk or the user's files explain (no space, a
    permission, a read-only file system, a file where a folder belongs); None for a bug."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on device{where}: free space and re-run"
    if _caused_by_files(exc):  # the files around a job, not the job's logic
        why = _WORKSPACE_ERRNOS[exc.errno]
        return (
            f"{exc.strerror or exc}{where}: {why}; `skysearch doctor` checks the workspace; "
            "then re-run"
        )
    return None


#: What an interrupted command says: every job commits in steps a re-run resumes.
INTERRUPTED = "interrupted: re-run the same command to resume"


def failure(exc: BaseException) -> tuple[int, str]:
    """The exit code and message :func:`main` gives an exception leaving a command, for a job
    that also reports its end as JSON (``update --json``)."""
    if isinstance(exc, SkySearchError):
        return 2, exc.render(flag)
    if isinstance(exc, KeyboardInterrupt):
        return 130, INTERRUPTED
    line = os_error_line(exc) if isinstance(exc, OSError) else None
    if line is not None:
        return 2, line
    return INTERNAL_ERROR, f"unexpected failure: {type(exc).__name__}: {exc}"


def _internal_error() -> NoReturn:
    """The traceback (what a bug report needs), one line saying what to do, exit code 3."""
    traceback.print_exc()
    typer.echo(
        "error: unexpected failure (traceback above). `skysearch doctor` checks the workspace; "
        "if it finds nothing wrong, this is a bug: please report it with the traceback",
        err=True,
    )
    sys.exit(INTERNAL_ERROR)


def _help_hint(exc: Exception) -> str:
    """Where the options of the command a usage error is about are listed."""
    ctx = getattr(exc, "ctx", None)
    return f" (see {ctx.command_path} --help)" if ctx is not None else ""


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one ``warning:`` line, like the ``error:`` lines (not a file and line)."""
    typer.echo(f"warning: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: expected errors become one line on stderr and exit code 2."""
    warnings.showwarning = _warning_line
    configure_threads()  # before the commands import numpy/torch and size their pools
    _register()
    try:
        # In non-standalone mode the command's exit code (typer.Exit, Ctrl-C) is returned.
        code = app(args=argv, prog_name="skysearch", standalone_mode=False)
    except SkySearchError as exc:
        typer.echo(f"error: {exc.render(flag)}", err=True)
        sys.exit(2)
    except TyperException as exc:  # usage errors from typer's own click: message, code 2
        if not hasattr(exc, "format_message"):
            _internal_error()
        message = exc.format_message()
        if message:
            typer.echo(f"error: {message}{_help_hint(exc)}", err=True)
        else:  # a group named without a command: its help is the answer
            exc.show()
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort as exc:
        if isinstance(exc.__cause__, EOFError):  # click turns ANY EOFError into Abort
            _internal_error()
        typer.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        code = 130
    except OSError as exc:
        # Jobs write atomically or commit in steps a re-run resumes: nothing to repair, so
        # caught once here rather than around every write.
        line = os_error_line(exc)
        if line is None:
            _internal_error()
        typer.echo(f"error: {line}", err=True)
        sys.exit(2)
    except Exception:  # noqa: BLE001 - a bug, not a user's mistake: see _internal_error
        _internal_error()
    if isinstance(code, int) and code != 0:
        if code == 130:
            typer.echo(INTERRUPTED, err=True)
        sys.exit(code)
