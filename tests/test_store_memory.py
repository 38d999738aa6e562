"""The embedded store's memory tiers (EdgeIndexParams.memory): what a process that opens a
store holds resident before its first search."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from skysearch.retrieval.store import Point
from skysearch.retrieval.store.embedded import EdgeIndexParams, EmbeddedStore

from skysearch.errors import UsageError

N, DIM = 20_000, 64
BENCH = Path(__file__).resolve().parents[1] / "bench"
#: run in a fresh process: open the store, report MB of its vector files resident in memory
#: (bench/workload.py's reader of /proc/self/smaps, which bench/peers.py reports with)
PROBE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from workload import mapped_rss_mb
from skysearch.retrieval.store.embedded import EmbeddedStore
store = EmbeddedStore(sys.argv[1])
store.info("c")  # opens the shard
print(json.dumps(mapped_rss_mb(Path(sys.argv[1])).get("vectors", 0.0)))
"""


def resident_mb(root: Path) -> float:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(root), str(BENCH)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_cold_vectors_stay_on_disk_until_searched_cached_ones_are_read_in(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    mb = {}
    for memory in ("cold", "cached"):
        root = tmp_path / memory
        store = EmbeddedStore(root, EdgeIndexParams(memory=memory))
        store.ensure_collection("c", DIM)
        store.upsert("c", (Point(str(uuid.UUID(int=i + 1)), v, {}) for i, v in enumerate(vectors)))
        store.optimize("c")
        store.close()
        mb[memory] = resident_mb(root)
    vectors_mb = N * DIM * 4 / 2**20
    assert mb["cached"] >= vectors_mb / 2, mb
    assert mb["cold"] <= vectors_mb / 10, mb
    # the id tracker is mapped too when cold (payloads are, in every tier); cached keeps the
    # engine's default
    for memory, expected in (("cold", "cold"), ("cached", None)):
        config = json.loads(next((tmp_path / memory).rglob("edge_config.json")).read_text())
        assert config["payload_memory"] == "cold"
        assert config.get("id_tracker_memory") == expected


def test_an_unknown_memory_tier_is_a_usage_error():
    with pytest.raises(UsageError, match="memory tier 'pinned'"):
        EdgeIndexParams(memory="pinned")
