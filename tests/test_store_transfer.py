"""Export/import between backends, the ``skysearch store`` commands, the typed application API."""

from __future__ import annotations

import json
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from skysearch.encoders.registry import register_model
from skysearch.retrieval.store import Point, open_store
from skysearch.retrieval.store.application import SkyStore, TypedHit
from skysearch.retrieval.store.embedded import EmbeddedStore
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import time_payload
from skysearch.retrieval.store.transfer import export_store, import_store

from skysearch.config import Workspace
from skysearch.errors import UsageError

T0 = datetime(2017, 9, 1, tzinfo=timezone.utc)


def _fill(store, n: int = 600) -> None:
    rng = np.random.default_rng(3)
    store.ensure_collection("clips", 24, vector_name="clipenc-a")
    store.ensure_collection("clips", 12, vector_name="clipenc-b")
    store.ensure_collection("frames", 16)
    clips = [
        Point(
            uuid.uuid5(uuid.NAMESPACE_URL, f"c{i}"),
            {"clipenc-a": rng.normal(size=24), "clipenc-b": rng.normal(size=12)},
            {
                "satellite": "goes-east",
                "channel": ["ir", "wv"],
                "length": 6,
                "gap_minutes": 60,
                **time_payload(T0 + timedelta(hours=i)),
            },
        )
        for i in range(n)
    ]
    store.upsert("clips", clips)
    frames = [
        Point(
            uuid.uuid5(uuid.NAMESPACE_URL, f"f{i}"),
            rng.normal(size=16),
            {"satellite": "coms", "channel": "ir", **time_payload(T0 + timedelta(hours=i))},
        )
        for i in range(n // 2)
    ]
    store.upsert("frames", frames)


def test_export_import_embedded_to_memory_keeps_points_and_results(tmp_path: Path):
    src = EmbeddedStore(tmp_path / "store")
    _fill(src)
    out = tmp_path / "dump.jsonl.gz"
    assert export_store(src, out, progress=False) == {"clips": 600, "frames": 300}
    dst = open_store(None, ":memory:")
    assert import_store(dst, out, progress=False) == {"clips": 600, "frames": 300}
    assert import_store(dst, out, progress=False)["clips"] == 600  # idempotent re-import
    assert dst.count("clips") == 600
    assert dst.vector_config("clips") == {"clipenc-a": 24, "clipenc-b": 12}
    rng = np.random.default_rng(9)
    filters = SearchFilters(start=T0 + timedelta(days=5), end=T0 + timedelta(days=15), k=7)
    for _ in range(3):
        q = rng.normal(size=12)
        a = src.search("clips", q, filters=filters, vector_name="clipenc-b")
        b = dst.search("clips", q, filters=filters, vector_name="clipenc-b")
        assert [h.id for h in a] == [h.id for h in b]
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-5)
        assert a[0].payload == b[0].payload
    src.close()


def spy_bulk_load(store) -> list[tuple[str, str, int]]:
    """Replace ``store.bulk_load`` by one that records (paused|restored, collection, points)."""
    seen: list[tuple[str, str, int]] = []

    @contextmanager
    def bulk_load(name: str):
        seen.append(("paused", name, store.count(name)))
        yield
        seen.append(("restored", name, store.count(name)))

    store.bulk_load = bulk_load  # type: ignore[method-assign]
    return seen


def test_import_loads_each_collection_in_bulk_load_mode_to_the_end(tmp_path: Path):
    """On a Qdrant server bulk-load mode pauses index building (indexing threshold 0) and
    restores it after; here: every point arrives while its collection is in that mode."""
    src = EmbeddedStore(tmp_path / "store")
    _fill(src)
    out = tmp_path / "dump.jsonl.gz"
    export_store(src, out, progress=False)
    src.close()
    dst = open_store(None, ":memory:")
    seen = spy_bulk_load(dst)
    import_store(dst, out, progress=False)
    assert seen == [
        ("paused", "clips", 0),
        ("paused", "frames", 0),
        ("restored", "frames", 300),
        ("restored", "clips", 600),
    ]


