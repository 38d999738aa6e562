"""Cache frozen image-tower features of class-folder image sets, once, for text-image research.

For every image: the pooled ImageNet EfficientNet features (1280-d) of ``--views`` 90-degree
rotations (1: the image as is), at the text-image model's input size and preprocessing
(resize + centre crop, mean = std = 0.5). ImageNet logits follow from them exactly (the
classifier is linear on the pooled features), so ConSE-style priors need no second pass.
Written as one ``.npz`` per image set (``features`` (n, views, 1280) float16, ``paths``,
``labels``); re-running skips sets already cached.

    .venv/bin/python bench/text_image_features.py ../shared/data/aid-20 ../shared/data/rsscn7 \
        --out /tmp/h17-cache [--tower lite0] [--size 160] [--views 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from load import load_average
from PIL import Image
from skysearch.encoders.datasets.captions import list_class_images
from skysearch.encoders.pretrained import efficientnet_imagenet
from torchvision import transforms


def preprocess(size: int) -> transforms.Compose:
    return transforms.Compose(
        [
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize((0.5,) * 3, (0.5,) * 3),
        ]
    )


@torch.no_grad()
def extract(
    model: torch.nn.Module, paths: list[Path], size: int, views: int, batch: int = 32
) -> np.ndarray:
    tf = preprocess(size)
    out = []
    t0 = time.perf_counter()
    for i in range(0, len(paths), batch):
        pixels = []
        for p in paths[i : i + batch]:
            with Image.open(p) as im:
                base = tf(im.convert("RGB"))
            pixels += [torch.rot90(base, k, dims=(1, 2)) for k in range(views)]
        feats = model.forward_head(model.forward_features(torch.stack(pixels)), pre_logits=True)
        out.append(feats.reshape(-1, views, feats.shape[-1]).half().numpy())
        done = min(i + batch, len(paths))
        rate = done / (time.perf_counter() - t0)
        print(
            f"\r{done}/{len(paths)} images, {rate:.1f} img/s (x{views} rotations)",
            end="",
            file=sys.stderr,
        )
    print(file=sys.stderr)
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image_sets", nargs="+")
    parser.add_argument("--out", default="/tmp/h17-cache")
    parser.add_argument("--tower", default="lite0")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--views", type=int, default=1, choices=(1, 2, 3, 4))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = efficientnet_imagenet(args.tower, num_classes=1000).eval()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for image_set in args.image_sets:
        name = Path(image_set).resolve().name
        target = out_dir / f"{name}-{args.tower}-{args.size}.npz"
        if target.is_file():
            print(f"{target} exists, skipped", file=sys.stderr)
            continue
        classes = list_class_images(image_set)
        paths = [p for ps in classes.values() for p in ps]
        labels = [c for c, ps in classes.items() for _ in ps]
        print(f"{name}: {len(paths)} images, load average {load_average()}", file=sys.stderr)
        feats = extract(model, paths, args.size, args.views)
        np.savez(target, features=feats, paths=np.array([str(p) for p in paths]), labels=labels)
        print(f"wrote {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
