"""A text-image model's text side in one file, for one-shot text queries (the CLI).

Loading a fine-tuned model for one query imports open_clip, and with it transformers, timm and
torchvision, and rebuilds both towers: most of a ``skysearch search text`` run. The text side
alone (tokenizer + traced text tower + heads, see
:meth:`~skysearch.encoders.models.text_image.TextImageModel.trace_text_tower`) needs torch
and ``tokenizers`` only. :func:`export_text_query` writes it beside the model the first time a
query needs it; :func:`load_text_query` reads it back. Only towers with a Hugging Face
tokenizer (the default model) have one; others always load in full.
"""

from __future__ import annotations

import html
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from skysearch.atomic import atomic_path, atomic_write_json

if TYPE_CHECKING:
    from skysearch.encoders.models.text_image import TextImageModel

QUERY_FILE = "text_query.pt"
QUERY_META = "text_query.json"
FORMAT = "skysearch.text-query/1"
log = logging.getLogger(__name__)


def _stamp(directory: Path) -> dict[str, list[int]]:
    """Size and modification time of the model's checkpoint files: a checkpoint rewritten in
    place (before 2026-12, training more epochs did so under the same model id; or a folder
    copied over) must not be answered by its old text side."""
    from skysearch.encoders.checkpoints import CONFIG_FILE, WEIGHTS_FILE

    out = {}
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        st = (directory / name).stat()
        out[name] = [st.st_size, st.st_mtime_ns]
    return out


class TextQuery:
    """Embeds texts as the model it was exported from does (``encode_texts``, ``model_id``)."""

    def __init__(self, module: torch.jit.ScriptModule, tokenizer_json: str, meta: dict) -> None:
        from tokenizers import Tokenizer

        self.module = module
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(meta["context_length"]))
        self.pad_id = int(meta["pad_token_id"])
        self.embed_dim = int(meta["embed_dim"])
        self.model_id: str | None = meta.get("model_id")

    @torch.no_grad()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, float32 (n, embed_dim)."""
        if not texts:
            return np.zeros((0, self.embed_dim), np.float32)
        ids = [e.ids for e in self.tokenizer.encode_batch([_clean(t) for t in texts])]
        tokens = torch.full((len(ids), max(map(len, ids))), self.pad_id, dtype=torch.long)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)] = torch.tensor(seq)
        # The optimising executor spends ~100 ms profiling a module's first calls: more than
        # it wins on the few queries a TextQuery answers (a CLI run).
        with torch.jit.optimized_execution(False):
            return self.module(tokens).float().numpy()


def _clean(text: str) -> str:
    """open_clip's ``whitespace`` cleaning of its Hugging Face tokenizer's input."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split())


def export_text_query(tim: TextImageModel, directory: Path) -> bool:
    """Write ``tim``'s text side into ``directory`` (atomically); False where the model has no
    Hugging Face tokenizer, its text tower does not trace, or the folder is not writable, and
    for a model on an accelerator (a trace there may carry its device; the file is for CPUs)."""
    if tim.device.type != "cpu":
        return False
    backend = getattr(getattr(tim.tokenizer, "tokenizer", None), "backend_tokenizer", None)
    if backend is None or getattr(tim.tokenizer, "clean_fn", None) is None:
        return False
    if tim.traced_text is None and not tim.trace_text_tower():
        return False
    meta = {
        "format": FORMAT,
        "model_id": tim.model_id,
        "context_length": tim.tokenizer.context_length,
        "pad_token_id": tim.tokenizer.tokenizer.pad_token_id,
        "embed_dim": tim.embed_dim,
        "tokenizer": backend.to_str(),
    }
    try:
        meta["checkpoint"] = _stamp(directory)
        with warnings.catch_warnings(), atomic_path(directory / QUERY_FILE) as tmp:
            warnings.simplefilter("ignore", FutureWarning)  # jit is deprecated: then no file
            torch.jit.save(tim.traced_text, str(tmp))
        atomic_write_json(directory / QUERY_META, meta)
    except (OSError, RuntimeError) as exc:  # read-only (torch says RuntimeError): full model
        log.info("text query file not written in %s: %s", directory, exc)
        return False
    return True


def load_text_query(directory: Path, model_id: str | None) -> TextQuery | None:
    """The exported text side of the model in ``directory``; None when there is none (or it
    cannot be read: the caller loads the full model)."""
    meta_path = directory / QUERY_META
    if not meta_path.is_file() or not (directory / QUERY_FILE).is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT or meta.get("model_id") != model_id:
            return None
        if meta.get("checkpoint") != _stamp(directory):
            log.info("text query file in %s is older than the model: not used", directory)
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(directory / QUERY_FILE), map_location="cpu")
        return TextQuery(module.eval(), meta.pop("tokenizer"), meta)
    except Exception as exc:  # noqa: BLE001 - any damage: the full model answers instead
        log.info("text query file in %s not used: %s", directory, exc)
        return None
