"""The bench scripts that have a small setting run end to end on it (bench/catalog.py had
fallen behind the catalog's schema unnoticed); bench/peers.py has its own test."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bench(name: str, *args: str) -> dict:
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / name), *args, "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert {len(result["load_average"][k]) for k in ("start", "end")} == {3}
    return result


def test_catalog_bench_reads_agree_on_a_small_catalog():
    result = bench("catalog.py", "--rows", "2000", "--parts", "2", "--repeat", "1")
    rows = {name: q["rows_out"] for name, q in result["queries"].items()}
    assert rows == {"frame_id_of_all": 2000, "one_day_one_channel": 144, "every_column": 2000}


def test_store_bench_finds_the_exact_neighbours_on_a_small_store():
    result = bench("store.py", "--n", "2000", "--queries", "20")
    recall = {k: result[k]["recall_at_10"] for k in ("unfiltered", "filtered", "one_per_day")}
    assert result["n"] == 2000 and min(recall.values()) >= 0.99, recall
