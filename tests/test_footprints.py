"""Frame footprints (``skysearch.ingest.footprints``): storm-centred boxes from the real 198702
best track, fixed profile bounds (across the antimeridian too), catalogs written before the
columns existed, ``--bbox`` in the real engine against a brute force written here, STAC."""

from __future__ import annotations

import json
import math
import shutil
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_DATA, first_ir_frames, shared_data
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.clips import build_clips, read_clips
from skysearch.ingest.footprints import BOUND_COLUMNS
from skysearch.ingest.pipeline import ingest
from skysearch.ingest.tracks import ingest_tracks, track_rows
from skysearch.retrieval.store import Point, open_store
from skysearch.retrieval.store.embedded import EmbeddedStore
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import FRAMES, time_payload

from skysearch.config import Workspace

UTC = timezone.utc
HALF_KM = 256 * 5  # half of a 512-pixel Digital Typhoon frame at the declared 5 km/pixel
FRAMES_USED = 8


def _copy_frames(target: Path, count: int = FRAMES_USED) -> Path:
    folder = target / "image" / "198702"
    folder.mkdir(parents=True)
    for path in sorted(shared_data("digital-typhoon", "image", "198702").glob("*.h5"))[:count]:
        shutil.copy(path, folder / path.name)
    return target / "image"


@pytest.fixture(scope="module")
def centred(tmp_path_factory) -> tuple[Workspace, list[dict]]:
    """8 real frames of 198702 and their 3-frame clips, then the real best track joined; and
    the frame rows as they were before the track (no footprint yet)."""
    root = tmp_path_factory.mktemp("footprints")
    ws = Workspace(root / "ws")
    ingest([_copy_frames(root)], ws, workers=1, progress=False)
    build_clips(ws, length=3, gap_minutes=60)
    before = read_frames(ws).to_pylist()
    report = ingest_tracks(ws, shared_data("digital-typhoon", "jma", "198702.tsv"))
    assert report.footprints == FRAMES_USED
    return ws, before


def test_storm_centred_frames_take_the_track_centre_box(centred):
    ws, before = centred
    assert all(row[name] is None for row in before for name in BOUND_COLUMNS)
    frames = read_frames(ws).to_pylist()
    tracks = track_rows(ws, "198702", [f["time"] for f in frames])
    for frame, track in zip(frames, tracks, strict=True):
        half_lat = HALF_KM / 111.32  # 11.5 degrees
        half_lon = HALF_KM / (111.32 * math.cos(math.radians(track["lat"])))
        assert frame["south"] == pytest.approx(track["lat"] - half_lat)
        assert frame["north"] == pytest.approx(track["lat"] + half_lat)
        assert frame["west"] == pytest.approx(track["lon"] - half_lon)
        assert frame["east"] == pytest.approx(track["lon"] + half_lon)
        assert 11.5 < half_lon < 11.7  # the storm is near 7N here
    boxes = {f["frame_id"]: [f[n] for n in BOUND_COLUMNS] for f in frames}
    clips = read_clips(ws).to_pylist()
    assert clips
    for clip in clips:
        mine = np.array([boxes[fid] for fid in clip["frame_ids"][0]])
        union = [mine[:, 0].min(), mine[:, 1].min(), mine[:, 2].max(), mine[:, 3].max()]
        assert [clip[n] for n in BOUND_COLUMNS] == pytest.approx(union)
    again = ingest_tracks(ws, shared_data("digital-typhoon", "jma", "198702.tsv"))
    assert (again.unchanged, again.footprints) == (["198702"], 0)  # nothing rewritten


