"""The console entry point turns exits, interrupts and expected errors into exit codes."""

from __future__ import annotations

import pytest
import typer
from skysearch.cli import app as app_module

from skysearch.errors import UsageError


@pytest.fixture
def fake_app(monkeypatch):
    # Import the real command modules first: they register on whatever ``app`` is at import
    # time, and must not land on the fake for the rest of the test session.
    app_module._register()
    fake = typer.Typer()

    @fake.command()
    def run(mode: str) -> None:
        if mode == "exit3":
            raise typer.Exit(3)
        if mode == "interrupt":
            raise KeyboardInterrupt
        if mode == "usage":
            raise UsageError("no such channel 'xx': use one of ir, wv")
        typer.echo("ok")

    @fake.command()
    def other() -> None:
        """A second command so `run` is a subcommand, as in the real app."""

    monkeypatch.setattr(app_module, "app", fake)
    return fake


@pytest.mark.parametrize(
    ("mode", "code", "err_text"),
    [
        ("ok", 0, ""),
        ("exit3", 3, ""),
        ("interrupt", 130, "interrupted"),
        ("usage", 2, "error: no such channel 'xx': use one of ir, wv"),
    ],
)
def test_exit_codes(fake_app, cli, mode, code, err_text):
    result = cli("run", mode)
    assert result.exit_code == code
    assert err_text in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_option_is_a_usage_error(fake_app, cli):
    result = cli("run", "ok", "--nope")
    assert result.exit_code == 2
    assert "--nope" in result.stderr


@pytest.mark.parametrize("json_out", [False, True])
def test_result_text_goes_to_stdout_unless_json_owns_it(capsys, json_out):
    from skysearch.cli.output import result_text

    result_text("rank  score", json_out)
    out = capsys.readouterr()
    assert (out.err if json_out else out.out) == "rank  score\n"
    assert (out.out if json_out else out.err) == ""