def test_an_index_run_writes_in_bulk_load_mode(tmp_path: Path):
    from skysearch.retrieval.indexing.pipeline import Item, Listing, run_index

    store = open_store(None, ":memory:")
    seen = spy_bulk_load(store)
    items = [Item(str(uuid.uuid5(uuid.NAMESPACE_URL, f"p{i}")), {}, i) for i in range(5)]
    listing = Listing("frames", items, chunk=2)
    run_index(None, listing, lambda chunk: (chunk, np.ones((len(chunk), 4)), []), "m", 4, store)
    assert seen == [("paused", "frames", 0), ("restored", "frames", 5)]


def test_parquet_export_is_read_by_duckdb_with_exact_vectors(tmp_path: Path):
    duckdb = pytest.importorskip("duckdb", reason="duckdb is in the dev extra")
    from skysearch.retrieval.store.parquet_export import export_parquet

    src = EmbeddedStore(tmp_path / "store")
    _fill(src, n=100)
    out = tmp_path / "export"
    assert export_parquet(src, out, progress=False) == {"clips": 100, "frames": 50}
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet")) == [
        "clips/clipenc-a.parquet",
        "clips/clipenc-b.parquet",
        "frames/default.parquet",
    ]
    stored = {r.id: r for r in src.scroll("clips", with_vectors=True)}
    rows = duckdb.sql(
        f"SELECT id, vector, time, channel, length FROM '{out}/clips/clipenc-b.parquet' "
        "WHERE time >= TIMESTAMPTZ '2017-09-03 00:00:00+00' ORDER BY time"
    ).fetchall()
    assert len(rows) == 100 - 48
    for pid, vector, when, channel, length in rows:
        assert np.array_equal(np.float32(vector), np.float32(stored[pid].vectors["clipenc-b"]))
        assert (channel, length) == (["ir", "wv"], 6)
        assert when.astimezone(timezone.utc) == datetime.fromisoformat(
            stored[pid].payload["time"].replace("Z", "+00:00")
        )
    frames = out / "frames" / "default.parquet"
    assert duckdb.sql(f"SELECT DISTINCT len(vector) FROM '{frames}'").fetchall() == [(16,)]
    src.close()


def test_import_rejects_a_file_that_is_not_an_export(tmp_path: Path):
    from skysearch.errors import UsageError

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    with pytest.raises(UsageError, match="header"):
        import_store(open_store(None, ":memory:"), bad, progress=False)