def test_a_catalog_written_before_the_columns_reads_and_gets_them(centred, tmp_path):
    """Frame and clip files without the bound columns (an older version's) read as nulls;
    ingest-track then sets the footprints in both catalogs."""
    ws, _ = centred
    old = Workspace(tmp_path / "old")
    shutil.copytree(ws.root, old.root)
    files = [*old.frames_catalog.rglob("*.parquet"), *old.clips_catalog.rglob("*.parquet")]
    for path in files:
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(list(BOUND_COLUMNS)), path)
        assert "west" not in pq.read_schema(path).names
    assert read_frames(old)["west"].null_count == FRAMES_USED
    assert read_clips(old)["north"].null_count == read_clips(ws).num_rows
    report = ingest_tracks(old, shared_data("digital-typhoon", "jma", "198702.tsv"))
    assert report.footprints == FRAMES_USED
    assert read_frames(old).select(BOUND_COLUMNS).equals(read_frames(ws).select(BOUND_COLUMNS))
    assert read_clips(old).select(BOUND_COLUMNS).equals(read_clips(ws).select(BOUND_COLUMNS))


def test_a_run_killed_between_the_frame_and_clip_catalogs_is_finished_by_the_next(
    centred, tmp_path
):
    """The frames held their boxes, the clips none (the state a kill between the two atomic
    writes leaves, with the marker set before the first): the re-run found no frame to change,
    said "unchanged" and left every clip without a footprint, so bbox searches missed them."""
    import pyarrow as pa
    from skysearch.ingest.tracks import FOOTPRINTS_PENDING

    ws, _ = centred
    cut = Workspace(tmp_path / "cut")
    shutil.copytree(ws.root, cut.root)
    for path in cut.clips_catalog.rglob("*.parquet"):
        table = pq.read_table(path)
        for name in BOUND_COLUMNS:
            column = table.schema.get_field_index(name)
            table = table.set_column(column, name, pa.nulls(table.num_rows, pa.float64()))
        pq.write_table(table, path)
    assert read_clips(cut)["west"].null_count == read_clips(ws).num_rows
    assert not (ws.catalog_dir / FOOTPRINTS_PENDING).exists()  # an uninterrupted run's end
    (cut.catalog_dir / FOOTPRINTS_PENDING).touch()
    report = ingest_tracks(cut, shared_data("digital-typhoon", "jma", "198702.tsv"))
    assert (report.unchanged, report.footprints) == (["198702"], 0)
    assert read_clips(cut).select(BOUND_COLUMNS).equals(read_clips(ws).select(BOUND_COLUMNS))
    assert not (cut.catalog_dir / FOOTPRINTS_PENDING).exists()


def test_frames_ingested_after_their_track_get_their_box_at_ingest(tmp_path):
    images = _copy_frames(tmp_path, 4)
    later = sorted((images / "198702").glob("*.h5"))[2:]
    aside = tmp_path / "later"
    aside.mkdir()
    for path in later:
        path.rename(aside / path.name)
    ws = Workspace(tmp_path / "ws")
    ingest([images], ws, workers=1, progress=False)
    assert ingest_tracks(ws, shared_data("digital-typhoon", "jma", "198702.tsv")).footprints == 2
    for path in later:
        (aside / path.name).rename(images / "198702" / path.name)
    ingest([images], ws, workers=1, progress=False)
    frames = read_frames(ws).to_pylist()
    assert len(frames) == 4 and all(f[n] is not None for f in frames for n in BOUND_COLUMNS)
    again = ingest_tracks(ws, shared_data("digital-typhoon", "jma", "198702.tsv"))
    assert again.footprints == 0  # ingest set the same boxes the track join would


def _profile(folder: Path, footprint: dict | None, name: str = "dt-fixed") -> Path:
    """A copy of the packaged digital-typhoon profile under another name and footprint."""
    from importlib import resources

    packaged = resources.files("skysearch.ingest") / "profiles" / "digital-typhoon.json"
    data = json.loads(packaged.read_text())
    data["name"] = name
    data.pop("footprint")
    if footprint is not None:
        data["footprint"] = footprint
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data))
    return folder


