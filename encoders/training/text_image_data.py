"""Text-image training data: caption CSV rows as images or cached trunk features, and the
caption sources (class folders, CSVs) merged into one training and one validation CSV."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skysearch.encoders.datasets.captions import (
    DEFAULT_SEED,
    CaptionRow,
    convert_folder,
    exclude_classes,
    image_problem,
    normalise_class,
    read_caption_rows,
    write_csv,
)
from skysearch.encoders.models.text_image import TextImageModel, load_rgb
from torchvision import transforms
from tqdm import tqdm

from skysearch.atomic import atomic_path
from skysearch.config import Workspace
from skysearch.errors import UsageError

log = logging.getLogger(__name__)


class RandomRot90:
    """Rotate a PIL image by 0/90/180/270 degrees, uniformly (torch RNG: seedable)."""

    def __call__(self, image: Any) -> Any:
        k = int(torch.randint(0, 4, ()).item())
        return image.rotate(90 * k) if k else image


def train_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """SkyScript-style training augmentation for overhead imagery."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                size, scale=(0.5, 1.0), interpolation=transforms.InterpolationMode.BICUBIC
            ),
            RandomRot90(),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


class CaptionDataset(torch.utils.data.Dataset):
    """(image tensor, caption) pairs from SkyScript CSV rows; unreadable images are reported."""

    def __init__(self, rows: Sequence[tuple[str, str, str]], transform: Callable):
        self.rows = list(rows)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, str]:
        path, caption, label = self.rows[i]
        return self.transform(load_rgb(path)), caption, label


def check_images(rows: Sequence[tuple[str, str, str]]) -> tuple[list, list[dict[str, str]]]:
    """Split rows into usable ones and skipped ones (with a reason: no image path, no caption,
    or an image that cannot be read whole, see
    :func:`~skysearch.encoders.datasets.captions.image_problem`: a file cut short is found
    here, not minutes later while features are computed)."""
    good, skipped = [], []
    for row in rows:
        if not row[0]:
            why = "no image path (its filepath column is empty)"
        elif not row[1].strip():
            why = "no caption (its caption column is empty)"
        else:
            why = image_problem(row[0], whole=True)
        if why:
            skipped.append({"path": row[0], "reason": why})
        else:
            good.append(row)
    return good, skipped


class FeatureDataset(torch.utils.data.Dataset):
    """(cached image features, caption, label) rows: pooled trunk features (locked tower), or
    the frozen front's activations of each image's rotations (last-stage recipe), of which
    every draw takes one at random (torch RNG: seeded per epoch) when ``random_view``."""

    def __init__(
        self,
        rows: Sequence[tuple[str, str, str]],
        features: torch.Tensor,
        random_view: bool = False,
    ):
        self.rows = list(rows)
        self.features = features
        self.random_view = random_view

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, str]:
        features = self.features[i]
        if self.random_view:
            features = features[int(torch.randint(0, len(features), ()).item())]
        return features.float(), self.rows[i][1], self.rows[i][2]


@torch.no_grad()
def cached_image_features(
    tim: TextImageModel,
    paths: Sequence[str],
    cache: Path | None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    desc: str = "image features",
) -> torch.Tensor:
    """``forward`` (default: the pooled image trunk) of ``paths``' images (inference
    preprocessing), each image computed once: ``cache`` (``.npz``: keys, features) keeps them
    by path, size and modification time, so re-runs, resumed runs and other runs on the same
    images (e.g. leave-classes-out folds) only compute what is new. ``cache=None``: computed,
    not kept (a tuned trunk's features belong to one run)."""
    forward = forward or tim.model.visual.trunk
    keys = []
    for p in paths:
        stat = Path(p).stat()
        keys.append(f"{Path(p).resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    known = _read_feature_cache(cache) if cache is not None and cache.is_file() else {}
    todo = [i for i, k in enumerate(keys) if k not in known]
    tim.model.eval()
    bar = tqdm(total=len(todo), desc=desc, unit="img", disable=not progress)
    for start in range(0, len(todo), 32):
        chunk = todo[start : start + 32]
        pixels = torch.stack([tim.preprocess(load_rgb(paths[i])) for i in chunk])
        feats = forward(pixels.to(tim.device)).cpu().numpy()
        for i, vec in zip(chunk, feats, strict=True):
            known[keys[i]] = vec
        bar.update(len(chunk))
    bar.close()
    if todo and cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        names = sorted(known)
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(names), features=np.stack([known[k] for k in names]))
    return torch.from_numpy(np.stack([known[k] for k in keys]))


