"""Scene CSVs and scene names: what a row becomes, what is skipped (with its line), what leaves
the index. Indexed for real (embedded store) with a stand-in image tower: no model to load."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from skysearch.retrieval.indexing.scenes import csv_scenes, index_scenes, scene_listing
from skysearch.retrieval.store.embedded import EmbeddedStore
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import SCENES

from skysearch.config import load_settings
from skysearch.errors import UsageError

DIM = 4


def _tower() -> SimpleNamespace:
    """What indexing asks of a text-image model: an id, a size, pixels -> vectors."""
    return SimpleNamespace(
        model_id="text-image-t",
        embed_dim=DIM,
        preprocess=lambda image: torch.zeros(3),
        encode_pixels=lambda batch: np.ones((len(batch), DIM), np.float32),
    )


def _images(folder: Path, *names: str) -> list[Path]:
    paths = [folder / name for name in names]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), "green").save(path)
    return paths


def _csv(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def indexer(tmp_path):
    """Index a folder/CSV into a workspace's embedded store; the store to look at after."""
    settings = load_settings(workspace=tmp_path / "ws")
    store = EmbeddedStore(tmp_path / "store")

    def run(source: Path, **kw):
        return index_scenes(settings, source, tim=_tower(), store=store, progress=False, **kw)

    run.store = store
    yield run
    store.close()


def _count(store: EmbeddedStore, **filters) -> int:
    return store.count(SCENES, SearchFilters(**filters))


def test_a_box_across_the_antimeridian_is_centred_on_its_far_side(tmp_path, indexer):
    """170E..170W was indexed at lon 0 (Greenwich): found around 0, missed around 180."""
    _images(tmp_path, "a.jpg", "b.jpg")
    table = _csv(
        tmp_path / "s.csv", "filepath,bbox", 'a.jpg,"170,0,-170,10"', 'b.jpg,"170,0,-150,10"'
    )
    scenes, skipped = csv_scenes(table, None)
    assert not skipped
    assert [m["location"] for _, m in scenes] == [{"lon": 180, "lat": 5}, {"lon": -170, "lat": 5}]
    assert indexer(table).written == 2
    assert _count(indexer.store, bbox=(175, -5, -175, 15)) == 1
    assert _count(indexer.store, bbox=(-175, -5, -165, 15)) == 1
    assert _count(indexer.store, bbox=(-5, -5, 5, 15)) == 0


def test_a_location_column_alone_or_a_foreign_header_refuses_the_file_naming_its_columns(
    tmp_path,
):
    """lon without lat was a KeyError traceback; a ';' file said only "no 'filepath' column"."""
    for header, said in (
        ("filepath,lon", "has a 'lon' column but no 'lat' column (found 'filepath', 'lon')"),
        ("filepath,lat", "has a 'lat' column but no 'lon' column"),
        ("filepath;label", "(found 'filepath;label'); it looks separated by ';'"),
        ("FilePath,label", "(found 'FilePath', 'label'); column names are lower case"),
        ("", "no 'filepath' column (the file is empty)"),
    ):
        table = _csv(tmp_path / "s.csv", header, "x.jpg,1")
        with pytest.raises(UsageError) as caught:
            csv_scenes(table, None)
        assert said in str(caught.value)


def test_row_problems_name_their_line_and_field(tmp_path):
    """An empty filepath read as the CSV's own folder ("Is a directory"); an empty lat said
    only "could not convert string to float: ''"."""
    _images(tmp_path, "a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg")
    table = _csv(
        tmp_path / "s.csv",
        "filepath,time,lon,lat,bbox",
        "a.jpg,,10,50,",
        ",2020-06-01T12:00:00Z,10,50,",
        "b.jpg,,10,,",
        "c.jpg,,east,50,",
        "d.jpg,,,,170,0,-170,10",
        "e.jpg,yesterday,,,",
        "f.jpg,,200,50,",
        "a\x00.jpg,,,,",
    )
    scenes, skipped = csv_scenes(table, None)
    assert [p.name for p, _ in scenes] == ["a.jpg"]
    assert [(Path(s["path"]).name, s["reason"]) for s in skipped] == [
        ("s.csv", "line 3 of s.csv: empty filepath"),
        ("b.jpg", "line 4 of s.csv: bad metadata: lat is empty"),
        ("c.jpg", "line 5 of s.csv: bad metadata: lon is not a number: 'east'"),
        (
            "d.jpg",
            "line 6 of s.csv: bad metadata: more fields than the header has "
            '(quote a bbox: "west,south,east,north")',
        ),
        ("e.jpg", "line 7 of s.csv: bad metadata: cannot read time 'yesterday': use ISO 8601 "
         "UTC, e.g. 2017-09-07T00:45Z"),
        ("f.jpg", "line 8 of s.csv: bad metadata: lon 200 is not in -180..180 degrees"),
        ("s.csv", "line 9 of s.csv: filepath 'a\\x00.jpg' is not a path (embedded null byte)"),
    ]  # fmt: skip


