"""``skysearch train frames|clips``, ``eval clips|frames|analogs``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from skysearch.cli.groups import eval_app, train_app
from skysearch.cli.options import (
    DeviceOption,
    JsonOption,
    ThreadsOption,
    WorkspaceOption,
    names,
    one_name,
    positive,
    set_threads,
    share,
    share_or_none,
)
from skysearch.cli.output import emit_json, info, table

from skysearch.config import load_settings
from skysearch.errors import UsageError

ObjectiveOption = Annotated[
    str,
    typer.Option(
        help="metric: supervised by the ground-truth grid similarity (small-cnn frames: cell "
        "pairs vs their KS D; clips: log-ratio loss on clip pairs); triplet: SkySearch's "
        "self-supervised temporal triplets (4 h / 8 h, margin 0.5). metric ranked better on "
        "the GOES validation slice."
    ),
]
SeedOption = Annotated[int, typer.Option(help="Random seed (runs are deterministic).")]
MinPairOption = Annotated[
    float | None,
    typer.Option(help="metric: ignore pairs closer in time than this many hours. [default: 12]"),
]


def _train_config(
    objective: str,
    epochs: int,
    batch_size: int,
    lr: float | None,
    seed: int,
    device: str,
    min_pair_hours: float,
):
    from skysearch.encoders.training.objectives import CLIP_LR, EncoderTrainConfig

    return EncoderTrainConfig(
        objective=objective,
        epochs=epochs,
        batch_size=batch_size,
        lr=CLIP_LR if lr is None else lr,
        seed=seed,
        device=device,
        min_pair_hours=min_pair_hours,
    )


def _report(record, json_out: bool) -> None:
    history = record.config.get("history", [])
    if history:
        from skysearch.encoders.training.loop import measure

        last = history[-1]
        rates = [measure(k, v) for k, v in last.items() if k.endswith("_per_s")]
        epochs = f"{len(history)} epoch{'s' if len(history) != 1 else ''}"
        info(
            f"{record.kind} model {record.model_id}: {epochs}, final loss "
            f"{last['loss']:.4f}{''.join(', ' + rate for rate in rates)}"
        )
    if json_out:
        emit_json(record.to_dict())


@train_app.command("frames")
def train_frames_command(
    channels: Annotated[
        str | None,
        typer.Option(
            help="Channels stacked as input, e.g. ir or ir,wv (clips of them must exist)."
        ),
    ] = None,
    satellite: Annotated[
        str | None, typer.Option(help="Satellite (default: by clip count).")
    ] = None,
    satellites: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated satellites, e.g. coms,gk2a: one model on the clips of each "
            "(same channels, length and gap; each split by time on its own range)."
        ),
    ] = None,
    length: Annotated[
        int | None, typer.Option(help="Clip length L of the clip spec.", min=1)
    ] = None,
    gap: Annotated[
        int | None, typer.Option(help="Clip gap G (minutes) of the clip spec.", min=1)
    ] = None,
    backbone: Annotated[
        str, typer.Option(help="small-cnn, or efficientnet-lite0 (ImageNet, frozen + head).")
    ] = "small-cnn",
    objective: ObjectiveOption = "metric",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 2,
    min_pair_hours: Annotated[
        float | None,
        typer.Option(
            help="metric on frame pairs (efficientnet-lite0): ignore pairs closer in time than "
            "this many hours. [default: 0]"
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Frames per step (triplet, or efficientnet-lite0). [default: 32; the "
            "small-cnn's metric training steps on 4,096 cell pairs]"
        ),
    ] = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.", callback=positive)] = 1e-3,
    holdout: Annotated[
        float,
        typer.Option(
            help="Most recent fraction of the time range held out for eval (0 < x < 1).",
            callback=share,
        ),
    ] = 0.2,
    validation: Annotated[
        float,
        typer.Option(
            help="Also keep this most recent fraction of the training range out, for choosing "
            "settings with `eval clips --split validation` (0 <= x < 1; 0 = train on all of "
            "it).",
            callback=share_or_none,
        ),
    ] = 0.0,
    device: DeviceOption = None,
    threads: ThreadsOption = 0,
    seed: SeedOption = 0,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Train a frame encoder on the earlier part of the archive (resumable: re-run continues).

    Example: skysearch train frames --channels ir --epochs 2 -w ws
    """
    from skysearch.encoders.training.frames import DataSpec, train_frames

    _refuse_unused(objective, backbone, min_pair_hours, batch_size)
    set_threads(threads)
    settings = load_settings(workspace=workspace, device=device)
    channel_list = list(names(channels, "channels")) or None
    data = DataSpec(
        _satellites(satellite, satellites), channel_list, length, gap, holdout, validation
    )
    config = _train_config(
        objective,
        epochs,
        32 if batch_size is None else batch_size,
        lr,
        seed,
        settings.device,
        0.0 if min_pair_hours is None else min_pair_hours,
    )
    _report(train_frames(settings.workspace, data, config, backbone), json_out)


