"""bench/peers.py end to end on a small N, with the engines that need no `bench` extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def run_peers(engines: str, env: dict[str, str] | None = None) -> dict:
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "peers.py"), "--n", "2000", "--queries", "20"]
        + ["--engines", engines, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| engine |" in proc.stderr  # the table
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_ours_beside_an_exact_int8_scan() -> None:
    result = run_peers("ours,numpy-int8")
    assert result["n"] == 2000
    # the same built store with the window scan off is measured too, after ours, and again
    # in a fresh process that opens it (what a service holds)
    names = ["ours", "ours-engine-only", "ours-reopened", "numpy-int8"]
    assert list(result["engines"]) == names
    assert result["engines"]["ours-engine-only"]["variant_of"] == "ours"
    reopened = result["engines"]["ours-reopened"]
    assert reopened["variant_of"] == "ours" and reopened["filtered"]["recall_at_10"] == 1.0
    assert reopened["rss_anon_mb"] > 0 and reopened["rss_file_mb"] > 0
    # the peak covers what the process holds at the end (heap and mapped files)
    assert reopened["peak_rss_mb"] >= reopened["rss_anon_mb"] + reopened["rss_file_mb"] - 1
    # its mapped pages by part of the store: the scan copy was read, the rest is libraries
    parts = reopened["rss_file_parts_mb"]
    assert parts["scan copy"] > 0 and parts["outside the store"] > 0
    assert sum(parts.values()) <= reopened["rss_file_mb"] * 1.2 + 5
    assert set(result["engines"]["numpy-int8"]["rss_file_parts_mb"]) == {"outside the store"}
    assert len(result["load_average"]["start"]) == 3
    for name, engine in result["engines"].items():
        for mode in ("filtered", "unfiltered"):
            stats = engine[mode]
            assert set(stats) == {"p50_ms", "p95_ms", "cpu_ms", "recall_at_10"}, name
            assert 0 < stats["p50_ms"] <= stats["p95_ms"], name
            assert stats["cpu_ms"] >= 0, name
        assert engine["build_s"] >= 0
        assert engine["peak_rss_mb"] >= engine["input_rss_mb"] > 0
    ours, scan = result["engines"]["ours"], result["engines"]["numpy-int8"]
    assert scan["filtered"]["recall_at_10"] == scan["unfiltered"]["recall_at_10"] == 1.0
    assert ours["filtered"]["recall_at_10"] == 1.0  # windows this small are scanned exactly
    assert result["engines"]["ours-engine-only"]["filtered"]["recall_at_10"] >= 0.9
    assert ours["unfiltered"]["recall_at_10"] >= 0.9
    assert ours["disk_mb"] > 0 and scan["disk_mb"] == 0


def test_a_missing_peer_package_is_reported_and_the_others_run(tmp_path: Path) -> None:
    (tmp_path / "hnswlib.py").write_text("raise ImportError('not installed')\n")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    result = run_peers("hnswlib,numpy-int8", env)
    assert result["engines"]["hnswlib"] == {"unavailable": "pip install 'skysearch[bench]'"}
    assert result["engines"]["numpy-int8"]["filtered"]["recall_at_10"] == 1.0