def test_a_csv_row_whose_image_is_gone_removes_its_point(tmp_path, indexer):
    """The deleted image stayed indexed (rank 1) and the run said only "cannot read"; a row
    dropped from the CSV leaves its point (the image may be listed elsewhere)."""
    kept, deleted, dropped = _images(tmp_path / "g", "f1.jpg", "f2.jpg", "f3.jpg")
    table = _csv(
        tmp_path / "g.csv",
        "filepath,label",
        *(f"g/{p.name},forest" for p in (kept, deleted, dropped)),
    )
    assert indexer(table).written == 3
    deleted.unlink()
    _csv(table, "filepath,label", f"g/{kept.name},forest", f"g/{deleted.name},forest")
    report = indexer(table)
    assert report.removed == 1 and report.skipped_existing == 1
    (gone,) = report.skipped
    assert gone["path"] == str(deleted) and "image is gone" in gone["reason"]
    assert "its indexed scene, if any, is removed" in gone["reason"]
    left = {Path(r.payload["source_path"]) for r in indexer.store.scroll(SCENES)}
    assert left == {kept, dropped}
    assert indexer(table).removed == 0  # nothing more to remove


def test_names_with_a_comma_are_refused_when_indexing(tmp_path, indexer):
    """A label "field, wet" was indexed, yet `--label "field, wet"` asks for 'field' and 'wet'."""
    _images(tmp_path / "set" / "field, wet", "x.jpg")
    _images(tmp_path / "set" / "field", "y.jpg")
    report = indexer(tmp_path / "set")
    assert report.written == 1
    (skipped,) = report.skipped
    assert skipped["reason"].startswith("label (a folder's name) 'field, wet' has a comma")
    _images(tmp_path, "a.jpg", "b.jpg")
    table = _csv(
        tmp_path / "s.csv", "filepath,label,dataset", 'a.jpg,"field, wet",d', 'b.jpg,x,"d,e"'
    )
    _, skipped = csv_scenes(table, None)
    assert [s["reason"] for s in skipped] == [
        "line 2 of s.csv: bad metadata: label 'field, wet' has a comma, which no label filter "
        "can select (several names are given comma-separated): rename it (a point indexed under "
        "it before stays until then)",
        "line 3 of s.csv: bad metadata: dataset 'd,e' has a comma, which no dataset filter can "
        "select (several names are given comma-separated): rename it (a point indexed under it "
        "before stays until then)",
    ]
    with pytest.raises(UsageError, match="dataset 'a,b' has a comma") as caught:
        scene_listing(table, "text-image-t", dataset="a,b")
    assert list(caught.value.params) == ["dataset"]


def test_the_dataset_option_wins_over_a_dataset_column(tmp_path):
    """The help says "Dataset name of every image"; the CSV's column silently won."""
    _images(tmp_path, "a.jpg", "b.jpg")
    table = _csv(tmp_path / "s.csv", "filepath,dataset", "a.jpg,colA", "b.jpg,")
    given = [m["dataset"] for _, m in csv_scenes(table, "flagB")[0]]
    default = [m["dataset"] for _, m in csv_scenes(table, None)[0]]
    assert given == ["flagB", "flagB"] and default == ["colA", "s"]


def test_the_names_the_scenes_have_are_quoted(tmp_path):
    """A label indexed with a comma before it was refused read as two: "field, wet, grass"."""
    from skysearch.retrieval.search.filter_checks import check_names
    from skysearch.retrieval.store.base import Point

    from skysearch.errors import NotFoundError

    with EmbeddedStore(tmp_path / "store") as store:
        store.ensure_collection(SCENES, DIM)
        points = [
            Point(f"00000000-0000-0000-0000-00000000000{i}", np.ones(DIM), {"label": label})
            for i, label in enumerate(("field, wet", "grass"), start=1)
        ]
        store.upsert(SCENES, points)
        with pytest.raises(NotFoundError, match="the scenes have 'field, wet', 'grass'$"):
            check_names(store, SearchFilters(labels=("wet",)))
