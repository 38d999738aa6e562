"""What a source file looked like when its frames were ingested: its stamp.

A re-run does not decode a file whose path is already in the catalog, unless the file's stamp
changed since: a plain file's size and modification time, a zip member's size and CRC-32, a
zarr store's total size and newest modification time. So a file replaced at the same path
(a reprocessed delivery) is decoded again and, if its content differs, reported instead of
silently passed over as unchanged; with the same content (a file touched or copied again, a
many-frame file that grew), its rows take the new stamp, so it is decoded once, not on every
run. Catalog rows written before stamps existed have none: their files are taken as
unchanged, as before. A zarr store's stamp costs a ``stat`` of each of its files.
"""

from __future__ import annotations

import os
import zipfile

from skysearch.ingest.decode import Source


class SourceStamps:
    """Stamps of sources, each file or zarr tree read once per run; the listing of the last zip
    archive asked about is kept (candidates come sorted by path: one archive's members in a
    row)."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str | None], str | None] = {}
        self._zip: tuple[str, dict[str, zipfile.ZipInfo]] = ("", {})

    def __call__(self, source: Source) -> str | None:
        """The source's stamp now; None where it cannot be read (the decode reports why)."""
        key = (source.file, source.member)
        if key not in self._seen:
            try:
                self._seen[key] = self._stamp(source)
            except (OSError, zipfile.BadZipFile):
                self._seen[key] = None
        return self._seen[key]

    def _stamp(self, source: Source) -> str | None:
        if source.member is not None:
            if self._zip[0] != source.file:
                with zipfile.ZipFile(source.file) as archive:
                    self._zip = (source.file, {m.filename: m for m in archive.infolist()})
            info = self._zip[1].get(source.member)
            return None if info is None else f"zip {info.file_size} {info.CRC:08x}"
        if os.path.isdir(source.file):  # a zarr store: chunks change inside it
            size, newest = 0, 0
            for root, _dirs, files in os.walk(source.file):
                for name in files:
                    st = os.stat(os.path.join(root, name))
                    size, newest = size + st.st_size, max(newest, st.st_mtime_ns)
            return f"tree {size} {newest}"
        st = os.stat(source.file)
        return f"file {st.st_size} {st.st_mtime_ns}"
