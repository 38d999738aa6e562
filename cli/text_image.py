"""``skysearch train|eval text-image``, ``index scenes``, ``search text|image``."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from skysearch.cli.groups import eval_app, index_app, search_app, train_app
from skysearch.cli.options import (
    AddressOption,
    DeviceOption,
    EngineName,
    EngineOption,
    JsonOption,
    ThreadsOption,
    WorkspaceOption,
    names,
    positive,
    set_threads,
)
from skysearch.cli.output import emit_json, info, table
from skysearch.cli.search import (
    BboxOption,
    BetweenOption,
    KOption,
    build_filters,
    render_result,
)
from skysearch.encoders.datasets.captions import DEFAULT_SEED

from skysearch.config import load_settings
from skysearch.errors import UsageError, some_of

ModelIdOption = Annotated[
    str | None,
    typer.Option(
        "--model-id", "--model", help="Fine-tuned text-image model id (default: the latest)."
    ),
]
SceneModelOption = Annotated[
    str | None,
    typer.Option(
        "--model-id",
        "--model",
        help="Text-image model id (default: the latest one the scenes were indexed with).",
    ),
]


@train_app.command("text-image")
def train_text_image_command(
    images: Annotated[
        list[Path] | None,
        typer.Option(
            help="Class-folder image set: converted to SkyScript CSVs, split, tuned "
            "(repeatable: several sets train one model)."
        ),
    ] = None,
    train_csv: Annotated[
        list[Path] | None,
        typer.Option(
            "--train-csv",
            "--csv",
            help="SkyScript CSV (filepath, title, title_multi_objects); repeatable.",
        ),
    ] = None,
    val_csv: Annotated[
        list[Path] | None, typer.Option(help="Validation CSV (same format); repeatable.")
    ] = None,
    exclude_classes: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated classes left out of training: their images and every "
            "caption naming them (for honest unseen-class evaluation)."
        ),
    ] = None,
    caption_key: Annotated[
        str, typer.Option(help="CSV column holding the caption (title or title_multi_objects).")
    ] = "title",
    model: Annotated[
        str,
        typer.Option(
            help="open_clip architecture to train (not a trained model id); default: offline "
            "EfficientNet-Lite0 + MiniLM towers."
        ),
    ] = "SkySearch-Lite0-MiniLM",
    pretrained: Annotated[
        str | None,
        typer.Option(help="Local checkpoint file, or an open_clip tag (needs a reachable hub)."),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Training epochs (more epochs continue the run into a new model); default: "
            "the recipe's (last-stage 15, "
            "locked and tuned 30). 0 registers a --pretrained checkpoint unchanged.",
            min=0,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Image-caption pairs per step.", min=2)] = 128,
    lr: Annotated[
        float, typer.Option(help="Learning rate of the unlocked image blocks.", callback=positive)
    ] = 5e-4,
    head_lr: Annotated[
        float, typer.Option(help="Learning rate of the projection heads.", callback=positive)
    ] = 1e-3,
    image_tower: Annotated[
        str,
        typer.Option(
            help="last-stage: the ImageNet trunk's last two stages train over its frozen "
            "stages' cached activations of 4 rotations (default); locked: frozen trunk, "
            "features computed once, heads train; tuned: the last --unlocked-image-groups "
            "train on augmented pixels."
        ),
    ] = "last-stage",
    text_head: Annotated[
        str,
        typer.Option(
            help="locked: keep the text projection fixed (MiniLM's own sentence space); "
            "trained: train it too."
        ),
    ] = "locked",
    image_size: Annotated[
        int | None, typer.Option(help="Input size (default: the model config's).", min=32)
    ] = None,
    unlocked_image_groups: Annotated[
        int | None,
        typer.Option(
            help="Tuned image tower: last layer groups that train (the rest frozen). Default: 11.",
            min=0,
        ),
    ] = None,
    positives: Annotated[
        str,
        typer.Option(
            help="Contrastive positives: label (same class, when the CSV has labels) "
            "or caption (identical captions only)."
        ),
    ] = "label",
    seed: Annotated[int, typer.Option(help="Random seed (deterministic runs).")] = 0,
    split_seed: Annotated[
        int, typer.Option(help="Seed of the train/val/test split.")
    ] = DEFAULT_SEED,
    max_steps: Annotated[
        int | None, typer.Option(help="Cap on steps per epoch (smoke runs).", min=1)
    ] = None,
    threads: ThreadsOption = 0,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Fine-tune a CLIP-style model on image-caption pairs (contrastive loss, rotations).

    Resumable: re-running the same command continues after the last finished epoch.

    Example: skysearch train text-image --images ../shared/data/aid-20 --images
    ../shared/data/rsscn7 -w ws
    """
    from skysearch.encoders.training.text_image import train_text_image
    from skysearch.encoders.training.text_image_data import prepare_training_data
    from skysearch.encoders.training.text_image_recipe import (
        TextImageTrainConfig,
        check_architecture,
        check_choices,
        check_epochs,
    )

    check_epochs(epochs, pretrained)  # before anything is written
    check_architecture(model)
    check_choices(positives=positives, image_tower=image_tower, text_head=text_head)
    if unlocked_image_groups is not None and image_tower != "tuned":  # it changed nothing
        raise UsageError(
            "{unlocked_image_groups} applies with {image_tower} tuned",
            params=["unlocked_image_groups", "image_tower"],
        )
    tuning = (
        {"unlocked_image_groups": unlocked_image_groups}
        if unlocked_image_groups is not None
        else {}
    )
    excluded = list(names(exclude_classes, "exclude_classes"))
    set_threads(threads)
    settings = load_settings(workspace=workspace, device=device)
    ws = settings.workspace.ensure()
    if not images and not train_csv:
        raise UsageError("pass --images DIR (class folders) or --train-csv FILE")
    data = prepare_training_data(
        ws, images or [], train_csv or [], val_csv or [], split_seed, excluded
    )
    info(f"training captions: {data['train']}")
    if any(data["removed"].values()):
        info(f"excluded {excluded}: {data['removed']} rows removed")
    cfg = TextImageTrainConfig(
        train_csv=str(Path(data["train"]).resolve()),
        val_csv=str(Path(data["val"]).resolve()) if data["val"] else None,
        caption_key=caption_key,
        model_name=model,
        pretrained=pretrained,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        head_lr=head_lr,
        image_size=image_size,
        **tuning,
        image_tower=image_tower,
        text_head=text_head,
        positives=positives,
        seed=seed,
        split_seed=split_seed if images else None,
        max_steps_per_epoch=max_steps,
        device=settings.device,
    )
    summary = train_text_image(cfg, ws, left_out=data["skipped"])
    if summary.get("skipped"):
        info(
            f"skipped {len(summary['skipped'])} file(s) or row(s): not an image, no caption, or an "
            "unreadable image (--json lists them)"
        )
    history = summary.get("history") or []
    if not history:
        info(f"text-image model {summary['model_id']}: registered without training (0 epochs)")
    else:
        last = history[-1]
        top1 = last.get("val_zero_shot_top1")
        if top1 is not None:
            validation = f"val zero-shot top-1 {top1:.3f}"
        elif "val_loss" in last and last["val_loss"] is None:
            validation = "no validation loss or top-1 (too few validation images)"
        else:
            validation = "no validation top-1"
        info(
            f"text-image model {summary['model_id']}: {len(history)} epochs, "
            f"last train loss {last.get('train_loss', float('nan')):.4f}, {validation}"
        )
    if json_out:
        emit_json(summary)


