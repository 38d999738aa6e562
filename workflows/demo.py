"""The one-command demo (``skysearch demo``, ``make demo``): the README path on bundled real data.

Ingest the GOES-East Irma sample (60 hourly IR frames + one bad file), assemble 6 x 60 min
clips, train a small frame encoder and a clip encoder, index the clips into the embedded
store, run one clip search (with a contact sheet); train the text-image model's heads on the
RSSCN7 sample scenes (the default recipe: frozen towers, fused concept-bank heads), index the
scenes, run one text search. Each step is timed.

Idempotent: every step is, or is skipped when its output exists. The demo's models are
remembered in ``<workspace>/demo/state.json`` (with the settings that made them) and reused on
re-runs; a change of settings trains new ones. Training is seeded, so a fresh workspace gets
the same models again (on the same torch build and device).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skysearch.workflows.steps import Step, Steps

from skysearch.atomic import atomic_write_json
from skysearch.config import Settings
from skysearch.errors import SkySearchError, UsageError

if TYPE_CHECKING:
    from skysearch.retrieval.search import Searcher

#: The real data bundled with the repository (the demo's input, the hints of ``doctor``).
REPO_SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


@dataclass(frozen=True)
class DemoConfig:
    """Everything that decides the demo's outputs (its models are keyed by it)."""

    sample: Path = REPO_SAMPLE
    length: int = 6
    gap_minutes: int = 60
    frame_backbone: str = "small-cnn"
    frame_epochs: int = 2
    clip_epochs: int = 30
    seed: int = 0
    query_at: str = "2017-09-07T00:45Z"
    query_k: int = 5
    query_rerank: int = 20
    query_exclude: str = "6h"
    #: The frame search's query: this sample file, searched as a frame from outside the archive.
    query_frame: str = "HUIR172500045.GIF"
    text_epochs: int = 15
    text_image_tower: str = "last-stage"  # the default recipe: last stages tuned, fused heads
    text_query: str = "a river"
    threads: int = 0

    @property
    def goes(self) -> Path:
        return self.sample / "goes-irma-2017"

    @property
    def scenes(self) -> Path:
        return self.sample / "rsscn7-mini"

    def model_key(self, part: str) -> dict[str, Any]:
        """The settings a model depends on (a change retrains)."""
        keys = {
            "frame": ["length", "gap_minutes", "frame_backbone", "frame_epochs", "seed"],
            "clip": [
                "length",
                "gap_minutes",
                "frame_backbone",
                "frame_epochs",
                "clip_epochs",
                "seed",
            ],
            "text": ["text_epochs", "text_image_tower", "seed"],
        }[part]
        return {k: getattr(self, k) for k in keys}


@dataclass
class DemoReport:
    workspace: str
    steps: list[Step] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    clip_search: dict[str, Any] = field(default_factory=dict)
    frame_search: dict[str, Any] = field(default_factory=dict)
    text_search: dict[str, Any] = field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.steps)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_seconds"] = round(self.total_seconds, 1)
        return out