@pytest.mark.parametrize(
    "footprint, why",
    [
        ({"bounds": [100, 40, 120, 30]}, "south < north"),
        ({"bounds": [100, -95, 120, 30]}, "latitudes must be in -90..90"),
        ({"bounds": [100, 0, 190, 30]}, "longitudes must be in -180..180"),
        ({"bounds": [100, 0, 120]}, "four numbers [west, south, east, north]"),
        ({"centred_on": "track", "pixel_km": -5}, "pixel_km -5.0 must be in 0..1000"),
        ({"centred_on": "satellite"}, "a footprint is"),
    ],
)
def test_a_profile_with_a_bad_footprint_is_one_error_line(tmp_path, cli, footprint, why):
    profiles = _profile(tmp_path / "profiles", footprint)
    result = cli(
        "ingest", tmp_path, "--profiles", profiles, "--source", "dt-fixed", "-w", tmp_path / "ws"
    )
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: source profile")
    assert "dt-fixed.json" in lines[0] and why in lines[0]


def test_fixed_bounds_across_the_antimeridian_reach_catalog_and_stac(tmp_path, cli):
    """A profile's fixed bounds 170E..170W: every frame carries them unwrapped (west 170, east
    190); STAC gets the standard bbox (west > east) and a MultiPolygon split at 180."""
    import pystac

    profiles = _profile(tmp_path / "profiles", {"bounds": [170, -5, -170, 25]})
    ws = Workspace(tmp_path / "ws")
    ingest([_copy_frames(tmp_path, 2)], ws, source="dt-fixed", profile_dirs=[profiles])
    frames = read_frames(ws).to_pylist()
    assert [[f[n] for n in BOUND_COLUMNS] for f in frames] == [[170.0, -5.0, 190.0, 25.0]] * 2
    out = tmp_path / "stac"
    result = cli("catalog", "export", "--stac", out, "-w", ws.root)
    assert result.exit_code == 0, result.stderr
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    assert catalog.validate_all() == 2
    (collection,) = catalog.get_children()
    assert collection.extent.spatial.bboxes == [[170.0, -5.0, -170.0, 25.0]]  # was the globe
    for item in catalog.get_items(recursive=True):
        assert item.bbox == [170.0, -5.0, -170.0, 25.0]
        assert item.geometry["type"] == "MultiPolygon"
        assert [ring[0][0] for ring in item.geometry["coordinates"]] == [
            [170.0, -5.0],
            [-180.0, -5.0],
        ]


def test_stac_items_carry_the_storm_centred_box(centred, tmp_path, cli):
    import pystac

    ws, _ = centred
    out = tmp_path / "stac"
    assert cli("catalog", "export", "--stac", out, "-w", ws.root).exit_code == 0
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    assert catalog.validate_all() == FRAMES_USED
    items = {item.id: item for item in catalog.get_items(recursive=True)}
    for frame in read_frames(ws).to_pylist():
        west, south, east, north = (frame[n] for n in BOUND_COLUMNS)
        item = items[frame["frame_id"]]
        assert item.bbox == [west, south, east, north]
        ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
        assert item.geometry == {"type": "Polygon", "coordinates": [ring]}
    (collection,) = catalog.get_children()  # the union of the items' boxes, not the globe
    bounds = np.array([item.bbox for item in items.values()])
    union = [*bounds.min(axis=0)[:2], *bounds.max(axis=0)[2:]]
    assert collection.extent.spatial.bboxes == [pytest.approx(union)]
    assert union[2] - union[0] < 60


