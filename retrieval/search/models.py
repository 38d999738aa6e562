"""The models a search needs, chosen and loaded once per workspace: the clip model that fits a
query clip's spec, the single-channel frame model of a query frame's satellite and channel, the
predictor that fits a clip model (augmented queries), the text-image model. Loads run under a
lock, so one :class:`ModelCache` may be shared by threads."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from skysearch.encoders.registry import ModelRecord, list_models, model_satellites, resolve
from skysearch.retrieval.search.results import spec_text

from skysearch.config import Workspace
from skysearch.errors import NotFoundError

if TYPE_CHECKING:
    from skysearch.encoders.models.clip import ClipEmbedder
    from skysearch.encoders.models.frame import FrameEncoder
    from skysearch.encoders.models.predictor import SimVP
    from skysearch.encoders.models.text_image import TextImageModel
    from skysearch.encoders.models.text_query import TextQuery

#: A clip spec's part -> the parameter (flag, field) that sets it in a query.
SPEC_PARAMS = {
    "satellite": "satellite",
    "channels": "channel",
    "length": "length",
    "gap_minutes": "gap_minutes",
}


def _given(value: Any) -> bool:
    return value not in (None, [], ())


def fits(record: ModelRecord, spec: Mapping[str, Any], any_satellite: bool = False) -> bool:
    """Whether a model was trained on clips of ``spec`` (unset parts match any); a satellite
    fits a cross-satellite model trained on it among others. ``any_satellite``: a model named
    by the user may embed a satellite it never saw (same channels, length and gap)."""
    data = record.config.get("data", {})
    return all(
        not _given(value)
        or (
            any_satellite or value in model_satellites(data)
            if key == "satellite"
            else data.get(key) == value
        )
        for key, value in spec.items()
    )


def coverage_note(
    workspace: Workspace, record: ModelRecord, satellite: str, filtered: Sequence[str]
) -> dict[str, Any]:
    """What a search's query says of satellites: ``model_satellites`` (the model's vectors
    rank every hit; vectors of other models never mix in), and a ``note`` when the query's
    satellite is not among them or, with no satellite filter, when the catalog holds frames of
    the model's channels on satellites they leave out (only other models' vectors hold them)."""
    from skysearch.ingest.catalog import read_frames

    data = record.config.get("data", {})
    covered = model_satellites(data)
    out: dict[str, Any] = {"model_satellites": covered}
    if satellite not in covered:
        out["note"] = (
            f"model {record.model_id} was trained on {','.join(covered)}, not on the query's "
            f"satellite {satellite}: cross-satellite vectors"
        )
        return out
    if filtered:
        return out
    table = read_frames(workspace, columns=["satellite", "channel"])
    chans = set(data.get("channels", []))
    have = {s for s, c in zip(*table.to_pydict().values(), strict=True) if c in chans}
    left = sorted(have - set(covered))
    if left:
        out["note"] = (
            f"hits are {','.join(covered)} only: {','.join(left)} frames are not in the "
            f"vectors of model {record.model_id} (other models' vectors do not compare with "
            "them); train one model on every satellite to search across them"
        )
    return out


def pick_clip_model(workspace: Workspace, spec: Mapping[str, Any]) -> str:
    """The id of the latest clip model that fits ``spec``; NotFoundError says how to make one."""
    records = list_models(workspace, "clip")
    if not records:
        raise NotFoundError(
            f"no clip model trained yet in workspace {workspace.root}: run "
            "`skysearch train frames` then `skysearch train clips` and "
            "`skysearch index clips` (or `skysearch demo`)"
        )
    fitting = [r for r in records if fits(r, spec)]
    if fitting:
        return fitting[-1].model_id
    given = {key: v for key, v in spec.items() if _given(v)}
    words = {key: ",".join(v) if isinstance(v, list) else str(v) for key, v in given.items()}
    asked = " ".join(f"{{{SPEC_PARAMS[key]}}} {words[key]}" for key in given)
    # The commands that make one, in their own flags (``skysearch clips --channels ...``).
    flags = " ".join(f"--{key.replace('_minutes', '')} {words[key]}" for key in given)
    have = ", ".join(sorted({spec_text(r.config.get("data", {})) for r in records}))
    raise NotFoundError(
        f"no clip model fits {asked} (trained: {have}): build those clips and train one "
        f"(skysearch clips {flags}; skysearch train frames {flags}; skysearch train clips)"
        ", or query a trained spec",
        params=[SPEC_PARAMS[key] for key in given],
    )


def pick_frame_model(workspace: Workspace, satellite: str | None, channel: str | None) -> str:
    """The id of the latest single-channel frame model of ``satellite``/``channel`` (unset:
    any); NotFoundError says how to make one."""
    from skysearch.encoders.factory import single_channel_frame_models

    records = single_channel_frame_models(workspace)
    fitting = [
        r
        for r in records
        if fits(r, {"satellite": satellite, "channels": [channel] if channel else None})
    ]
    if fitting:
        return fitting[-1].model_id
    have = ", ".join(
        sorted(
            {
                f"{','.join(model_satellites(r.config['data']))} {r.config['data']['channels'][0]}"
                for r in records
            }
        )
    )
    asked = " ".join(x for x in (satellite, channel) if x) or "any frame"
    raise NotFoundError(
        f"no single-channel frame model fits {asked} in workspace {workspace.root} "
        f"(trained: {have or 'none'}): train one (skysearch train frames --channels "
        f"{channel or 'CHANNEL'}) and index it (skysearch index frames)",
        params=["channel", "satellite"],
    )


class ModelCache:
    """Clip models, predictors and text-image models of one workspace, each loaded once.
    ``trace_text``: text-image models embed texts through a trace of their text tower
    (:meth:`~skysearch.encoders.models.text_image.TextImageModel.trace_text_tower`; the
    service: worth its second at start-up when many queries follow)."""

    def __init__(self, workspace: Workspace, device: str = "cpu", trace_text: bool = False) -> None:
        self.workspace = workspace
        self.device = device
        self.trace_text = trace_text
        self._lock = threading.RLock()
        self._clip_models: dict[str, tuple[ClipEmbedder, ModelRecord]] = {}
        self._frame_models: dict[str, tuple[FrameEncoder, ModelRecord]] = {}
        self._predictors: dict[str, SimVP] = {}
        self._text_models: dict[str | None, TextImageModel] = {}
        self._text_queries: dict[str, TextQuery] = {}

    def clip_model(
        self, model_id: str | None = None, spec: Mapping[str, Any] | None = None
    ) -> tuple[ClipEmbedder, ModelRecord]:
        """(ClipEmbedder, ModelRecord): ``model_id``, else the latest clip model whose training
        spec fits ``spec`` (satellite, channels, length, gap_minutes; unset parts match any)."""
        from skysearch.encoders.factory import load_clip_embedder

        with self._lock:
            if model_id is None:
                model_id = pick_clip_model(self.workspace, spec or {})
            cached = self._clip_models.get(model_id)
            if cached is None:
                cached = load_clip_embedder(self.workspace, model_id, self.device)
                self._clip_models[model_id] = cached
            return cached

    def frame_model(
        self, model_id: str | None, satellite: str | None, channel: str | None
    ) -> tuple[FrameEncoder, ModelRecord]:
        """(FrameEncoder, ModelRecord): ``model_id``, else the latest single-channel frame
        model of ``satellite``/``channel`` (unset: any)."""
        from skysearch.encoders.factory import load_frame_encoder

        with self._lock:
            if model_id is None:
                model_id = pick_frame_model(self.workspace, satellite, channel)
            cached = self._frame_models.get(model_id)
            if cached is None:
                cached = load_frame_encoder(self.workspace, model_id, self.device)
                self._frame_models[model_id] = cached
            return cached

    def predictor(self, predictor_id: str | None, record: ModelRecord) -> SimVP:
        """The predictor ``predictor_id``, else the latest trained on the clip spec of the clip
        model ``record`` (augmented queries)."""
        from skysearch.encoders.factory import load_predictor_model

        with self._lock:
            if predictor_id is None:
                predictor_id = self._pick_predictor(record.config["data"])
            if predictor_id not in self._predictors:
                self._predictors[predictor_id] = load_predictor_model(
                    self.workspace, predictor_id, self.device
                )[0]
            return self._predictors[predictor_id]

    def _pick_predictor(self, data: Mapping[str, Any]) -> str:
        fitting = [
            r
            for r in list_models(self.workspace, "predictor")
            if r.config.get("satellite") in model_satellites(data)
            and list(r.config.get("channels", [])) == list(data["channels"])
            and r.config.get("length") == data["length"]
            and r.config.get("gap_minutes") == data["gap_minutes"]
        ]
        if not fitting:
            raise NotFoundError(
                f"{{augment}} needs a predictor for {spec_text(data)} clips: train one "
                f"with `skysearch train predictor --length {data['length']} --gap "
                f"{data['gap_minutes']}`",
                params=["augment"],
            )
        return fitting[-1].model_id

    def text_model(self, model_id: str | None = None) -> TextImageModel:
        """The fine-tuned text-image model ``model_id`` (None: the latest)."""
        from skysearch.encoders.factory import load_text_image

        with self._lock:
            if model_id not in self._text_models:
                tim = load_text_image(self.workspace, model_id, self.device)
                if self.trace_text:
                    tim.trace_text_tower()
                self._text_models[model_id] = tim
            return self._text_models[model_id]

    def text_encoder(self, model_id: str) -> TextImageModel | TextQuery:
        """What embeds the text queries of ``model_id``: the model if it is loaded (always in a
        service: ``trace_text``); on CPU otherwise its exported text side
        (:mod:`~skysearch.encoders.models.text_query`: a third of the load), written on the
        first query that loads the full model."""
        from skysearch.encoders.device import resolve_device
        from skysearch.encoders.models.text_query import export_text_query, load_text_query

        with self._lock:
            loaded = self._text_models.get(model_id) or self._text_queries.get(model_id)
            if loaded is not None:
                return loaded
            if self.trace_text or resolve_device(self.device).type != "cpu":
                return self.text_model(model_id)
            directory = resolve(self.workspace, "text-image", model_id).directory(self.workspace)
            light = load_text_query(directory, model_id)
            if light is not None:
                self._text_queries[model_id] = light
                return light
            tim = self.text_model(model_id)
            export_text_query(tim, directory)
            return tim