def _metric_only(objective: str, min_pair_hours: float | None) -> None:
    """Triplets pair clips by their time windows: --min-pair-hours would change nothing."""
    if min_pair_hours is not None and objective == "triplet":
        raise UsageError(
            "{min_pair_hours} applies to the metric objective only", params=["min_pair_hours"]
        )


def _refuse_unused(
    objective: str, backbone: str, min_pair_hours: float | None, batch_size: int | None
) -> None:
    """The small-cnn's metric training steps on cell pairs, not frames, and pairs no frames by
    time: options that would change nothing are refused, not silently dropped."""
    _metric_only(objective, min_pair_hours)
    if objective != "metric" or backbone != "small-cnn":
        return
    applies = {
        "min_pair_hours": "{backbone} efficientnet-lite0",
        "batch_size": "{backbone} efficientnet-lite0 or {objective} triplet",
    }
    for name, value in (("min_pair_hours", min_pair_hours), ("batch_size", batch_size)):
        if value is not None:
            raise UsageError(
                f"{{{name}}} does not apply to the small-cnn's metric training (it learns "
                f"from 4,096 random cell pairs a step); it applies with {applies[name]}",
                params=[name, "backbone", "objective"],
            )


def _satellites(satellite: str | None, satellites: str | None) -> str | list[str] | None:
    """``--satellite a`` or ``--satellites a,b`` (not both)."""
    satellite = one_name(satellite, "satellite")
    if satellite and satellites is not None:
        raise UsageError(
            "give {satellite} or {satellites}, not both", params=["satellite", "satellites"]
        )
    if satellites is None:
        return satellite
    return list(names(satellites, "satellites"))