def test_a_folder_named_with_a_zip_separator_holds_plain_files(tmp_path, cli, monkeypatch):
    """A folder named 'a::b c#frame=1' made every frame of it a member of a zip '/.../a' that
    does not exist: its STAC assets named that zip, and repair dropped frames whose files were
    there."""
    folder = first_ir_frames(tmp_path / "backup.zip::b c#frame=1", 3)
    ws = Workspace(tmp_path / "ws")
    ingest([folder], ws, workers=1, progress=False)
    out = tmp_path / "stac"
    assert cli("catalog", "export", "--stac", out, "-w", ws.root).exit_code == 0
    items = [json.loads(p.read_text()) for p in out.rglob("*.json") if "assets" in p.read_text()]
    assert len(items) == 3
    for item in items:
        asset = item["assets"]["source"]
        assert asset["type"] == "image/gif" and "archive:href" not in asset, asset
        assert asset["href"].startswith(folder.as_uri())
    here = tmp_path / "here"  # the shell's current folder, empty: "." was a ValueError
    here.mkdir()
    monkeypatch.chdir(here)
    done = cli("catalog", "export", "--stac", ".", "-w", ws.root)
    assert done.exit_code == 0 and "(goes-east 3)" in done.stderr, done.stderr
    assert (here / "catalog.json").is_file() and here.samefile(".")
    refused = cli("catalog", "export", "--stac", "", "-w", ws.root)  # an unset "$OUT"
    assert refused.exit_code == 2 and "an empty name" in refused.stderr
    array = next((ws.root / "frames").rglob("frames.u8"))
    array.write_bytes(bytes(array.stat().st_size))  # every row damaged: decoded again
    repaired = cli("repair", "-w", ws.root, "--json")
    assert repaired.exit_code == 0, repaired.stderr
    assert json.loads(repaired.stdout)["lost_frames"] == []


def test_stac_of_frames_from_a_zip_names_the_archive_and_its_member(tmp_path, cli):
    """An item's asset is the zip itself (``application/zip``), the member named by the STAC
    Archive extension; frames without a footprint leave the collection the whole globe."""
    import zipfile

    import pystac

    archive = tmp_path / "z.zip"
    gifs = sorted((SAMPLE_DATA / "goes-irma-2017" / "infrared").glob("*.GIF"))[:3]
    with zipfile.ZipFile(archive, "w") as zf:
        for gif in gifs:
            zf.write(gif, f"ir/{gif.name}")
    ws = Workspace(tmp_path / "ws")
    ingest([archive], ws, workers=1, progress=False)
    out = tmp_path / "stac"
    assert cli("catalog", "export", "--stac", out, "-w", ws.root).exit_code == 0
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    (collection,) = catalog.get_children()
    assert collection.extent.spatial.bboxes == [[-180.0, -90.0, 180.0, 90.0]]
    items = list(catalog.get_items(recursive=True))
    assert sorted(i.assets["source"].extra_fields["archive:href"] for i in items) == [
        f"ir/{gif.name}" for gif in gifs
    ]
    for item in items:
        assert item.stac_extensions == [
            "https://stac-extensions.github.io/archive/v1.0.0/schema.json"
        ]
        asset = item.assets["source"].to_dict()
        assert (asset["href"], asset["type"], asset["roles"]) == (
            archive.as_uri(),
            "application/zip",
            ["data", "archive"],
        )
        assert asset["archive:type"] == "image/gif" and "skysearch:member" not in asset
        core = item.to_dict() | {"stac_extensions": []}  # the extension's schema is online
        pystac.validation.validate_dict(core)


# --- --bbox in the engine against a brute force --------------------------------------------


def _pieces(west: float, east: float) -> list[tuple[float, float]]:
    """A longitude interval as pieces inside -180..180 (two when it crosses 180)."""
    if east > 180:
        east -= 360
    if west <= east:
        return [(west, east)]
    return [(west, 180.0), (-180.0, east)]


def _brute_force(payloads: dict[str, dict], box: tuple[float, float, float, float]) -> set[str]:
    """Ids whose location lies in ``box`` or whose footprint intersects it."""
    west, south, east, north = box
    query = _pieces(west, east)
    kept = set()
    for pid, p in payloads.items():
        loc = p.get("location")
        if loc and south <= loc["lat"] <= north and any(a <= loc["lon"] <= b for a, b in query):
            kept.add(pid)
        if "west" in p and p["south"] <= north and p["north"] >= south:
            mine = _pieces(p["west"], p["east"])
            if any(a <= d and b >= c for a, b in mine for c, d in query):
                kept.add(pid)
    return kept