def test_cli_store_export_import_info(cli, tmp_path: Path):
    src = EmbeddedStore(tmp_path / "a" / "store")
    _fill(src, n=200)
    src.close()
    out = tmp_path / "dump.jsonl"
    r = cli("store", "export", "-w", tmp_path / "a", "--out", out, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["points"] == {"clips": 200, "frames": 100}
    before = out.read_bytes()
    again = cli("store", "export", "-w", tmp_path / "a", "--out", out)  # it overwrote, silently
    assert again.exit_code == 2 and "it exists (an older export?)" in again.stderr
    assert out.read_bytes() == before
    for fmt in ("jsonl", "parquet"):  # a .parquet name made a folder or a JSON Lines file
        named = cli("store", "export", "-w", tmp_path / "a", "-o", tmp_path / "x.parquet",
                    "--format", fmt)  # fmt: skip
        assert named.exit_code == 2 and "x.parquet" in named.stderr, named.stderr
        assert "name a folder" in named.stderr or "JSON Lines" in named.stderr
    assert not (tmp_path / "x.parquet").exists()
    register_model(Workspace(tmp_path / "b"), "clipenc-a", "clip")
    with EmbeddedStore(tmp_path / "b" / "store") as held_before:  # not in the file: not named
        held_before.ensure_collection("scenes", 4, vector_name="elsewhere")
    r = cli("store", "import", out, "-w", tmp_path / "b", "--json")
    assert r.exit_code == 0, r.stderr
    # vectors no model here made answer no search: said (not the plain API's "default")
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and "imported vectors of clipenc-b were made by models not" in warned[0]
    assert str(tmp_path / "b" / "models") in warned[0] and "elsewhere" not in warned[0], warned
    r = cli("store", "info", "-w", tmp_path / "b", "--json")
    assert r.exit_code == 0, r.stderr
    infos = {c["name"]: c for c in json.loads(r.stdout.strip().splitlines()[-1])["collections"]}
    assert infos["clips"]["points"] == 200 and infos["frames"]["points"] == 100
    assert infos["clips"]["vectors"] == {"clipenc-a": 24, "clipenc-b": 12}
    assert "time" in infos["clips"]["payload_indexes"]
    r = cli("store", "optimize", "-w", tmp_path / "b", "-c", "frames")
    assert r.exit_code == 0 and "optimized frames in " in r.stderr, r.stderr
    r = cli("store", "optimize", "-w", tmp_path / "missing")  # a mistyped -w: said
    assert r.exit_code == 2 and "missing does not exist" in r.stderr, r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("store", "optimize", "-w", tmp_path / "empty", "--json")
    assert r.exit_code == 0 and "nothing to optimize" in r.stderr, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"optimized": {}}


def test_cli_errors_are_one_line(cli, tmp_path: Path, monkeypatch):
    r = cli("store", "info", "-w", tmp_path, "-c", "nope")
    assert r.exit_code == 2
    assert r.stderr.strip().startswith("error: collection 'nope' does not exist")
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:1")
    r = cli("store", "info", "-w", tmp_path)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: cannot reach Qdrant at http://127.0.0.1:1"
    )


def _best_per_day(store, collection: str, query: np.ndarray, vector_name: str) -> list[str]:
    """Brute force: ids of the best point of each day, best day first."""
    records = list(store.scroll(collection, with_vectors=True))
    q = query / np.linalg.norm(query)
    score = {
        r.id: float(np.dot(r.vectors[vector_name], q) / np.linalg.norm(r.vectors[vector_name]))
        for r in records
    }
    best: dict[str, str] = {}
    for r in sorted(records, key=lambda r: -score[r.id]):
        best.setdefault(r.payload["day"], r.id)
    return list(best.values())


def test_typed_api_returns_search_results(tmp_path: Path):
    with SkyStore.open(workspace=tmp_path) as sky:  # the workspace's embedded engine
        _fill(sky.store, n=100)
        query = np.random.default_rng(4).normal(size=24)
        filters = SearchFilters(k=3, one_per_day=True)
        hits = sky.search_clips(query, filters, model_id="clipenc-a")
        assert len(hits) == 3 and all(isinstance(h, TypedHit) for h in hits)
        assert [h.id for h in hits] == _best_per_day(sky.store, "clips", query, "clipenc-a")[:3]
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert hits[0].channels == ["ir", "wv"] and hits[0].time.tzinfo is not None
        assert len({h.time.date() for h in hits}) == 3
        frames = sky.search_frames(np.ones(16), SearchFilters(satellites=("coms",), k=2))
        assert [h.channels for h in frames] == [["ir"], ["ir"]]
        assert [h.satellite for h in frames] == ["coms", "coms"]
    assert (tmp_path / "store" / "clips").is_dir()


