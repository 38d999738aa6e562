"""The frame catalog as a STAC catalog (SpatioTemporal Asset Catalog, v1.1): one Item per
frame, one Collection per satellite, written self-contained so any STAC tool (pystac,
stac-browser, pgstac loaders) can read it.

Item: ``id`` = the frame id, ``datetime`` = the frame's UTC time, ``platform`` = satellite,
``instruments`` when the profile names one, an asset ``source`` (the archive file; roles
``data``) whose ``bands`` (STAC 1.1 common metadata, the successor of ``eo:bands``) name the
channel, and ``skysearch:*`` properties for the catalog's own fields (channel, event, quality,
status, profile). Frames with a footprint (``skysearch.ingest.footprints``: a profile's fixed
bounds, or a storm-centred box set by ``skysearch ingest-track``) carry it as ``bbox`` and a
Polygon ``geometry`` (split into a MultiPolygon at the antimeridian); the others have none
(null geometry, as STAC allows). A Collection's spatial extent is the union of its items'
boxes (the whole globe only when none has one).

A frame ingested from a zip member: its asset is the zip (``type: application/zip``, roles
``data`` and ``archive``), the member named by the STAC Archive extension (``archive:href``,
``archive:type``), so a client knows it gets an archive and which file in it holds the frame.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skysearch.ingest.catalog import read_frames
from skysearch.ingest.decode import Source
from skysearch.ingest.footprints import BOUND_COLUMNS, is_box, stac_shape, union_box
from skysearch.ingest.profiles import load_profiles

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError

MEDIA_TYPES = {
    ".png": "image/png",
    ".gif": "image/gif",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".h5": "application/x-hdf5",
    ".hdf5": "application/x-hdf5",
    ".nc": "application/netcdf",
    ".zarr": "application/vnd+zarr",
}
ZIP_MEDIA_TYPE = "application/zip"
ARCHIVE_EXTENSION = "https://stac-extensions.github.io/archive/v1.0.0/schema.json"
WHOLE_GLOBE = [-180.0, -90.0, 180.0, 90.0]


@dataclass
class StacReport:
    folder: str
    collections: dict[str, int]  # satellite -> items

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "collections": self.collections}


def _item(row: dict[str, Any], instrument: str) -> Any:
    import pystac

    source = Source.parse(row["source_path"])
    extra = {"bands": [{"name": row["channel"]}]}
    if source.index is not None:
        extra["skysearch:time_index"] = source.index
    properties: dict[str, Any] = {
        "platform": row["satellite"],
        "skysearch:channel": row["channel"],
        "skysearch:status": row["status"],
        "skysearch:profile": row["profile"],
    }
    if instrument:
        properties["instruments"] = [instrument]
    if row.get("event"):
        properties["skysearch:event"] = row["event"]
    if row.get("quality") is not None:
        properties["skysearch:quality"] = round(float(row["quality"]), 6)
    box = [row.get(name) for name in BOUND_COLUMNS]
    bbox, geometry = stac_shape(box) if is_box(box) else (None, None)
    item = pystac.Item(
        id=row["frame_id"],
        geometry=geometry,
        bbox=bbox,
        datetime=row["time"],
        properties=properties,
    )
    media = MEDIA_TYPES.get(Path(source.file).suffix.lower())
    roles = ["data"]
    if source.member is not None:  # the Archive extension: the file inside the zip
        media, roles = ZIP_MEDIA_TYPE, ["data", "archive"]
        extra["archive:href"] = source.member
        member_media = MEDIA_TYPES.get(Path(source.member).suffix.lower())
        if member_media:
            extra["archive:type"] = member_media
        item.stac_extensions.append(ARCHIVE_EXTENSION)
    asset = pystac.Asset(
        href=Path(source.file).as_uri(), media_type=media, roles=roles, extra_fields=extra
    )
    item.add_asset("source", asset)
    return item


def _spatial_extent(rows: list[dict[str, Any]]) -> list[float]:
    """The STAC bbox holding every item's box (west > east across the antimeridian); the
    whole globe when no item has one."""
    boxes = [box for r in rows if is_box(box := [r.get(name) for name in BOUND_COLUMNS])]
    union = union_box(boxes) if boxes else None
    return stac_shape(union)[0] if union else WHOLE_GLOBE


def export_stac(workspace: Workspace, folder: Path) -> StacReport:
    """Write the frame catalog as a self-contained STAC catalog into ``folder`` (new or
    empty); it appears whole (written aside, then renamed; into an empty folder that exists,
    written inside it, then its entries are: the folder stays, it may be a shell's current
    one or a mount point)."""
    import pystac

    folder = Path(folder).resolve()  # "." has no name to put the staging folder beside
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise UsageError(f"{{stac}} {folder} exists and is not an empty folder", params=["stac"])
    if not folder.parent.is_dir():
        raise UsageError(f"cannot write {folder}: {folder.parent} is not an existing folder")
    frames = read_frames(workspace)
    if frames.num_rows == 0:
        raise NotFoundError(f"no frames in the catalog of {workspace.root}: nothing to export")
    profiles = load_profiles(workspace=workspace)
    root = pystac.Catalog(
        id=f"skysearch-{workspace.root.name}",
        description=f"SkySearch frame catalog of the workspace {workspace.root}",
    )
    by_satellite: dict[str, list[dict[str, Any]]] = {}
    for row in frames.to_pylist():
        by_satellite.setdefault(row["satellite"], []).append(row)
    counts = {}
    for satellite, rows in sorted(by_satellite.items()):
        times = [r["time"] for r in rows]
        extent = pystac.Extent(
            pystac.SpatialExtent([_spatial_extent(rows)]),
            pystac.TemporalExtent([[min(times), max(times)]]),
        )
        channels = sorted({r["channel"] for r in rows})
        collection = pystac.Collection(
            id=satellite,
            description=f"{satellite} frames ({', '.join(channels)}) ingested by SkySearch",
            extent=extent,
        )
        for row in rows:
            profile = profiles.get(row["profile"])
            collection.add_item(_item(row, profile.instrument if profile else ""))
        root.add_child(collection)
        counts[satellite] = len(rows)
    # no dot in the name: pystac would take a suffix for a file name and write beside it; in
    # a folder that exists, inside it (its parent may be another device, or not writable)
    name = f"skysearch-stac-staging-{uuid.uuid4().hex[:8]}"
    staging = folder / name if folder.exists() else folder.with_name(name)
    try:
        root.normalize_hrefs(str(staging))
        root.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        if folder.exists():
            for entry in staging.iterdir():
                entry.rename(folder / entry.name)
        else:
            staging.rename(folder)
    except OSError as exc:
        raise UsageError(
            f"cannot write {{stac}} {folder}: {exc.strerror or exc}", params=["stac"]
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return StacReport(str(folder), counts)
