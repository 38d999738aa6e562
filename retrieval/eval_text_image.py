"""Text-image evaluation: zero-shot classification top-1 and text-to-image recall@k.

Both models (untuned towers, fine-tuned) are scored on the SAME fixed test split of a class-folder
image set (``skysearch.encoders.captions.split_images`` with the training seed); the test images
are checked to be absent from the fine-tuned model's training CSV.

- zero-shot top-1: each test image is assigned the class whose prompt embedding (mean over
  ``captions.PROMPTS`` with the class's display name) is most similar.
- text-to-image R@k: each test image's caption (``title``) queries all test images; a hit is a
  top-k image of the caption's class (the captions are class-level, so several images are
  correct answers). ``pair_r@k`` (the caption's own image in the top k) is reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from skysearch.encoders.captions import (
    DEFAULT_SEED,
    PROMPTS,
    caption_rows,
    display_name,
    list_class_images,
    read_csv,
    split_images,
)
from skysearch.encoders.text_image import (
    TextImageModel,
    create_text_image_model,
    load_workspace_model,
)

from skysearch.config import Workspace
from skysearch.errors import UsageError

KS = (1, 5, 10)


def class_text_embeddings(tim: TextImageModel, classes: Sequence[str]) -> np.ndarray:
    """One unit vector per class folder: the mean of its prompt embeddings."""
    out = []
    for label in classes:
        emb = tim.encode_texts([p.format(display_name(label)) for p in PROMPTS]).mean(0)
        out.append(emb / np.linalg.norm(emb))
    return np.stack(out)


def zero_shot_top1(tim: TextImageModel, image_embs: np.ndarray, labels: Sequence[str]) -> float:
    """Fraction of images whose most similar class prompt is their own class."""
    classes = sorted(set(labels))
    pred = (image_embs @ class_text_embeddings(tim, classes).T).argmax(1)
    truth = np.array([classes.index(lbl) for lbl in labels])
    return float((pred == truth).mean())


def text_to_image_recall(
    tim: TextImageModel,
    image_embs: np.ndarray,
    captions: Sequence[str],
    labels: Sequence[str],
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Class-level R@k (``r1``...) and exact-pair R@k (``pair_r1``...) for caption queries."""
    sims = tim.encode_texts(list(captions)) @ image_embs.T
    order = np.argsort(-sims, axis=1, kind="stable")
    labels_arr = np.asarray(labels)
    same_class = labels_arr[order] == labels_arr[:, None]
    own = order == np.arange(len(captions))[:, None]
    out = {}
    for k in ks:
        out[f"r{k}"] = float(same_class[:, :k].any(1).mean())
    for k in ks:
        out[f"pair_r{k}"] = float(own[:, :k].any(1).mean())
    return out


def score(tim: TextImageModel, paths: Sequence[str], captions, labels) -> dict[str, Any]:
    """Embed the test images once and compute both metrics."""
    t0 = time.perf_counter()
    embs = tim.encode_images(paths)
    seconds = time.perf_counter() - t0
    return {
        "zero_shot_top1": zero_shot_top1(tim, embs, labels),
        "text_to_image": text_to_image_recall(tim, embs, captions, labels),
        "images_per_s": round(len(paths) / seconds, 2),
    }


def evaluate_text_image(
    images_dir: str | Path,
    workspace: Workspace,
    model_id: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Untuned towers vs the workspace's fine-tuned model on the fixed test split."""
    tuned = load_workspace_model(workspace, model_id)
    train_cfg = tuned.metadata.get("train", {})
    split_seed = seed if seed is not None else int(train_cfg.get("split_seed", DEFAULT_SEED))
    test = caption_rows(split_images(list_class_images(images_dir), seed=split_seed)["test"])
    paths = [r.filepath for r in test]
    captions = [r.title for r in test]
    labels = [r.label for r in test]
    train_csv = train_cfg.get("train_csv")
    if train_csv and Path(train_csv).is_file():
        seen = {str(Path(p).resolve()) for p, _, _ in read_csv(train_csv)}
        overlap = [p for p in paths if str(Path(p).resolve()) in seen]
        if overlap:
            raise UsageError(
                f"{len(overlap)} test images were in the model's training CSV ({train_csv}); "
                "evaluate with the split seed used for training (--seed)"
            )
    untuned = create_text_image_model(
        train_cfg.get("model_name", tuned.spec["open_clip_model"]),
        train_cfg.get("pretrained"),
        image_size=tuned.image_size,
        seed=int(train_cfg.get("seed", 0)),
    )
    results = {"untuned": score(untuned, paths, captions, labels)}
    results["tuned"] = score(tuned, paths, captions, labels)
    return {
        "model_id": tuned.model_id,
        "images_dir": str(Path(images_dir).resolve()),
        "split_seed": split_seed,
        "test_images": len(paths),
        "classes": sorted(set(labels)),
        "zero_shot_top1": {k: results[k]["zero_shot_top1"] for k in ("untuned", "tuned")},
        "text_to_image": {k: results[k]["text_to_image"] for k in ("untuned", "tuned")},
        "text_to_image_relevance": "a hit is a top-k image of the caption's class",
        "image_embedding_images_per_s": {k: results[k]["images_per_s"] for k in results},
    }
