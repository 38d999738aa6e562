"""``skysearch doctor``: what is installed, what the workspace holds, and what to do next.

Each check returns a :class:`Check`: ``ok``, ``todo`` (a step not done yet, e.g. no model
trained) or ``fail`` (something broken: a missing package, a locked store, a damaged file),
with a one-line detail and the command that fixes it. Checks never raise.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skysearch.workflows.demo import REPO_SAMPLE
from skysearch.workflows.update_state import LOCK_FILE, STATE_FILE, last_run

from skysearch.config import Settings
from skysearch.errors import (
    DamagedError,
    SkySearchError,
    StoreInUse,
    StoreNotWritable,
    some_of,
)

OK, TODO, FAIL = "ok", "todo", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _torch() -> Check:
    import torch

    threads = torch.get_num_threads()
    cuda = torch.cuda.is_available()
    return Check(
        "torch",
        OK,
        f"torch {torch.__version__}, {threads} CPU threads, CUDA {'yes' if cuda else 'no'}",
    )


def _pretrained() -> Check:
    from skysearch.encoders.pretrained import efficientnet_lite0_weights_path, minilm_path

    efficientnet_lite0_weights_path()
    minilm_path()
    return Check("pretrained weights", OK, "EfficientNet-Lite0 and all-MiniLM-L6-v2 (offline)")


def _workspace(settings: Settings) -> Check:
    root = settings.workspace.root
    if not root.exists():
        return Check(
            "workspace",
            TODO,
            f"{root} does not exist yet",
            "skysearch demo -w DIR, or skysearch ingest PATH -w DIR",
        )
    if not os.access(root, os.W_OK):
        return Check("workspace", FAIL, f"{root} is not writable", "pass --workspace DIR")
    return Check("workspace", OK, str(root))


def _frames(settings: Settings) -> Check:
    from skysearch.ingest.catalog import read_frames

    table = read_frames(settings.workspace, columns=["satellite", "channel", "time"])
    if table.num_rows == 0:
        return Check(
            "frames",
            TODO,
            "no frames ingested",
            f"skysearch ingest {_sample('goes-irma-2017', 'ARCHIVE_DIR')} (or your archive)",
        )
    parts: dict[tuple[str, str], list[Any]] = {}
    for sat, chan, t in zip(
        table["satellite"].to_pylist(),
        table["channel"].to_pylist(),
        table["time"].to_pylist(),
        strict=True,
    ):
        parts.setdefault((sat, chan), []).append(t)
    detail = "; ".join(
        f"{s}/{c}: {len(ts)} frames {min(ts):%Y-%m-%d}..{max(ts):%Y-%m-%d}"
        for (s, c), ts in sorted(parts.items())
    )
    return Check("frames", OK, detail)


def _clips(settings: Settings) -> Check:
    from skysearch.ingest.clip_specs import spec_label
    from skysearch.ingest.clips import read_clips, spec_keys

    spec_columns = ["satellite", "channels", "length", "gap_minutes"]
    table = read_clips(settings.workspace, columns=spec_columns)
    if table.num_rows == 0:
        return Check("clips", TODO, "no clips assembled", "skysearch clips --length 6 --gap 60")
    counts: dict[str, int] = {}
    for sat, chans, length, gap in spec_keys(table):
        key = spec_label(chans, length, gap, sat)
        counts[key] = counts.get(key, 0) + 1
    return Check("clips", OK, "; ".join(f"{k}: {n}" for k, n in sorted(counts.items())))


def _catalog_strays(settings: Settings) -> list[Check]:
    from skysearch.ingest.catalog import stray_files
    from skysearch.ingest.clip_specs import is_clip_file

    ws = settings.workspace
    found = stray_files(ws.frames_catalog) + stray_files(ws.clips_catalog, is_clip_file)
    strays = [str(p) for p in found]
    if not strays:
        return []
    detail = f"not catalog parts (copies?), never read: {some_of(strays)}"
    return [Check("catalog files", TODO, detail, "move them out of the catalog folder")]


def _models(settings: Settings, deep: bool) -> list[Check]:
    from skysearch.encoders.checkpoints import checkpoint_problem
    from skysearch.encoders.registry import REGISTRY_FILE, list_models, model_folders

    records = list_models(settings.workspace)
    registry_file = settings.workspace.models_dir / REGISTRY_FILE
    found = model_folders(settings.workspace)
    if not registry_file.exists() and found:
        detail = f"{len(found)} trained model folders, no model registry (deleted?)"
        return [Check("models", FAIL, detail, f"skysearch repair -w {settings.workspace.root}")]
    listed = {r.directory(settings.workspace).resolve() for r in records}
    unlisted = {  # deep: repair registers only whole ones (not those it unregistered)
        f.name: config["kind"]
        for f, config in found.items()
        if f.resolve() not in listed and not checkpoint_problem(f, True)
    }
    problems = {
        r.model_id: checkpoint_problem(r.directory(settings.workspace), deep) for r in records
    }
    broken = [
        Check(
            f"{r.kind} model",
            FAIL,
            f"{r.model_id}: {problems[r.model_id]}",
            f"skysearch repair -w {settings.workspace.root} (unregisters it), then retrain",
        )
        for r in records
        if problems[r.model_id]
    ]
    fixes = {
        "frame": "skysearch train frames --epochs 30",
        "clip": "skysearch train clips --epochs 60 (after train frames)",
        "text-image": f"skysearch train text-image --images {_sample('rsscn7-mini', 'IMAGES')}",
        "predictor": "skysearch train predictor (only for search clip --augment)",
    }
    out = []
    if unlisted:  # a registry emptied or edited by hand: searches would say "train one"
        detail = f"{len(unlisted)} trained model folders the registry does not list: "
        fix = f"skysearch repair -w {settings.workspace.root} (registers them again)"
        out.append(Check("models", FAIL, detail + some_of(list(unlisted)), fix))
    for kind, fix in fixes.items():
        mine = [r for r in records if r.kind == kind]
        whole = [r for r in mine if not problems[r.model_id]]  # searches, once repair has run
        if whole:
            out.append(
                Check(f"{kind} model", OK, f"{len(whole)} trained, latest {whole[-1].model_id}")
            )
        elif mine:
            continue  # only damaged ones: their "fail" lines say it
        elif kind not in unlisted.values():  # else trained, only not registered: said above
            out.append(Check(f"{kind} model", TODO, "none trained", fix))
    return broken + out


def _store(settings: Settings, deep: bool) -> list[Check]:
    from skysearch.retrieval.store import open_store
    from skysearch.workflows.repair import STALE_PENDING
    from skysearch.workflows.repair_store import pending_reindex

    stale = []
    fix = f"skysearch repair -w {settings.workspace.root} (when nothing holds the store)"
    if (settings.workspace.root / STALE_PENDING).exists():
        detail = "points of frames a repair dropped are still in the store (it was in use)"
        stale = [Check("store points", TODO, detail, fix)]
    pending = pending_reindex(settings.workspace.root)
    if pending:  # a repair killed, or one that could not re-index (no model): it tries again
        names = some_of([p.name for p in pending])
        detail = f"collections set aside by a repair and not re-indexed yet: {names}"
        stale.append(Check("store re-index", TODO, detail, fix))
    try:
        with open_store(settings) as store:
            return _store_checks(settings, deep, store) + stale
    except StoreInUse as exc:  # e.g. skysearch serve: nothing wrong, just not checked here
        detail = f"{exc.path} held by another process (pid {exc.pid}): not checked meanwhile"
        return [Check("store", OK, detail), *stale]
    except StoreNotWritable as exc:  # nothing wrong with it either: repair is not the fix
        fix = "search through skysearch serve run by its owner, or copy the workspace"
        return [Check("store", FAIL, f"{exc.path}: {exc.reason}, not opened", fix), *stale]


def _store_checks(settings: Settings, deep: bool, store: Any) -> list[Check]:
    from skysearch.encoders.registry import list_models
    from skysearch.retrieval.store.health import collection_problem
    from skysearch.retrieval.store.schema import CLIPS, FRAMES, SCENES

    names = store.collections()
    fix = f"skysearch repair -w {settings.workspace.root} (re-index the collection)"
    problems = {name: collection_problem(store, name, deep) for name in names}  # opens each
    broken = [Check("store", FAIL, p, fix) for p in problems.values() if p]
    if broken:
        return broken
    sizes = {name: store.count(name) for name in names}
    detail = ", ".join(f"{n}: {c} points" for n, c in sizes.items()) or "no collections yet"
    out = [Check("store", OK, f"{store.where}: {detail}")]
    foreign = [str(path) for path in store.foreign_folders()]
    if foreign:  # left out of the store, said so: the user may have meant something by it
        detail = f"not collections (none of the engine's files), left out: {some_of(foreign)}"
        out.append(Check("store folders", TODO, detail, "move them out of the store folder"))
    for collection, kind, fix in (
        (CLIPS, "clip", "skysearch index clips"),
        (FRAMES, "frame", "skysearch index frames"),
        (SCENES, "text-image", f"skysearch index scenes {_sample('rsscn7-mini', 'IMAGES')}"),
    ):
        models = list_models(settings.workspace, kind)
        if not models:
            continue
        latest = models[-1].model_id
        vectors = store.vector_config(collection) if collection in names else {}
        if latest in vectors:
            out.append(Check(f"{collection} index", OK, f"indexed by {latest}"))
        else:
            out.append(Check(f"{collection} index", TODO, f"nothing indexed by {latest} yet", fix))
    partial = _unindexed(settings, store, names) + _scenes_left_out(settings, store, names)
    only_partly = {(name, f"indexed by {model}") for model, name, _ in partial}
    out = [c for c in out if (c.name, c.detail) not in only_partly]  # their todo instead
    return out + [check for _, _, check in partial]


def _unindexed(settings: Settings, store: Any, names: list[str]) -> list[tuple[str, str, Check]]:
    """A todo per latest model of each data spec (channels, satellites, clip length and gap)
    whose frames or clips are only partly in the store. Models that indexed nothing are left
    out: a model need not be indexed."""
    from skysearch.encoders.registry import model_satellites
    from skysearch.retrieval.indexing.catalogs import (
        CATALOG_COLLECTIONS,
        catalog_models,
        index_gaps,
    )
    from skysearch.retrieval.store.schema import CLIPS

    out = []
    for collection in CATALOG_COLLECTIONS:
        vectors = store.vector_config(collection) if collection in names else {}
        latest = {}  # oldest first: the last of each spec wins
        for record in catalog_models(settings.workspace, collection):
            data = record.config.get("data") or {}
            spec = [data.get("channels"), *model_satellites(data)]
            if collection == CLIPS:  # a frame model embeds the frames of any clip spec
                spec += [data.get("length"), data.get("gap_minutes")]
            if data.get("channels"):
                latest[str(spec)] = record
        for record in latest.values():
            if record.model_id not in vectors:
                continue
            missing, orphans, total = index_gaps(settings.workspace, store, collection, record)
            if missing or orphans:
                parts = []
                if missing:
                    parts.append(
                        f"{missing} of the {total} {collection} {record.model_id} indexes are not "
                        "in the store (added since its last index run, a run that stopped early, "
                        "or points the store lost)"
                    )
                if orphans:
                    why = "a clip spec rebuilt since" if collection == CLIPS else "a repair"
                    parts.append(
                        f"{orphans} of its points are {collection} the catalog no longer holds "
                        f"({why}): searches still find them"
                    )
                detail = "; ".join(parts)
                fix = f"skysearch index {collection} --model {record.model_id}"
                name = f"{collection} index"
                out.append((record.model_id, name, Check(name, TODO, detail, fix)))
    return out


def _scenes_left_out(
    settings: Settings, store: Any, names: list[str]
) -> list[tuple[str, str, Check]]:
    """A todo when the latest text-image model that indexed scenes holds only some of them
    (scenes have no catalog: the folders they came from are indexed again)."""
    from skysearch.encoders.registry import list_models
    from skysearch.retrieval.search.scenes import scene_coverage
    from skysearch.retrieval.store.schema import SCENES

    if SCENES not in names:
        return []
    vectors = store.vector_config(SCENES)
    indexed = [r.model_id for r in list_models(settings.workspace, "text-image")]
    indexed = [m for m in indexed if m in vectors]
    if not indexed:
        return []
    chosen, held, total = scene_coverage(store, indexed[-1:])
    if held[chosen] == total:
        return []
    detail = f"{total - held[chosen]} of the {total} scenes have no vector of {chosen}"
    fix = f"skysearch index scenes DIR --model-id {chosen} (each folder they came from)"
    return [(chosen, "scenes index", Check("scenes index", TODO, detail, fix))]


def _update(settings: Settings) -> list[Check]:
    """The last ``skysearch update`` run: finished, running now, or stopped midway."""
    from skysearch.locks import is_held

    run = last_run(settings.workspace)
    if run is None:
        return []
    if run.get("finished"):
        return [Check("update", OK, f"last run {run['started']}, finished {run['finished']}")]
    root = settings.workspace.root
    if is_held(root / LOCK_FILE):
        return [Check("update", OK, f"running since {run['started']}")]
    again = shlex.join(["skysearch", "update", *run["args"], "-w", str(root)])
    detail = f"the run started {run['started']} stopped before it finished (killed, or an error)"
    return [Check("update", TODO, detail, f"{again} (finishes what is left)")]


def _integrity(settings: Settings, deep: bool) -> list[Check]:
    from skysearch.ingest.integrity import TRACKS, check_workspace

    problems = check_workspace(settings.workspace, deep=deep)
    fix = f"skysearch repair -w {settings.workspace.root}"
    track = f"skysearch ingest-track FILE -w {settings.workspace.root}"
    if not problems:
        how = "every checksum" if deep else "sizes, shapes, sampled checksums; --deep: all"
        return [Check("integrity", OK, f"catalogs, frame store and sketches intact ({how})")]
    return [
        Check(
            f"integrity: {p.kind}",
            FAIL if p.damaged else TODO,
            p.line(),
            f"{track} (the event's best-track file)" if p.kind == TRACKS else f"{fix} ({p.remedy})",
        )
        for p in problems
    ]


def _sample(name: str, otherwise: str) -> str:
    """The bundled sample folder ``name`` where this checkout has it (an installed package
    does not), else the placeholder ``otherwise`` for the user's own data."""
    folder = REPO_SAMPLE / name
    return str(folder) if folder.is_dir() else otherwise


