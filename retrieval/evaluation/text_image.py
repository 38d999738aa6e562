"""Text-image evaluation: zero-shot classification top-1 and text-to-image recall@k, on ANY
class-folder image set, including classes the model never saw.

Both models (untuned towers, fine-tuned) are scored on the SAME images. Per class: a class some
of whose images the model trained on (by content: a copy under another path counts) is scored
on its fixed test split (``skysearch.encoders.datasets.captions.split_images`` with the training
seed; those images are checked to be absent from the training CSV); any other class on all its
images. A class is reported as trained on when its images were, or its name is in the model's
phrase table (the classes it trained on).

- class names: a class in the model's phrase table (saved at training: the classes it was
  trained on) is prompted with its first phrase; any other class by its folder name alone
  (``StorageTanks`` -> "storage tanks"), so unseen classes get no hand-written help.
- zero-shot top-1: each image is assigned the class (among the scored ones) whose prompt
  embedding (mean over ``captions.PROMPTS``) is most similar; overall and per class.
- generalised (when trained and unseen classes are scored together): top-1 over each kind's
  images and their harmonic mean.
- text-to-image R@k: each image's caption (``title``, built from the same class names) queries
  all scored images; a hit is a top-k image of the caption's class (the captions are
  class-level, so several images are correct answers). ``pair_r@k`` (the caption's own image
  in the top k) is reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skysearch.encoders.datasets.captions import (
    DEFAULT_SEED,
    caption_rows,
    display_name,
    file_sha1,
    image_problem,
    list_class_images,
    normalise_class,
    read_csv,
    split_images,
)
from skysearch.encoders.factory import load_text_image
from skysearch.encoders.metrics import text_to_image_recall, zero_shot
from skysearch.encoders.models.text_image import TextImageModel
from skysearch.encoders.training.text_image_recipe import create_untuned_model

from skysearch.config import Workspace
from skysearch.errors import UsageError, some_of


def score(tim: TextImageModel, paths: Sequence[str], captions, labels, table) -> dict[str, Any]:
    """Embed the images once and compute both metrics."""
    t0 = time.perf_counter()
    embs = tim.encode_images(paths)
    seconds = time.perf_counter() - t0
    top1, per_class = zero_shot(tim, embs, labels, table)
    return {
        "zero_shot_top1": top1,
        "per_class": per_class,
        "text_to_image": text_to_image_recall(tim, embs, captions, labels),
        "images_per_s": round(len(paths) / seconds, 2),
    }


def generalised(
    per_class: dict[str, float], counts: dict[str, int], seen: Sequence[str]
) -> dict[str, float]:
    """Generalised zero-shot (trained and unseen classes are candidates together, the usual
    GZSL report): top-1 over the images of trained classes, over those of unseen ones, and
    their harmonic mean; empty unless both kinds are scored. The overall top-1 weighs every
    image alike, so with unseen classes scored on all their images and trained ones on their
    test split only, it mostly measures the unseen ones."""

    def top1(classes: list[str]) -> float:
        n = sum(counts[c] for c in classes)
        return sum(per_class[c] * counts[c] for c in classes) / n if n else float("nan")

    trained = [c for c in per_class if c in seen]
    unseen = [c for c in per_class if c not in seen]
    if not trained or not unseen:
        return {}
    s, u = top1(trained), top1(unseen)
    return {"seen": s, "unseen": u, "harmonic": 2 * s * u / (s + u) if s + u else 0.0}


def select_classes(
    found: dict[str, list[Path]], classes: Sequence[str] | None
) -> dict[str, list[Path]]:
    """The class folders to score: all, or those named (any spelling: ``StorageTanks``,
    ``storage tanks``); an unknown name is a usage error naming what the folder has."""
    if not classes:
        return found
    by_name = {normalise_class(c): c for c in found}
    unknown = [c for c in classes if normalise_class(c) not in by_name]
    if unknown:
        raise UsageError(
            f"no class folder {', '.join(unknown)} in the image set (it has {', '.join(found)})"
        )
    chosen = {by_name[normalise_class(c)] for c in classes}
    if len(chosen) < 2:
        raise UsageError("score at least two classes (zero-shot picks among them)")
    return {c: found[c] for c in found if c in chosen}


def _readable_key(path: Path) -> str | None:
    try:
        return file_sha1(path)
    except OSError:  # unreadable: scoring says why, a training image makes the set incomplete
        return None


def training_csv(recorded: str | None, workspace: Workspace) -> Path | None:
    """A model's training CSV: where training wrote it, or, for the caption CSVs a workspace
    makes under ``captions/``, the same file in the workspace as it is now (moved or copied
    with it); None when it is gone."""
    if not recorded:
        return None
    path = Path(recorded)
    if path.is_file():
        return path
    parts = path.parts
    if "captions" in parts:
        below = parts[len(parts) - parts[::-1].index("captions") - 1 :]
        moved = workspace.root.joinpath(*below)
        if moved.is_file():
            return moved
    return None


@dataclass
class TrainingImages:
    keys: set[str]
    paths: set[Path]
    complete: bool


def training_images(train_csv: Path | None, skipped: Sequence[str] = ()) -> TrainingImages:
    """A model's training images (content keys and paths), and whether all of them could be
    read (False without a CSV); ``skipped``: rows training itself skipped (unreadable then)."""
    if train_csv is None:
        return TrainingImages(set(), set(), False)
    out = TrainingImages(set(), set(), True)
    for path, _, _ in read_csv(train_csv):
        if path in skipped:
            continue
        out.paths.add(Path(path).resolve())
        key = _readable_key(Path(path))
        if key is None:
            out.complete = False
        else:
            out.keys.add(key)
    return out


def _readable(items: list[tuple[Path, str]], left_out: list[dict[str, str]]) -> list:
    """The ``items`` whose images can be read whole; the others are added to ``left_out``. The
    split's check reads headers only, so a file cut short is in it, and would stop the
    embedding of every image."""
    kept = []
    for path, label in items:
        why = image_problem(path, whole=True)
        if why:
            left_out.append({"path": str(path.resolve()), "reason": why})
        else:
            kept.append((path, label))
    return kept


def _counted(counts: dict[str, int]) -> str:
    """``{"aGrass": 2, "gParking": 1}`` -> ``aGrass (2), gParking (1)``."""
    return ", ".join(f"{label} ({n})" for label, n in counts.items())


def evaluate_text_image(
    images_dir: str | Path,
    workspace: Workspace,
    model_id: str | None = None,
    seed: int | None = None,
    classes: Sequence[str] | None = None,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Untuned towers vs the workspace's fine-tuned model on the same images (see the module
    docstring for which images and which class names), both on ``device``. Files that are not
    images, or cannot be read whole, are left out and listed (``skipped``)."""
    tuned = load_text_image(workspace, model_id, device)
    train_cfg = tuned.metadata.get("train", {})
    table = tuned.metadata.get("class_phrases")
    split_seed = seed if seed is not None else int(train_cfg.get("split_seed") or DEFAULT_SEED)
    left_out: list[dict[str, str]] = []
    found = select_classes(list_class_images(images_dir, left_out), classes)
    train_csv = training_csv(train_cfg.get("train_csv"), workspace)
    skipped = [s["path"] for s in tuned.metadata.get("summary", {}).get("skipped", [])]
    trained = training_images(train_csv, skipped)
    test = {p for p, _ in split_images(found, seed=split_seed)["test"]}
    items: list[tuple[Path, str]] = []
    seen_classes, copies, overlaps = [], 0, {}
    for label, paths in found.items():
        keys = {p: _readable_key(p) for p in paths}
        named = bool(table) and bool(table.get(label) or table.get(normalise_class(label)))
        if any(k in trained.keys for k in keys.values()):  # its images, here or elsewhere
            overlap = [p for p in paths if p in test and p.resolve() in trained.paths]
            if overlap:
                overlaps[label] = len(overlap)
                continue
            seen_classes.append(label)
            scored = [p for p in paths if p in test and keys[p] not in trained.keys]
            copies += sum(p in test for p in paths) - len(scored)  # same bytes as trained ones
            if not scored:
                raise UsageError(
                    f"every test image of {label} is a copy of an image the model trained on: "
                    "nothing left to score it on (score the classes it never saw: {classes})",
                    params=["classes"],
                )
            items += [(p, label) for p in scored]
            continue
        if named and not trained.complete:
            raise UsageError(
                f"the model trained on a class {label}, and its training images cannot all be "
                f"read ({train_csv or 'its training CSV is gone'}): the ones among these cannot "
                "be told apart. Restore them, or score only classes it never trained on "
                "({classes})",
                params=["classes"],
            )
        if named:  # a class it trained on, none of these images among its training ones
            seen_classes.append(label)
        items += [(p, label) for p in paths]
    if overlaps:
        raise UsageError(
            f"test images of {_counted(overlaps)} were in the model's training CSV "
            f"({train_csv}): it trained on them, so they cannot test it. Evaluate with the "
            "split seed used for training; if it is that one, the images came from another "
            "source (a training CSV listing them): score the classes it never saw ({classes})",
            params=["classes"],
        )
    items = _readable(items, left_out)
    found = {c: paths for c, paths in found.items() if any(label == c for _, label in items)}
    if len(found) < 2:
        raise UsageError(
            f"fewer than two classes have images that can be read (unreadable: "
            f"{some_of([s['path'] for s in left_out], 5)})"
        )
    rows = caption_rows(items, split_seed, table)
    paths = [r.filepath for r in rows]
    captions = [r.title for r in rows]
    labels = [r.label for r in rows]
    untuned = create_untuned_model(tuned).to(tuned.device)
    results = {
        "untuned": score(untuned, paths, captions, labels, table),
        "tuned": score(tuned, paths, captions, labels, table),
    }
    counts = {c: labels.count(c) for c in found}
    mixed = {k: generalised(r["per_class"], counts, seen_classes) for k, r in results.items()}
    return {
        "model_id": tuned.model_id,
        "images_dir": str(Path(images_dir).resolve()),
        "split_seed": split_seed,
        "test_images": len(paths),
        "classes": sorted(found),
        "unseen_classes": sorted(set(found) - set(seen_classes)),
        "test_copies_of_training_images_left_out": copies,
        "skipped": left_out,
        "zero_shot_top1": {k: results[k]["zero_shot_top1"] for k in results},
        "per_class": {
            c: {
                "images": counts[c],
                "trained_on": c in seen_classes,
                "prompt_name": display_name(c, table),
                **{k: results[k]["per_class"][c] for k in results},
            }
            for c in sorted(found)
        },
        **({"generalised": mixed} if all(mixed.values()) else {}),
        "text_to_image": {k: results[k]["text_to_image"] for k in results},
        "text_to_image_relevance": "a hit is a top-k image of the caption's class",
        "image_embedding_images_per_s": {k: results[k]["images_per_s"] for k in results},
    }