def test_an_export_cut_short_at_a_line_boundary_is_refused_after_loading(tmp_path: Path):
    """An interrupted copy (`head`, a full disk) cuts at a line: the headers' point counts and
    collection list show it; what was read is loaded (a re-import is idempotent), then one
    error says the file is not whole."""
    import gzip

    src = EmbeddedStore(tmp_path / "store")
    _fill(src, n=40)
    out = tmp_path / "dump.jsonl.gz"
    assert export_store(src, out, ["frames", "clips", "frames"], progress=False) == {
        "frames": 20,
        "clips": 40,
    }
    src.close()
    lines = gzip.decompress(out.read_bytes()).splitlines(keepends=True)
    for keep, why in ((30, "clips: 8 of 40 points"), (21, "clips: missing")):
        cut = tmp_path / f"cut{keep}.jsonl"
        cut.write_bytes(b"".join(lines[:keep]))
        dst = open_store(None, ":memory:")
        with pytest.raises(UsageError, match=f"is not whole \\({why}\\)"):
            import_store(dst, cut, progress=False)
        assert dst.count("frames") == 20  # what it held is in


def test_a_gzip_export_cut_mid_stream_loads_what_it_holds_and_leaves_no_empty_collection(
    tmp_path: Path,
):
    """A .gz copied halfway ends inside its stream: the points before the cut are loaded (they
    were read, so a smaller batch than one upload is not dropped) and one error says it was cut
    short; a collection the import made and put nothing in is removed again."""
    import gzip

    src = EmbeddedStore(tmp_path / "store")
    _fill(src, n=40)
    out = tmp_path / "dump.jsonl.gz"
    export_store(src, out, ["frames", "clips"], progress=False)
    src.close()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size * 2 // 3])
    readable = 0
    with pytest.raises(EOFError), gzip.open(cut, "rb") as fh:
        for _ in fh:
            readable += 1
    dst = open_store(None, ":memory:")
    with pytest.raises(UsageError, match="before its gzip stream does: it was cut short") as e:
        import_store(dst, cut, progress=False)
    assert dst.count("frames") + dst.count("clips") == readable - 2  # two header lines
    assert e.value.hint.startswith(
        f"the {readable - 2} points before it were imported (frames 20, clips {readable - 22})"
    )
    assert dst.count("clips") > 0

    header = gzip.decompress(out.read_bytes()).splitlines(keepends=True)[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(header + b"not json\n")
    fresh = open_store(None, ":memory:")
    with pytest.raises(UsageError, match="bad.jsonl:2 is not JSON"):
        import_store(fresh, bad, progress=False)
    assert fresh.collections() == []


def test_a_plain_export_cut_mid_line_says_what_went_in(tmp_path: Path):
    """A .jsonl cut inside a line: its last line is not JSON; the points before it are in and
    the error says how many, as for a .gz cut short."""
    src = EmbeddedStore(tmp_path / "store")
    _fill(src, n=40)
    out = tmp_path / "dump.jsonl"
    export_store(src, out, ["frames", "clips"], progress=False)
    src.close()
    lines = out.read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:30]) + lines[30][:50])  # frames 20, clips 8, then half
    dst = open_store(None, ":memory:")
    with pytest.raises(UsageError) as caught:
        import_store(dst, cut, progress=False)
    assert str(caught.value) == (
        f"{cut}:31 is not JSON (truncated export?): the 28 points before it were imported "
        "(frames 20, clips 8); export again and import the whole file (importing again is "
        "idempotent)"
    )
    assert (dst.count("frames"), dst.count("clips")) == (20, 8)


def test_a_parquet_export_without_its_format_is_named(cli, tmp_path: Path):
    from skysearch.retrieval.store.parquet_export import export_parquet

    src = EmbeddedStore(tmp_path / "store")
    _fill(src, n=20)
    export_parquet(src, tmp_path / "pq", progress=False)
    src.close()
    for given in (tmp_path / "pq" / "frames" / "default.parquet", tmp_path / "pq"):
        done = cli("store", "import", given, "-w", tmp_path / "ws")
        assert (done.exit_code, done.stderr) == (
            2,
            f"error: {given} is a Parquet export, not JSON Lines: import it with --format "
            "parquet\n",
        )
    assert not (tmp_path / "ws" / "store").exists()