def _read_feature_cache(cache: Path) -> dict[str, np.ndarray]:
    """The features a cache file holds by key; a damaged file is a cache miss (with a warning),
    rewritten when the features are computed again."""
    try:
        with np.load(cache) as data:
            keys, features = data["keys"], data["features"]
            if keys.ndim != 1 or len(keys) != len(features):
                raise ValueError("keys and features disagree")
            return dict(zip(keys.tolist(), features, strict=True))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        log.warning(
            "image feature cache %s is damaged (%s): computing its features again", cache, exc
        )
        return {}


def prepare_folder(
    images_dir: str | Path,
    workspace: Workspace,
    split_seed: int = DEFAULT_SEED,
    left_out: list[dict[str, str]] | None = None,
) -> dict[str, Path]:
    """Class folders -> ``<workspace>/captions/<folder>-<seed>-<path hash>/{train,val,test}.csv``
    (the hash of the folder's path: two sets named alike never share, or overwrite, the CSVs
    a trained model's evaluation reads). ``left_out``: see
    :func:`~skysearch.encoders.datasets.captions.list_class_images`."""
    root = Path(images_dir).resolve()
    tag = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    captions = workspace.root / "captions"
    legacy = captions / f"{root.name}-{split_seed}"  # before 2026-12: the name alone
    first = _first_row(legacy / "train.csv").get("filepath")
    keep = bool(first) and (legacy / first).resolve().is_relative_to(root)  # runs resume
    out_dir = legacy if keep else captions / f"{root.name}-{split_seed}-{tag}"
    return convert_folder(images_dir, out_dir, seed=split_seed, left_out=left_out)


def _first_row(csv_path: Path) -> dict[str, str]:
    """A caption CSV's first row ({} when it has none, or cannot be read)."""
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            return next(csv.DictReader(fh), None) or {}
    except (OSError, ValueError, csv.Error):
        return {}