@train_app.command("clips")
def train_clips_command(
    frame_model: Annotated[
        str | None, typer.Option(help="Frame model id (default: the latest).")
    ] = None,
    length: Annotated[
        int | None, typer.Option(help="Clip length (default: frame model's).", min=1)
    ] = None,
    gap: Annotated[
        int | None, typer.Option(help="Clip gap minutes (default: frame model's).", min=1)
    ] = None,
    objective: ObjectiveOption = "metric",
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 10,
    min_pair_hours: MinPairOption = None,
    batch_size: Annotated[int, typer.Option(help="Clips per step.")] = 32,
    lr: Annotated[
        float | None,
        typer.Option(help="AdamW learning rate. [default: 1e-4 for clips]", callback=positive),
    ] = None,
    device: DeviceOption = None,
    threads: ThreadsOption = 0,
    seed: SeedOption = 0,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Train a clip encoder over a frozen frame encoder (resumable: re-run continues).

    Example: skysearch train clips --epochs 10 -w ws
    """
    from skysearch.encoders.training.clips import train_clips

    _metric_only(objective, min_pair_hours)
    set_threads(threads)
    settings = load_settings(workspace=workspace, device=device)
    config = _train_config(
        objective,
        epochs,
        batch_size,
        lr,
        seed,
        settings.device,
        12.0 if min_pair_hours is None else min_pair_hours,
    )
    _report(train_clips(settings.workspace, config, frame_model, length, gap), json_out)


ExcludeHoursOption = Annotated[
    float,
    typer.Option(help="Candidates lie more than this many hours from the query.", min=0),
]
BaselinesOption = Annotated[
    bool, typer.Option(help="Also score raw-pixel, ImageNet and random baselines.")
]
SplitOption = Annotated[
    str,
    typer.Option(
        help="test: the held-out period; validation: the model's validation slice "
        "(models trained with --validation), on the archive before the hold-out."
    ),
]

EvalSatelliteOption = Annotated[
    str | None,
    typer.Option(
        help="Score this satellite's clips or frames (default: the model's first). One the "
        "model was not trained on (same channels): cross-satellite, its hold-out by the "
        "model's fraction of its own time range."
    ),
]


@eval_app.command("clips")
def eval_clips_command(
    model: Annotated[str | None, typer.Option(help="Clip model id (default: the latest).")] = None,
    exclude_hours: ExcludeHoursOption = 12.0,
    baselines: BaselinesOption = True,
    split: SplitOption = "test",
    satellite: EvalSatelliteOption = None,
    device: DeviceOption = None,
    seed: SeedOption = 0,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Score a clip model on the held-out period against the ground-truth grid metric.

    Example: skysearch eval clips --json -w ws
    """
    from skysearch.retrieval.evaluation.clips import evaluate_clips

    _evaluate(
        evaluate_clips,
        model,
        exclude_hours,
        baselines,
        split,
        device,
        seed,
        workspace,
        json_out,
        satellite=satellite,
    )


@eval_app.command("analogs")
def eval_analogs_command(
    model: Annotated[str | None, typer.Option(help="Clip model id (default: the latest).")] = None,
    k: Annotated[int, typer.Option(help="Analogs retrieved per query.", min=1, max=1000)] = 5,
    exclude_hours: ExcludeHoursOption = 12.0,
    baselines: BaselinesOption = True,
    split: SplitOption = "test",
    satellite: Annotated[
        str | None,
        typer.Option(
            help="Queries and candidates among this satellite's clips (default: the model's "
            "first); it needs a best track."
        ),
    ] = None,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Judge analog search by the weather: are the top-k past clips storms of alike strength
    (JMA best track: pressure, class, wind) as the held-out query? Candidates from the query's
    own event and from other events are reported apart; n/a where there is no best track.

    Example: skysearch eval analogs --json -w ws
    """
    from skysearch.retrieval.evaluation.analogs import evaluate_analogs

    _evaluate(
        evaluate_analogs,
        model,
        exclude_hours,
        baselines,
        split,
        device,
        0,
        workspace,
        json_out,
        k=k,
        render=_analog_lines,
        satellite=satellite,
    )


def _analog_lines(result: dict[str, Any]) -> list[str]:
    """``eval analogs``: storm differences of the top k per setting and method."""
    from skysearch.retrieval.evaluation.analogs import SETTINGS

    proto = result["protocol"]
    lines = [
        f"top {proto['k']} analogs of held-out clips ({proto['split']} split, from "
        f"{proto['holdout_start']}), best track of events: "
        f"{', '.join(proto['events_with_track']) or 'none'}"
    ]
    for setting in SETTINGS:
        scores = result[setting]
        if "n/a" in scores:
            lines.append(f"{setting}: n/a ({scores['n/a']})")
            continue
        lines.append(
            f"{setting}: {scores['queries']} queries, ~{scores['mean_candidates']:.0f} "
            "candidates each"
        )
        rows = [
            {
                "method": name,
                "|dP| hPa": f"{scores['pressure_mae_hpa'][name]:.2f}",
                f"class@{proto['k']}": f"{scores['class_agreement_at_k'][name]:.3f}",
                "|dV| kt": f"{scores['wind_mae_kt'][name]:.2f}",
            }
            for name in scores["pressure_mae_hpa"]
        ]
        lines.append(table(rows, list(rows[0])))
    return lines


@eval_app.command("frames")
def eval_frames_command(
    model: Annotated[
        str | None, typer.Option(help="Single-channel frame model id (default: the latest).")
    ] = None,
    exclude_hours: ExcludeHoursOption = 12.0,
    baselines: BaselinesOption = True,
    split: SplitOption = "test",
    satellite: EvalSatelliteOption = None,
    device: DeviceOption = None,
    seed: SeedOption = 0,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Score a frame model's frame search on the held-out period against the ground-truth grid
    metric on single frames, beside raw pixels, ImageNet and random.

    Example: skysearch eval frames --json -w ws
    """
    from skysearch.retrieval.evaluation.frames import evaluate_frames

    _evaluate(
        evaluate_frames,
        model,
        exclude_hours,
        baselines,
        split,
        device,
        seed,
        workspace,
        json_out,
        satellite=satellite,
    )


def _evaluate(
    evaluate: Callable[..., dict[str, Any]],
    model: str | None,
    exclude_hours: float,
    baselines: bool,
    split: str,
    device: str | None,
    seed: int,
    workspace: Path | None,
    json_out: bool,
    k: int = 10,
    render: Callable[[dict[str, Any]], list[str]] | None = None,
    satellite: str | None = None,
) -> None:
    """Run one evaluation, record the trained model's scores in the registry, print them
    (``render``: the result's lines; by default the ranking scores of ``eval clips|frames``)."""
    from skysearch.retrieval.evaluation.clips import EvalOptions
    from skysearch.retrieval.evaluation.records import record_scores

    settings = load_settings(workspace=workspace, device=device)
    options = EvalOptions(
        k=k,
        exclude_hours=exclude_hours,
        seed=seed,
        baselines=baselines,
        device=settings.device,
        split=split,
        satellite=satellite,
    )
    result = evaluate(settings.workspace, model, options)
    record_scores(settings.workspace, result, split, satellite)
    for line in (render or _ranking_lines)(result):
        info(line)
    if json_out:
        emit_json(result)


def _ranking_lines(result: dict[str, Any]) -> list[str]:
    """``eval clips`` / ``eval frames``: NDCG@10, recall@10 and Pearson per method."""
    rows = [
        {
            "method": name,
            "ndcg@10": f"{result['ndcg_at_10'][name]:.3f}",
            "recall@10": f"{result['recall_at_10'][name]:.3f}",
            "pearson": "n/a" if (r := result["pearson"][name]) is None else f"{r:+.3f}",
        }
        for name in result["ndcg_at_10"]
    ]
    proto = result["protocol"]
    split = proto["split"]
    head = (
        f"{proto['queries']} {'held-out' if split == 'test' else split} queries of "
        f"{proto['satellite']} (from {proto['holdout_start']}), "
        f"~{proto['mean_candidates']:.0f} candidates each, {proto['pearson_pairs']} pairs"
    )
    note = "pearson: of vector distance with grid similarity over the pairs (-1 is best)"
    return [head, table(rows, ["method", "ndcg@10", "recall@10", "pearson"]), note]