@eval_app.command("text-image")
def eval_text_image_command(
    images: Annotated[
        Path,
        typer.Option(
            help="A class-folder image set: one the model was tuned on (its test split is "
            "scored) or any other (all its images; class names from the folder names)."
        ),
    ],
    classes: Annotated[
        str | None,
        typer.Option(help="Comma-separated class folders to score (default: all)."),
    ] = None,
    model_id: ModelIdOption = None,
    seed: Annotated[
        int | None, typer.Option(help="Split seed (default: the one the model was trained with).")
    ] = None,
    threads: ThreadsOption = 0,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Untuned towers vs the fine-tuned model on the same images: zero-shot top-1 (overall and
    per class) and text-to-image R@1/5/10. Classes the model never trained on are named by their
    folder names alone (StorageTanks -> "storage tanks").

    Example: skysearch eval text-image --images ../shared/data/aid-20 --classes Pond,River -w ws
    """
    from skysearch.retrieval.evaluation.text_image import evaluate_text_image

    set_threads(threads)
    settings = load_settings(workspace=workspace, device=device)
    result = evaluate_text_image(
        images, settings.workspace, model_id, seed, list(names(classes, "classes")), settings.device
    )
    rows = [
        {
            "model": name,
            "zero_shot_top1": f"{result['zero_shot_top1'][name]:.3f}",
            **{k: f"{v:.3f}" for k, v in result["text_to_image"][name].items()},
        }
        for name in ("untuned", "tuned")
    ]
    info(f"{result['test_images']} images, model {result['model_id']}")
    if result["skipped"]:
        left = [Path(s["path"]).name for s in result["skipped"]]
        info(
            f"left out {len(left)} file(s) that cannot be read: {some_of(left, 5)} "
            "(--json lists the reasons)"
        )
    info(table(rows, list(rows[0])))
    for name, g in result.get("generalised", {}).items():
        info(
            f"{name}: trained and unseen classes together: top-1 {g['seen']:.3f} on trained "
            f"classes, {g['unseen']:.3f} on unseen ones (harmonic mean {g['harmonic']:.3f})"
        )
    per_class = [
        {
            "class": name,
            "images": c["images"],
            "trained_on": "yes" if c["trained_on"] else "no",
            "prompt": c["prompt_name"],
            "untuned": f"{c['untuned']:.3f}",
            "tuned": f"{c['tuned']:.3f}",
        }
        for name, c in result["per_class"].items()
    ]
    info(table(per_class, list(per_class[0])))
    if json_out:
        emit_json(result)


@index_app.command("scenes")
def index_scenes_command(
    images: Annotated[
        Path,
        typer.Argument(
            help="Folder of scene images (recursive; an image's folder is its label, the folder "
            "above that its dataset), an image, or a scene CSV (filepath + optional label, "
            "dataset, time, lon/lat or bbox columns)."
        ),
    ],
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Dataset name of every image, over a CSV's dataset column (default: the folder "
            "above each image's folder, or the CSV's dataset column, else the CSV's name)."
        ),
    ] = None,
    model_id: ModelIdOption = None,
    threads: ThreadsOption = 0,
    device: DeviceOption = None,
    engine: EngineOption = EngineName.local,
    address: AddressOption = None,
    workers: Annotated[
        int, typer.Option(help="With --engine ray and no --address: the local Ray's CPUs.", min=1)
    ] = 2,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Embed scene images into the "scenes" collection (incremental: new/changed files only).

    Images that cannot be read are skipped and listed with their reason (exit code 0, as for
    ingest; --json has them all).

    Example: skysearch index scenes data/sample/rsscn7-mini -w ws
    """
    from skysearch.ingest.engines import get_engine
    from skysearch.retrieval.indexing.scenes import index_scenes

    set_threads(threads)
    settings = load_settings(workspace=workspace, device=device)
    with closing(get_engine(engine.value, address)) as runner:
        report = index_scenes(
            settings, images, model_id, dataset=dataset, engine=runner, workers=workers
        )
    info(
        f"scenes: {report.total} images found, {report.written} embedded"
        + (f" ({report.changed} of them again: file or metadata changed)" if report.changed else "")
        + f", {report.skipped_existing} unchanged, {len(report.skipped)} skipped"
        + (f", {report.removed} removed (images gone)" if report.removed else "")
        + f" (model {report.model_id})"
    )
    for s in report.skipped[:10]:
        info(f"  skipped {s['path']}: {s['reason']}")
    if len(report.skipped) > 10:
        info(f"  ... {len(report.skipped) - 10} more skipped (--json lists them all)")
    if json_out:
        emit_json(report.to_dict())


DatasetOption = Annotated[
    str | None, typer.Option(help="Datasets to keep, comma-separated (e.g. aid-20,rsscn7).")
]
LabelOption = Annotated[str | None, typer.Option(help="Labels to keep, comma-separated.")]


@search_app.command("text")
def search_text_command(
    query: Annotated[str, typer.Argument(help="Free text, e.g. 'parking lot next to a river'.")],
    k: KOption = 10,
    between: BetweenOption = None,
    dataset: DatasetOption = None,
    label: LabelOption = None,
    bbox: BboxOption = None,
    model_id: SceneModelOption = None,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Scenes matching a free-text query (text-image model), optionally filtered.

    Example: skysearch search text "a golf course" --dataset aid-20 --k 5 -w ws
    """
    from skysearch.retrieval.search import search_text

    settings = load_settings(workspace=workspace, device=device)
    filters = build_filters(between, k=k, datasets=dataset, labels=label, bbox=bbox)
    render_result(search_text(settings, query, filters, model_id), json_out)


@search_app.command("image")
def search_image_command(
    image: Annotated[Path | None, typer.Argument(help="Query image file.")] = None,
    file: Annotated[
        list[Path] | None,
        typer.Option("--file", help="Example image (repeatable: more like these)."),
    ] = None,
    text: Annotated[
        str | None, typer.Option(help="Words to combine with the examples in one query.")
    ] = None,
    k: KOption = 10,
    between: BetweenOption = None,
    dataset: DatasetOption = None,
    label: LabelOption = None,
    bbox: BboxOption = None,
    model_id: SceneModelOption = None,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Scenes most similar to one or several example images (and optional words).

    Example: skysearch search image --file a.jpg --file b.jpg --text "with a pool" -w ws
    """
    from skysearch.retrieval.search import search_image

    examples = ([image] if image else []) + list(file or [])
    if not examples:
        raise UsageError("give a query image (or --file, repeatable)")
    for path in examples:
        if path.is_dir():
            raise UsageError(f"query image {path} is a folder: give image files")
    missing = [str(p) for p in examples if not p.is_file()]
    if missing:
        raise UsageError(f"query image {', '.join(missing)} not found")
    settings = load_settings(workspace=workspace, device=device)
    filters = build_filters(between, k=k, datasets=dataset, labels=label, bbox=bbox)
    render_result(search_image(settings, examples, filters, model_id, text), json_out)
