"""What the workspace-integrity tests share: the bundled sample, a small ingested workspace,
and the one-error-line check."""

from __future__ import annotations

from pathlib import Path

from conftest import SAMPLE_DATA

SAMPLE_IR = SAMPLE_DATA / "goes-irma-2017" / "infrared"


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def ingested_workspace(root: Path) -> Path:
    """The sample's 60 IR frames ingested into ``root``, with their 6x60m clips."""
    from skysearch.cli.app import main

    main(["ingest", str(SAMPLE_IR), "-w", str(root), "--workers", "1"])
    main(["clips", "--length", "6", "--gap", "60", "-w", str(root)])
    return root
