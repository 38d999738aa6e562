"""``store import --format parquet``: the Parquet a store export (or an index run's workers)
wrote loads back into an empty store with the same points and collection config; loading
again, or loading a part and then the whole, ends the same; bad files are refused before
anything is written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from skysearch.retrieval.store import open_store
from skysearch.retrieval.store.embedded import EmbeddedStore
from skysearch.retrieval.store.parquet_export import export_parquet
from skysearch.retrieval.store.parquet_import import import_parquet
from test_store_transfer import _fill, spy_bulk_load

from skysearch.errors import UsageError


@pytest.fixture()
def exported(tmp_path: Path) -> tuple[dict, Path]:
    """A filled embedded store's content (collection -> id -> (vectors, payload), vector
    config) and its Parquet export."""
    src = EmbeddedStore(tmp_path / "src")
    _fill(src, n=150)
    out = tmp_path / "export"
    export_parquet(src, out, progress=False)
    content = {name: snapshot(src, name) for name in src.collections()}
    src.close()
    return content, out


def snapshot(store, name: str) -> tuple[dict, dict]:
    points = {
        r.id: ({k: np.float32(v).tolist() for k, v in r.vectors.items()}, r.payload)
        for r in store.scroll(name, with_vectors=True)
    }
    return points, store.vector_config(name)


def test_parquet_export_then_import_into_an_empty_store_gives_the_same_points(exported, tmp_path):
    content, out = exported
    dst = EmbeddedStore(tmp_path / "dst")
    assert import_parquet(dst, out, progress=False) == {"clips": 300, "frames": 75}
    assert sorted(dst.collections()) == sorted(content)
    for name, (points, config) in content.items():
        assert snapshot(dst, name) == (points, config)  # ids, payloads, exact float32 vectors
    assert dst.info("clips").payload_indexes  # created with the collection
    dst.close()


def test_loading_a_part_then_all_then_all_again_ends_with_the_same_points(exported, tmp_path):
    content, out = exported
    dst = EmbeddedStore(tmp_path / "dst")
    import_parquet(dst, out / "clips" / "clipenc-b.parquet", progress=False)  # a killed load
    assert dst.vector_config("clips") == {"clipenc-b": 12}
    for _ in range(2):
        import_parquet(dst, out, progress=False)
        for name, (points, config) in content.items():
            assert snapshot(dst, name) == (points, config)
    dst.close()


def test_every_point_is_loaded_in_bulk_load_mode(exported):
    _, out = exported
    dst = open_store(None, ":memory:")
    seen = spy_bulk_load(dst)
    import_parquet(dst, out, progress=False)
    assert seen == [
        ("paused", "clips", 0),
        ("paused", "frames", 0),
        ("restored", "frames", 75),
        ("restored", "clips", 150),
    ]


def test_the_import_streams_record_batches(exported, monkeypatch):
    """The file is read in batches of ``batch_size`` rows, never whole."""
    _, out = exported
    sizes: list[int] = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in real(self, *args, **kwargs):
            sizes.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    import_parquet(open_store(None, ":memory:"), out / "frames", progress=False, batch_size=32)
    assert sizes == [32, 32, 11]


def test_bad_files_are_refused_before_anything_is_written(exported, tmp_path):
    _, out = exported
    not_parquet = tmp_path / "text.parquet"
    not_parquet.write_text("hello\n")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"id": ["a"], "vector": [[1.0, 2.0]]}), plain)
    wrong_column = tmp_path / "wrong.parquet"
    schema = pq.read_schema(out / "frames" / "default.parquet")
    table = pq.read_table(out / "frames" / "default.parquet")
    pq.write_table(table.drop(["payload"]).replace_schema_metadata(schema.metadata), wrong_column)
    cases = [
        (not_parquet, "is not a readable Parquet file"),
        (plain, "is not a SkySearch point file"),
        (wrong_column, "column 'payload' must be string, found missing"),
        (tmp_path / "missing", "does not exist"),
    ]
    for path, message in cases:
        dst = open_store(None, ":memory:")
        with pytest.raises(UsageError, match=message):
            import_parquet(dst, path, progress=False)
        assert dst.collections() == []

    dst = open_store(None, ":memory:")
    dst.ensure_collection("frames", 8)  # the export's frames vectors have 16 dimensions
    with pytest.raises(UsageError, match="has dimension 16, but .* has 8"):
        import_parquet(dst, out, progress=False)
    assert dst.collections() == ["frames"] and dst.count("frames") == 0


def _relabelled(source: Path, target: Path, **meta: str) -> Path:
    """A copy of a point file whose metadata names another collection or vector name."""
    table = pq.read_table(source)
    info = json.loads(table.schema.metadata[b"skysearch"]) | meta
    pq.write_table(table.replace_schema_metadata({b"skysearch": json.dumps(info)}), target)
    return target


def test_a_collection_the_schema_does_not_know_or_another_kinds_model_is_refused(
    exported, tmp_path
):
    """The metadata's collection is trusted no further than the schema: an unknown name, or
    a SkySearch frame model's vectors headed for ``scenes``, is refused with nothing written
    (another encoder's vector names stay accepted: ``default`` here)."""
    _, out = exported
    frames = out / "frames" / "default.parquet"
    model = "frame-20260101T000000Z-abc123"
    cases = [
        (_relabelled(frames, tmp_path / "foo.parquet", collection="foo"), "collection 'foo' is "
         "not one of SkySearch's (frames, clips, scenes)"),
        (_relabelled(frames, tmp_path / "s.parquet", collection="scenes", vector_name=model),
         f"vector '{model}' is a frame model's, but the scenes collection holds text-image"),
    ]  # fmt: skip
    for path, message in cases:
        dst = open_store(None, ":memory:")
        dst.ensure_collection("scenes", 16, "untuned")
        with pytest.raises(UsageError, match=re.escape(message)):
            import_parquet(dst, path, progress=False)
        assert dst.collections() == ["scenes"] and dst.count("scenes") == 0
    right = _relabelled(frames, tmp_path / "f.parquet", vector_name=model)
    assert import_parquet(open_store(None, ":memory:"), right, progress=False) == {"frames": 75}
    # a folder holding another application's collection too (an export of a shared server)
    shared = tmp_path / "shared"
    shutil.copytree(out, shared)
    (shared / "other").mkdir()
    _relabelled(frames, shared / "other" / "x.parquet", collection="foo")
    with pytest.warns(UserWarning, match="left out the files of collection\\(s\\) 'foo'"):
        counts = import_parquet(open_store(None, ":memory:"), shared, progress=False)
    assert "foo" not in counts and counts["frames"] == 75


def test_times_before_year_1000_are_rfc3339_and_typed_in_the_export(tmp_path):
    """A scene dated 0001-01-01 (a CSV's placeholder date): its payload time has a 4-digit
    year (it was "1-01-01T00:00:00Z", which no RFC 3339 reader takes) and the export's typed
    ``time`` column holds it (it was null)."""
    from datetime import datetime, timezone

    from skysearch.retrieval.store import Point
    from skysearch.retrieval.store.schema import time_payload

    times = [datetime(1, 1, 1, tzinfo=timezone.utc), datetime(999, 12, 31, 23, tzinfo=timezone.utc)]
    src = EmbeddedStore(tmp_path / "src")
    src.ensure_collection("scenes", 4, "untuned")
    ids = ["00000000-0000-0000-0000-00000000000a", "00000000-0000-0000-0000-00000000000b"]
    vector = {"untuned": np.ones(4)}
    points = [Point(i, vector, time_payload(t)) for i, t in zip(ids, times, strict=True)]
    src.upsert("scenes", points)
    export_parquet(src, tmp_path / "out", progress=False)
    src.close()
    table = pq.read_table(tmp_path / "out" / "scenes" / "untuned.parquet").sort_by("id")
    assert table["time"].to_pylist() == times
    payloads = [json.loads(p) for p in table["payload"].to_pylist()]
    assert [(p["time"], p["day"]) for p in payloads] == [
        ("0001-01-01T00:00:00Z", "0001-01-01"),
        ("0999-12-31T23:00:00Z", "0999-12-31"),
    ]


def test_cli_store_import_parquet(exported, tmp_path, cli):
    content, out = exported
    args = ("store", "import", out, "--format", "parquet", "-w", tmp_path / "ws", "--json")
    for _ in range(2):  # idempotent
        done = cli(*args)
        assert done.exit_code == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["points"] == {"clips": 300, "frames": 75}
        assert report["format"] == "parquet"
    dst = EmbeddedStore(tmp_path / "ws" / "store")
    assert {name: snapshot(dst, name) for name in dst.collections()} == content
    dst.close()


def test_an_export_appears_whole_or_not_at_all(tmp_path: Path, monkeypatch):
    """A failure half-way (a full disk) leaves no folder an import would read as an export,
    and a folder holding an older export is refused rather than mixed with the new one."""
    from skysearch.retrieval.store import parquet_export

    src = EmbeddedStore(tmp_path / "src")
    _fill(src, n=30)
    real = parquet_export._export_collection
    calls = []

    def fail_on_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(parquet_export, "_export_collection", fail_on_the_second)
    with pytest.raises(OSError):
        export_parquet(src, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # nothing left behind
    monkeypatch.setattr(parquet_export, "_export_collection", real)
    finished = subprocess.Popen(["true"])  # an export's process that was killed
    finished.wait()
    gone = finished.pid
    killed = tmp_path / f".out.export-{gone}-0badf00d" / "clips"  # a kill -9 skips the cleanup
    killed.mkdir(parents=True)
    (killed / "part.parquet.tmp").write_bytes(b"partial")
    running = tmp_path / f".out.export-{os.getpid()}-00c0ffee"  # another export, running
    running.mkdir()
    assert export_parquet(src, tmp_path / "out", progress=False) == {"clips": 30, "frames": 15}
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name, "out", "src"]
    running.rmdir()
    with pytest.raises(UsageError, match="it is not empty"):
        export_parquet(src, tmp_path / "out", ["clips"], progress=False)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UsageError, match="cannot write Parquet into .*: Permission denied"):
        export_parquet(src, tmp_path / "out2", progress=False)  # was a traceback
    src.close()