def _points(ws: Workspace) -> tuple[list[Point], dict[str, dict]]:
    """The fixture's real frames (catalog footprints and track centres) and 300 synthetic
    points: random boxes (a third crossing the antimeridian), locations, or neither."""
    from skysearch.retrieval.indexing.catalogs import event_payloads, footprint_payload

    rng = np.random.default_rng(18)
    frames = read_frames(ws).to_pylist()
    extras = event_payloads(ws, [f["event"] for f in frames], [f["time"] for f in frames])
    payloads = {
        f["frame_id"]: {**time_payload(f["time"]), **extra, **footprint_payload(f)}
        for f, extra in zip(frames, extras, strict=True)
    }
    start = datetime(1987, 4, 1, tzinfo=UTC)
    for i in range(300):
        p = time_payload(start + timedelta(hours=i))
        if i % 3:  # a box; every other one crosses 180 (east past 180, unwrapped)
            west = float(rng.uniform(-180, 180) if i % 3 == 1 else rng.uniform(130, 180))
            width = float(rng.uniform(1, 60) if i % 3 == 1 else rng.uniform(180 - west, 200 - west))
            south = float(rng.uniform(-80, 60))
            p |= {"west": west, "south": south, "east": west + width, "north": south + 20}
        if i % 2:
            p["location"] = {
                "lon": float(rng.uniform(-180, 180)),
                "lat": float(rng.uniform(-80, 80)),
            }
        payloads[str(uuid.UUID(int=i + 1))] = p
    vectors = rng.normal(size=(len(payloads), 8)).astype(np.float32)
    points = [
        Point(pid, v.tolist(), p) for (pid, p), v in zip(payloads.items(), vectors, strict=True)
    ]
    return points, payloads


BOXES = {
    "inside a footprint": (144.0, 5.0, 146.0, 9.0),
    "straddling its east edge": (155.0, 0.0, 160.0, 30.0),
    "straddling its north edge, centre outside": (130.0, 17.0, 150.0, 40.0),
    "disjoint": (-60.0, -50.0, -40.0, -30.0),
    "containing it": (100.0, -30.0, 179.0, 40.0),
    "across the antimeridian": (170.0, -20.0, -170.0, 20.0),
    "eastern hemisphere to 180": (120.0, -10.0, 180.0, 10.0),
}


@pytest.mark.parametrize("kind", ["embedded", "memory"])
def test_bbox_keeps_located_or_intersecting_points_as_a_brute_force(centred, tmp_path, kind):
    """For each box, the engine's filtered ids == the brute force over the payloads (the real
    frames' footprints from the catalog among them); with a time window too, where the
    embedded store's window scan must hand the geo filter to the engine."""
    ws, _ = centred
    points, payloads = _points(ws)
    store = (
        EmbeddedStore(tmp_path / "store") if kind == "embedded" else open_store(None, ":memory:")
    )
    with store:
        store.ensure_collection(FRAMES, 8)
        store.upsert(FRAMES, points)
        store.optimize(FRAMES)
        query = points[0].vector
        real = {f["frame_id"] for f in read_frames(ws, columns=["frame_id"]).to_pylist()}
        for name, box in BOXES.items():
            want = _brute_force(payloads, box)
            hits = store.search(FRAMES, query, filters=SearchFilters(bbox=box, k=1000))
            assert {h.id for h in hits} == want, name
            if name in ("inside a footprint", "containing it") or "centre outside" in name:
                assert real <= want, name
            if name == "disjoint":
                assert not real & want
            window = SearchFilters(
                bbox=box,
                start=datetime(1987, 4, 3, tzinfo=UTC),
                end=datetime(1987, 4, 9, 21, tzinfo=UTC),
                k=1000,
            )
            in_window = {
                pid for pid in want
                if window.start <= datetime.fromisoformat(payloads[pid]["time"]) <= window.end
            }  # fmt: skip
            assert {h.id for h in store.search(FRAMES, query, filters=window)} == in_window, name
        if kind == "embedded":
            index = store._window_index(FRAMES)
            assert index is not None  # the copy exists, and declines the geo filter
            assert index.candidates("default", query, 10, window.to_qdrant(), 10**6) is None