def _data_paths(settings: Settings) -> Check:
    shared = Path(
        os.environ.get(
            "SKYSEARCH_SHARED_DATA", REPO_SAMPLE.parent.parent.parent / "shared" / "data"
        )
    )
    found = [str(p) for p in (REPO_SAMPLE, shared) if p.is_dir()]
    if not found:
        return Check(
            "data paths",
            TODO,
            "neither the bundled sample nor ../shared/data found",
            "ingest your own archive: skysearch ingest PATH",
        )
    server = f"; QDRANT_URL={settings.qdrant_url}" if settings.qdrant_url else ""
    return Check("data paths", OK, ", ".join(found) + server)


def _run(
    name: str, fn: Callable[[], Check | list[Check]], fix: str, repair: str = ""
) -> list[Check]:
    """``fn``'s checks; an error is one failed check with ``fix`` (``repair`` for a damaged
    workspace file, when given)."""
    try:
        result = fn()
    except DamagedError as exc:
        return [Check(name, FAIL, str(exc), repair or fix)]
    except SkySearchError as exc:
        return [Check(name, FAIL, str(exc), fix)]
    except ImportError as exc:
        return [Check(name, FAIL, f"cannot import: {exc}", "pip install -e '.[dev]' (make demo)")]
    except Exception as exc:  # noqa: BLE001 - the doctor reports, it never crashes
        return [Check(name, FAIL, f"{type(exc).__name__}: {exc}", fix)]
    return result if isinstance(result, list) else [result]


