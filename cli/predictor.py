"""``skysearch train predictor``, ``skysearch predict`` and ``skysearch eval augment``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from skysearch.cli.app import app
from skysearch.cli.groups import eval_app, train_app
from skysearch.cli.options import (
    ClipEventOption,
    DeviceOption,
    JsonOption,
    ThreadsOption,
    WorkspaceOption,
    one_name,
    positive,
    set_threads,
    share,
    share_or_none,
)
from skysearch.cli.output import emit_json, info, table

from skysearch.config import load_settings
from skysearch.errors import UsageError

ModelOption = Annotated[
    str | None, typer.Option("--model", help="Predictor model id (default: the latest).")
]


@train_app.command("predictor")
def train_predictor_command(
    length: Annotated[int, typer.Option(help="Clip length L (frames in and out).", min=1)] = 6,
    gap: Annotated[int, typer.Option(help="Minutes between clip frames.", min=1)] = 60,
    channels: Annotated[str | None, typer.Option(help="Clip channels, e.g. ir.")] = None,
    satellite: Annotated[str | None, typer.Option(help="Only this satellite.")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.", min=1)] = 30,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.", min=1)] = 8,
    lr: Annotated[float, typer.Option(help="Learning rate.", callback=positive)] = 1e-3,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same model).")] = 0,
    adversarial: Annotated[
        bool, typer.Option(help="SkySearch's adversarial mix (MSE / G / D steps).")
    ] = False,
    lambda_mse: Annotated[
        float | None,
        typer.Option(help="--adversarial: probability weight of an MSE step. [default: 0.6]"),
    ] = None,
    lambda_g: Annotated[
        float | None,
        typer.Option(help="--adversarial: probability weight of a G step. [default: 0.2]"),
    ] = None,
    lambda_d: Annotated[
        float | None,
        typer.Option(help="--adversarial: probability weight of a D step. [default: 0.2]"),
    ] = None,
    ortho_beta: Annotated[
        float | None,
        typer.Option(help="--adversarial: orthogonal regularisation weight. [default: 1e-4]"),
    ] = None,
    holdout: Annotated[
        float,
        typer.Option(help="Most recent fraction of time held out (0 < x < 1).", callback=share),
    ] = 0.2,
    validation: Annotated[
        float,
        typer.Option(
            help="Latest fraction of the training pairs that picks the epoch (0 <= x < 1; 0: "
            "no validation, the last epoch's weights).",
            callback=share_or_none,
        ),
    ] = 0.15,
    device: DeviceOption = None,
    restart: Annotated[bool, typer.Option(help="Discard an interrupted run's state.")] = False,
    threads: ThreadsOption = 0,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Train the SimVP-style video predictor (L frames -> next L frames) on the clip catalog.

    Trains on the earlier part of the archive, reports MSE/SSIM on the held-out most recent
    part against persistence, and registers the model. Re-run to resume an interrupted run.

    Example: skysearch train predictor --length 6 --gap 60 --epochs 30 -w ws
    """
    from skysearch.encoders.training.predictor import PredictorTrainConfig, train_predictor

    mix = {
        "lambda_mse": lambda_mse,
        "lambda_g": lambda_g,
        "lambda_d": lambda_d,
        "ortho_beta": ortho_beta,
    }
    given = {k: v for k, v in mix.items() if v is not None}
    if given and not adversarial:
        names = sorted(given)
        raise UsageError(
            f"{', '.join('{' + n + '}' for n in names)} "
            f"{'applies' if len(names) == 1 else 'apply'} only with {{adversarial}} "
            "(plain training steps on the MSE alone)",
            params=[*names, "adversarial"],
        )
    set_threads(threads)
    settings = load_settings(workspace=workspace, device=device)
    config = PredictorTrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        adversarial=adversarial,
        device=settings.device,
        **given,
    )
    result = train_predictor(
        settings.workspace.ensure(),
        config,
        satellite=satellite,
        channels=channels,
        length=length,
        gap_minutes=gap,
        holdout=holdout,
        validation=validation,
        restart=restart,
    )
    m = result["metrics"]
    info(
        f"predictor {result['model_id']}: held-out MSE {m['mse']:.5f} (persistence "
        f"{m['persistence_mse']:.5f}), SSIM {m['ssim']:.4f} (persistence "
        f"{m['persistence_ssim']:.4f}) on {m['test_pairs']} held-out pairs; weights of epoch "
        f"{m['best_epoch']} "
        + ("(best validation MSE)" if m["val_pairs"] else "(the last: no validation pairs)")
    )
    if json_out:
        emit_json(result)