class _State:
    """``demo/state.json``: model ids the demo made, with the settings that made them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        if path.is_file():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:  # not UTF-8, not JSON
                raise UsageError(f"{path} is corrupt ({exc}); delete it to start over") from None
            if not isinstance(self.data, dict):
                raise UsageError(f"{path} is not a JSON object; delete it to start over")

    def model(
        self, part: str, key: dict[str, Any], load: Callable[[str], Any] | None = None
    ) -> str | None:
        """The remembered model id, if made with ``key`` and it still loads (``load(id)``):
        after an upgrade that changed an architecture, the demo trains a new one."""
        entry = self.data.get(part)
        if not isinstance(entry, dict) or entry.get("key") != key:
            return None  # not made yet, made otherwise, or a damaged entry: made again
        if not isinstance(entry.get("model_id"), str):
            return None
        try:
            if load is not None:
                load(entry["model_id"])
        except SkySearchError:
            return None
        return entry["model_id"]

    def remember(self, part: str, key: dict[str, Any], model_id: str) -> None:
        self.data[part] = {"key": key, "model_id": model_id}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, self.data, indent=2)


def run_demo(
    settings: Settings,
    config: DemoConfig | None = None,
    say: Callable[[str], None] = print,
) -> DemoReport:
    """Run (or re-run) the demo in ``settings.workspace``; ``say`` gets one line per step."""
    from skysearch.retrieval.search import Searcher

    config = config or DemoConfig()
    for path in (config.goes, config.scenes):
        if not path.is_dir():
            raise UsageError(
                f"demo sample {path} not found: run the demo from a clone of the repository "
                "(data/sample/), or pass {sample} DIR",
                params=["sample"],
            )
    if config.threads > 0:
        import torch

        torch.set_num_threads(config.threads)
    ws = settings.workspace.ensure()
    out_dir = ws.root / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _State(out_dir / "state.json")
    report = DemoReport(workspace=str(ws.root))

    step = Steps("demo", say, report.steps)

    with step("ingest GOES-East sample") as d:
        from skysearch.ingest.pipeline import ingest

        rep = ingest([config.goes], ws, progress=False)
        d.append(f"{rep.frames_added} frames added, {len(rep.skipped)} bad file(s) skipped")
        for item in rep.skipped:
            d.append(f"skipped {Path(item['path']).name}: {item['reason']}")
    with step("similarity sketches") as d:
        from skysearch.ingest.similarity import SketchStore

        d.append(SketchStore(ws).update(progress=False).summary_line())
    with step(f"clips {config.length}x{config.gap_minutes}m") as d:
        from skysearch.ingest.clips import build_clips

        clips = build_clips(ws, length=config.length, gap_minutes=config.gap_minutes)
        d.append(f"{clips.clips_total} clips ({clips.incomplete} start times with gaps skipped)")

    frame_id = _train_frames(ws, config, state, step, settings.device)
    clip_id = _train_clips(ws, config, state, step, frame_id, settings.device)

    with Searcher(settings) as searcher:
        with step("index clips") as d:
            from skysearch.retrieval.indexing.catalogs import index_clips

            idx = index_clips(settings, clip_id, workers=0, store=searcher.store, progress=False)
            d.append(f"{idx.written} vectors written, {idx.skipped_existing} already indexed")
        with step("search clip + contact sheet") as d:
            from skysearch.retrieval.search import ClipQuery, SearchOptions
            from skysearch.retrieval.store.filters import SearchFilters

            from skysearch.timeutil import parse_duration

            result = searcher.search_clip(
                ClipQuery(at=config.query_at, channels=("ir",)),
                SearchFilters(
                    exclude_window=parse_duration(config.query_exclude), k=config.query_k
                ),
                SearchOptions(rerank=config.query_rerank, model_id=clip_id),
            )
            report.clip_search = _save_search(searcher, result, out_dir, "clip", report.outputs)
            d.append(_top_hit(f"query {config.query_at} ir", result, "score"))
        with step("index frames + search frame") as d:
            from skysearch.retrieval.indexing.catalogs import index_frames
            from skysearch.retrieval.search import FrameQuery

            idx = index_frames(settings, frame_id, workers=0, store=searcher.store, progress=False)
            d.append(f"{idx.written} frame vectors written")
            result = searcher.search_frame(
                FrameQuery(file=config.goes / "infrared" / config.query_frame),
                SearchFilters(
                    exclude_window=parse_duration(config.query_exclude), k=config.query_k
                ),
                SearchOptions(rerank=config.query_rerank, model_id=frame_id),
            )
            report.frame_search = _save_search(searcher, result, out_dir, "frame", report.outputs)
            d.append(_top_hit(f"query {config.query_frame}", result, "grid"))
        text_id = _train_text(ws, config, state, step, settings.device)
        with step("index scenes") as d:
            from skysearch.retrieval.indexing.scenes import index_scenes

            tim = searcher.text_model(text_id)
            rep = index_scenes(
                settings, config.scenes, tim=tim, store=searcher.store, progress=False
            )
            d.append(
                f"{rep.total} scenes, {rep.written} embedded, {rep.skipped_existing} unchanged"
            )
            # The README's next command is a one-shot text search: it then loads only this.
            from skysearch.encoders.models.text_query import export_text_query
            from skysearch.encoders.registry import resolve

            export_text_query(tim, resolve(ws, "text-image", text_id).directory(ws))
        with step("search text") as d:
            from skysearch.retrieval.store.filters import SearchFilters

            result = searcher.search_text(config.text_query, SearchFilters(k=5), text_id)
            report.text_search = result.to_dict()
            _write_json(out_dir / "text_search.json", report.text_search)
            labels = [r.label for r in result.results]
            d.append(f"{config.text_query!r}: top-5 labels {', '.join(map(str, labels))}")
            report.outputs["text_search"] = str(out_dir / "text_search.json")
    report.outputs["workspace"] = str(ws.root)
    report.outputs["summary"] = str(out_dir / "summary.json")
    _write_json(out_dir / "summary.json", report.to_dict())
    return report


def _save_search(
    searcher: Searcher, result: Any, out_dir: Path, kind: str, outputs: dict[str, str]
) -> dict[str, Any]:
    """Write a clip or frame search's contact sheet and JSON into ``out_dir``; their paths go
    to ``outputs`` (the clip search's sheet keeps its historical name, ``contact_sheet``)."""
    from skysearch.retrieval.search.contact_sheet import write_contact_sheet

    sheet_key = "contact_sheet" if kind == "clip" else f"{kind}_contact_sheet"
    sheet = write_contact_sheet(
        searcher.workspace, result, out_dir / f"{sheet_key}.png", frame_store=searcher.frame_store
    )
    found = result.to_dict()
    _write_json(out_dir / f"{kind}_search.json", found)
    outputs[sheet_key] = sheet["path"]
    outputs[f"{kind}_search"] = str(out_dir / f"{kind}_search.json")
    return found


def _top_hit(query: str, result: Any, score: str) -> str:
    top = result.results[0] if result.results else None
    return f"{query}, top hit {top.start} {score} {top.score:.3f}" if top else "no hits"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_json(path, payload, indent=2, default=str)


def _reuse_or_train(
    state: _State,
    step: Any,
    name: str,
    part: str,
    key: dict[str, Any],
    load: Callable[[str], Any],
    train: Callable[[], tuple[str, str]],
) -> str:
    """A demo step that reuses the remembered model or trains one (``train() -> (id, detail)``)."""
    with step(name) as d:
        model_id = state.model(part, key, load)
        if model_id:
            d.append(f"reused {model_id}")
            return model_id
        model_id, detail = train()
        state.remember(part, key, model_id)
        d.append(f"{model_id} ({detail})")
        return model_id


def _train_frames(ws: Any, config: DemoConfig, state: _State, step: Any, device: str) -> str:
    from skysearch.encoders.factory import load_frame_encoder
    from skysearch.encoders.training.frames import DataSpec, train_frames
    from skysearch.encoders.training.objectives import EncoderTrainConfig

    def train() -> tuple[str, str]:
        record = train_frames(
            ws,
            DataSpec("goes-east", ["ir"], config.length, config.gap_minutes),
            EncoderTrainConfig(epochs=config.frame_epochs, seed=config.seed, device=device),
            config.frame_backbone,
        )
        loss = record.config["history"][-1]["loss"]
        return record.model_id, f"{config.frame_epochs} epochs, loss {loss:.4f}"

    load = lambda m: load_frame_encoder(ws, m)  # noqa: E731
    key = config.model_key("frame")
    return _reuse_or_train(state, step, "train frame encoder", "frame", key, load, train)


def _train_clips(
    ws: Any, config: DemoConfig, state: _State, step: Any, frame_id: str, device: str
) -> str:
    from skysearch.encoders.factory import load_clip_embedder
    from skysearch.encoders.training.clips import train_clips
    from skysearch.encoders.training.objectives import CLIP_LR, EncoderTrainConfig

    def train() -> tuple[str, str]:
        cfg = EncoderTrainConfig(
            epochs=config.clip_epochs, lr=CLIP_LR, seed=config.seed, device=device
        )
        record = train_clips(ws, cfg, frame_id)
        loss = record.config["history"][-1]["loss"]
        return record.model_id, f"{config.clip_epochs} epochs, loss {loss:.4f}"

    load = lambda m: load_clip_embedder(ws, m)  # noqa: E731
    key = {**config.model_key("clip"), "frame_model": frame_id}
    return _reuse_or_train(state, step, "train clip encoder", "clip", key, load, train)


def _train_text(ws: Any, config: DemoConfig, state: _State, step: Any, device: str) -> str:
    from skysearch.encoders import registry
    from skysearch.encoders.datasets.captions import DEFAULT_SEED
    from skysearch.encoders.training.text_image import train_text_image
    from skysearch.encoders.training.text_image_data import prepare_folder
    from skysearch.encoders.training.text_image_recipe import TextImageTrainConfig

    def train() -> tuple[str, str]:
        csvs = prepare_folder(config.scenes, ws, DEFAULT_SEED)
        summary = train_text_image(
            TextImageTrainConfig(
                train_csv=str(csvs["train"]),
                val_csv=str(csvs["val"]),
                epochs=config.text_epochs,
                image_tower=config.text_image_tower,
                seed=config.seed,
                split_seed=DEFAULT_SEED,
                device=device,
            ),
            ws,
            progress=False,
        )
        top1 = (summary.get("history") or [{}])[-1].get("val_zero_shot_top1")
        score = f", val zero-shot top-1 {top1:.2f}" if top1 is not None else ""
        return summary["model_id"], f"{config.text_epochs} epochs{score}"

    load = lambda m: registry.resolve(ws, "text-image", m)  # noqa: E731
    name = "train text-image model on RSSCN7 sample"
    return _reuse_or_train(state, step, name, "text", config.model_key("text"), load, train)