def diagnose(settings: Settings, deep: bool = False) -> list[Check]:
    """All checks, in the order a new user meets them; ``deep`` verifies every checksum of the
    workspace's frames, sketches and model weights, and reads back every stored vector."""
    checks = _run("torch", _torch, "pip install -e '.[dev]' (make demo sets up .venv)")
    checks += _run("pretrained weights", _pretrained, "pip install -e '.[dev]'")
    checks += _run("workspace", lambda: _workspace(settings), "pass --workspace DIR")
    checks += _run("data paths", lambda: _data_paths(settings), "")
    root = settings.workspace.root
    if root.exists():
        repair = f"skysearch repair -w {root}"
        checks += _run("integrity", lambda: _integrity(settings, deep), repair)
        checks += _run("frames", lambda: _frames(settings), "re-run skysearch ingest PATH", repair)
        checks += _run("clips", lambda: _clips(settings), "re-run skysearch clips", repair)
        checks += _run("catalog files", lambda: _catalog_strays(settings), "")
        checks += _run(
            "update",
            lambda: _update(settings),
            f"make {root / STATE_FILE} and {root / LOCK_FILE} readable",
        )
        checks += _run("models", lambda: _models(settings, deep), repair, repair)
        store_fix = (
            "see the detail; check QDRANT_URL and that the server runs"
            if settings.qdrant_url
            else f"see the detail; {repair} (re-index the collection)"
        )
        checks += _run("store", lambda: _store(settings, deep), store_fix, repair)
    return checks