@app.command("predict")
def predict_command(
    clip: Annotated[str, typer.Argument(help="Clip id or start time (UTC, ISO 8601).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Image to write (.png, .jpg, ...: the suffix picks the format)."
        ),
    ] = Path("strip.png"),
    event: ClipEventOption = None,
    model: ModelOption = None,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Predict the next clip of CLIP and write input, predicted and true frames as one image.

    Rows: the input frames, the prediction, the true following frames and persistence (when
    the archive has them), each frame captioned with its time.

    Example: skysearch predict 2017-09-10T12:45Z --out strip.png -w ws
    """
    from skysearch.encoders.predict import predict_strip

    settings = load_settings(workspace=workspace, device=device)
    event = one_name(event, "event")
    result = predict_strip(settings.workspace, clip, out, model, settings.device, event)
    info(f"wrote {out}")
    if "metrics" in result:
        rows = [
            {"": "predictor", **_fmt(result["metrics"])},
            {"": "persistence", **_fmt(result["persistence_metrics"])},
        ]
        info(table(rows, ["", "mse", "psnr", "ssim"]))
    if json_out:
        emit_json(result)


def _fmt(metrics: dict[str, float]) -> dict[str, str]:
    return {k: f"{v:.4f}" for k, v in metrics.items()}


@eval_app.command("augment")
def eval_augment_command(
    model: ModelOption = None,
    clip_model: Annotated[
        str | None, typer.Option(help="Clip model id (default: the latest).")
    ] = None,
    fusion: Annotated[str, typer.Option(help="Fusion: rrf, rerank or sum.")] = "rrf",
    beta: Annotated[
        float, typer.Option(help="Weight of the predicted future (rerank, sum; 0-1).")
    ] = 0.5,
    pool: Annotated[
        int, typer.Option(help="Plain hits re-ranked per query (at least the 10 scored).", min=10)
    ] = 100,
    future_weight: Annotated[
        float,
        typer.Option(help="Weight of the following clips in long-term relevance.", min=0, max=1),
    ] = 0.5,
    exclude_hours: Annotated[
        float,
        typer.Option(help="Candidates start more than this many hours from the query.", min=0),
    ] = 12.0,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Short- and long-term NDCG@10 of clip search with and without the predicted future.

    Also reports the predictor's held-out MSE/PSNR/SSIM against persistence (and against the
    plain-MSE predictor when the model is adversarial), and every fusion option's numbers.

    Example: skysearch eval augment --json -w ws
    """
    from skysearch.retrieval.evaluation.augment import AugmentEvalOptions, evaluate_augment
    from skysearch.retrieval.search.augment import AugmentOptions

    settings = load_settings(workspace=workspace, device=device)
    options = AugmentEvalOptions(
        device=settings.device,
        exclude_hours=exclude_hours,
        future_weight=future_weight,
        fusion=AugmentOptions(fusion, beta, pool).check(),
    )
    result = evaluate_augment(settings.workspace, model, clip_model, options)
    rows = [
        {
            "future": r["future"],
            "method": r["method"],
            "beta": r["beta"],
            "short": f"{r['short_ndcg_at_10']:.4f}",
            "long": f"{r['long_ndcg_at_10']:.4f}",
            "future_only": f"{r['future_only_ndcg_at_10']:.4f}",
        }
        for r in result["options"]
    ]
    info(table(rows, ["future", "method", "beta", "short", "long", "future_only"]))
    lt, st, p = (
        result["long_term_ndcg_at_10"],
        result["short_term_ndcg_at_10"],
        result["predictor"],
    )
    info(
        f"{result['queries']} held-out queries: long-term NDCG@10 {lt['plain']:.4f} -> "
        f"{lt['augmented']:.4f}, short-term {st['plain']:.4f} -> {st['augmented']:.4f}; "
        f"predictor MSE {p['mse']:.5f} vs persistence {p['persistence_mse']:.5f}"
    )
    if json_out:
        emit_json(result)
