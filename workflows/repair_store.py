"""The embedded vector store's part of ``skysearch repair``: collections that no longer open or
read back whole are set aside and re-indexed; points of frames the repair dropped are deleted.
A Qdrant server is left alone (it keeps and checks its own data, and may serve more than this
workspace)."""

from __future__ import annotations

import shutil
from pathlib import Path

from skysearch.workflows.repair import Action

from skysearch.config import Settings
from skysearch.errors import SkySearchError, StoreInUse
from skysearch.timeutil import file_stamp

DAMAGED_STORE = ".damaged-store"  # collections set aside, beside (not in) the store folder
REINDEXING = ".reindexing"  # beside a collection set aside whose re-index has not finished


def pending_reindex(root: Path) -> list[Path]:
    """Collections set aside whose re-index has not finished (a repair killed, or no model)."""
    return [
        marker.with_name(marker.name.removesuffix(REINDEXING))
        for marker in sorted((root / DAMAGED_STORE).glob(f"*{REINDEXING}"))
    ]


def vector_store(settings: Settings) -> list[Action]:
    """Embedded store: set aside collections that no longer open or read back whole (deep
    checks); re-index them with the registered models."""
    if settings.qdrant_url:
        return []  # a Qdrant server keeps (and checks) its own data
    from skysearch.retrieval.store import open_store
    from skysearch.retrieval.store.embedded import EmbeddedStore
    from skysearch.retrieval.store.health import collection_problem

    store = open_store(settings)
    try:
        assert isinstance(store, EmbeddedStore)
        problems = {
            name: collection_problem(store, name, deep=True) for name in store.collections()
        }
        broken = [(name, problem) for name, problem in problems.items() if problem]
    finally:
        store.close()
    actions, whole, tried = [], set(), set()
    store_dir, set_aside = settings.workspace.store_dir, settings.workspace.root / DAMAGED_STORE
    for name, error in broken:
        path = store_dir / name
        stamp = file_stamp()
        aside = set_aside / f"{name}-{stamp}"
        set_aside.mkdir(exist_ok=True)
        aside.with_name(aside.name + REINDEXING).touch()  # until re-indexed
        path.replace(aside)
        done, ok = _reindex_set_aside(settings, name, aside)
        actions.append(Action(str(path), error, f"set aside as {aside}; {done}", ok))
        whole |= {name} if ok else set()
        tried.add(aside)
    for aside in pending_reindex(settings.workspace.root):  # earlier repairs' unfinished ones
        name = aside.name.rsplit("-", 1)[0]
        if aside in tried:
            continue
        if not aside.exists() or name in whole:  # moved back, deleted, or re-indexed just now
            _discard_set_aside(aside)
            continue
        done, ok = _reindex_set_aside(settings, name, aside)
        problem = f"set aside as {aside} by a repair that did not finish re-indexing it"
        actions.append(Action(str(store_dir / name), problem, done, ok))
    return actions


def _reindex_set_aside(settings: Settings, name: str, aside: Path) -> tuple[str, bool]:
    """Re-index a collection set aside, then delete its damaged copy. Until that worked a
    marker beside the copy stays (a repair killed meanwhile, a model missing), so every later
    repair tries again and says so; deleting the copy accepts the loss."""
    done, ok = _reindex(settings, name)
    if ok:
        _discard_set_aside(aside)
        return f"{done}; deleted {aside}", True
    return f"{done} (kept {aside}: repair tries again; delete it to accept the loss)", False


def _discard_set_aside(aside: Path) -> None:
    shutil.rmtree(aside, ignore_errors=True)
    aside.with_name(aside.name + REINDEXING).unlink(missing_ok=True)


def _reindex(settings: Settings, collection: str) -> tuple[str, bool]:
    """Index a collection again with every registered model that fills it."""
    from skysearch.retrieval.indexing.catalogs import CATALOG_COLLECTIONS, catalog_models

    if collection not in CATALOG_COLLECTIONS:
        return f"not re-indexed: index the {collection} again from their source", False
    kind, index = CATALOG_COLLECTIONS[collection]
    models = catalog_models(settings.workspace, collection)
    if not models:
        return f"not re-indexed: no {kind} model registered", False
    said, ok = [], True
    for record in models:
        try:
            result = index(settings, record.model_id)
            said.append(f"{record.model_id}: {result.written} points")
        except StoreInUse:
            raise  # said once by repair: stop the other process and run it again
        except SkySearchError as exc:
            said.append(f"{record.model_id}: {exc}")
            ok = False
    return "re-indexed " + "; ".join(said), ok


def stale_points(settings: Settings) -> list[Action]:
    """Embedded store: delete the points of frames this repair dropped and of the clips built
    from them (a search would return what the catalogs no longer hold). A Qdrant server is
    left alone: it may serve more than this workspace."""
    if settings.qdrant_url:
        return []
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clips import read_clips
    from skysearch.retrieval.store import open_store
    from skysearch.retrieval.store.schema import CLIPS, FRAMES

    workspace = settings.workspace
    known = {
        FRAMES: set(read_frames(workspace, columns=["frame_id"])["frame_id"].to_pylist()),
        CLIPS: set(read_clips(workspace, columns=["clip_id"])["clip_id"].to_pylist()),
    }
    actions = []
    with open_store(settings) as store:
        for name in set(known) & set(store.collections()):
            stale = [r.id for r in store.scroll(name) if r.id not in known[name]]
            if stale:
                store.delete_ids(name, stale)
                done = f"deleted {len(stale)} points of {name} no longer in the catalog"
                actions.append(
                    Action(str(workspace.store_dir / name), "points of dropped frames", done, True)
                )
    return actions