def prepare_training_data(
    workspace: Workspace,
    images: Sequence[str | Path] = (),
    train_csvs: Sequence[str | Path] = (),
    val_csvs: Sequence[str | Path] = (),
    split_seed: int = DEFAULT_SEED,
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Every caption source -> ONE training CSV and one validation CSV.

    Each class-folder image set is converted and split (:func:`prepare_folder`); caption CSVs
    are taken as they are. ``exclude``: class folders removed from training (their images AND
    every caption naming them, see :func:`~skysearch.encoders.datasets.captions.exclude_classes`).
    One source and nothing excluded: its own CSVs; otherwise merged CSVs under
    ``<workspace>/captions/mix-<hash>/`` (the hash of the sources, seed and exclusions, so the
    same command gives the same files and the same run). A source given twice (``x`` and
    ``./x/``) is used once, with a warning. Returns ``{"train": Path, "val": Path | None,
    "removed": {"train": n, "val": n}, "skipped": [{"path", "reason"}]}`` (``skipped``: the
    image sets' files that are not images).
    """
    if not images and not train_csvs:
        raise UsageError("no training data: give a class-folder image set or a caption CSV")
    images, train_csvs = _once(images, "image set"), _once(train_csvs, "caption CSV")
    val_csvs = _once(val_csvs, "validation CSV")
    skipped: list[dict[str, str]] = []
    folders = [prepare_folder(d, workspace, split_seed, skipped) for d in images]
    _check_held_out(folders, train_csvs)
    train_sources = [f["train"] for f in folders] + train_csvs
    # A set of few images per class has no validation images (10% of each class, rounded)
    val_sources = [f["val"] for f in folders if _first_row(f["val"])] + val_csvs
    if len(train_sources) == 1 and len(val_sources) <= 1 and not exclude:
        val = (val_sources or [None])[0]
        return {"train": train_sources[0], "val": val, "removed": {}, "skipped": skipped}
    key = json.dumps(
        {
            "train": [str(Path(c).resolve()) for c in train_sources],
            "val": [str(Path(c).resolve()) for c in val_sources],
            "seed": split_seed,
            "exclude": sorted(normalise_class(c) for c in exclude),
        },
        sort_keys=True,
    )
    out_dir = workspace.root / "captions" / f"mix-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    out: dict[str, Any] = {"removed": {}, "skipped": skipped}
    for split, sources in (("train", train_sources), ("val", val_sources)):
        rows = [row for source in sources for row in read_caption_rows(source)]
        if split == "train":
            _check_excluded(rows, exclude)
        kept, removed = exclude_classes(rows, exclude)
        out["removed"][split] = removed
        if split == "train" and len(kept) < 2:
            raise UsageError(f"fewer than two training rows left after excluding {list(exclude)}")
        labels = {r.label for r in kept}
        if split == "train" and exclude and len(labels) == 1 and "" not in labels:
            raise UsageError(
                f"one class ({labels.pop()}) left after excluding {', '.join(exclude)}: "
                "training needs at least two classes"
            )
        out[split] = write_csv(kept, out_dir / f"{split}.csv") if kept else None
    (out_dir / "sources.json").write_text(key)
    return out


def _once(paths: Sequence[str | Path], what: str) -> list[Path]:
    """``paths`` with each file or folder once (by resolved path: ``x``, ``./x/`` and a link to
    it are one), repeats named in a warning: each would train on every image again."""
    first: dict[Path, Path] = {}
    times: Counter[Path] = Counter()
    for path in map(Path, paths):
        first.setdefault(path.resolve(), path)
        times[path.resolve()] += 1
    repeats = [f"{first[key]} ({n} times)" for key, n in times.items() if n > 1]
    if repeats:
        warnings.warn(f"{what} given more than once, used once: {', '.join(repeats)}", stacklevel=3)
    return list(first.values())


def _check_held_out(folders: Sequence[dict[str, Path]], train_csvs: Sequence[str | Path]) -> None:
    """A caption CSV trained on must not list the validation or test images of an image set
    trained beside it: they would pick the epochs and score the model after training on them."""
    held = {
        str(Path(row.filepath).resolve())
        for folder in folders
        for split in ("val", "test")
        if _first_row(folder[split])
        for row in read_caption_rows(folder[split])
    }
    for csv_path in train_csvs if held else ():
        rows = [r for r in read_caption_rows(csv_path) if str(Path(r.filepath).resolve()) in held]
        if rows:
            raise UsageError(
                f"{len(rows)} rows of {csv_path} are validation or test images of the {{images}} "
                f"set trained beside it (e.g. {rows[0].filepath}): remove them from the CSV, "
                "or train on the CSV without that set",
                params=["images"],
            )


def _check_excluded(rows: Sequence[CaptionRow], exclude: Sequence[str]) -> None:
    """A class to exclude must be in the training data (a label or a caption naming it): a
    misspelt name would otherwise train on the class it was meant to hold out."""
    unknown = [c for c in exclude if exclude_classes(rows, [c])[1] == 0]
    if unknown:
        labels = sorted({r.label for r in rows if r.label})
        shown = ", ".join(labels[:40]) + (" ..." if len(labels) > 40 else "")
        raise UsageError(
            f"{{exclude_classes}} {', '.join(unknown)}: no training image or caption of "
            f"{'that class' if len(unknown) == 1 else 'those classes'} (classes: {shown})",
            params=["exclude_classes"],
        )
