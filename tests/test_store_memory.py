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
#: run in a fresh process: open the store, report KB of its vector files resident in memory
PROBE = """
import json, sys
from skysearch.retrieval.store.embedded import EmbeddedStore
root = sys.argv[1]
store = EmbeddedStore(root)
store.info("c")  # opens the shard
resident, path = 0, None
for line in open("/proc/self/smaps"):
    head = line.split()
    if len(head) >= 6 and "-" in head[0] and not head[0].endswith(":"):
        path = head[5] if head[5].startswith(root) and "vector_storage" in head[5] else None
    elif path and line.startswith("Rss:"):
        resident += int(head[1])
print(json.dumps(resident))
"""


def resident_kb(root: Path) -> int:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(root)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_cold_vectors_stay_on_disk_until_searched_cached_ones_are_read_in(tmp_path):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(N, DIM)).astype(np.float32)
    kb = {}
    for memory in ("cold", "cached"):
        root = tmp_path / memory
        store = EmbeddedStore(root, EdgeIndexParams(memory=memory))
        store.ensure_collection("c", DIM)
        store.upsert("c", (Point(str(uuid.UUID(int=i + 1)), v, {}) for i, v in enumerate(vectors)))
        store.optimize("c")
        store.close()
        kb[memory] = resident_kb(root)
    vectors_kb = N * DIM * 4 // 1024
    assert kb["cached"] >= vectors_kb // 2, kb
    assert kb["cold"] <= vectors_kb // 10, kb


def test_an_unknown_memory_tier_is_a_usage_error():
    with pytest.raises(UsageError, match="memory tier 'pinned'"):
        EdgeIndexParams(memory="pinned")
