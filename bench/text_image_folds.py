"""Leave-classes-out research on cached features: which text-image recipe knows unseen classes?

Reads the frozen image features cached by ``bench/text_image_features.py`` and compares recipes
by folds over AID-20's classes: each fold withholds some AID classes (their images AND every
caption naming them), plus the RSSCN7 classes that overlap them by meaning (``OVERLAP``), and
scores zero-shot classification of the withheld classes by their folder names alone. Folds 0-1
are validation (choose levers there), 2-3 are test (report only).

The towers are locked (features cached once), so a recipe is a pair of heads and a prior:
- ``conse``: training-free: an image is the softmax-weighted mean of the text embeddings of its
  top-T ImageNet class names (the ImageNet classifier's own knowledge), compared with prompts;
- ``img``: a trained image projection into the locked MiniLM sentence space (text head =
  identity), optionally initialised from and regularised toward the ConSE-linear map;
- ``both``: trained image and text projections (today's heads on a locked tower);
- ``lit``: a trained text projection into the locked image feature space;
- ``blend``: ``img`` plus ``alpha`` x the ConSE prior.

    .venv/bin/python bench/text_image_folds.py --cache /tmp/h17-cache [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from load import load_average
from skysearch.encoders.datasets.captions import (
    DEFAULT_SEED,
    MULTI_TEMPLATES,
    PROMPTS,
    TEMPLATES,
    class_phrases,
    normalise_class,
    split_images,
)
from skysearch.encoders.models.text_image import create_text_image_model
from skysearch.encoders.pretrained import efficientnet_lite0_state_dict

#: RSSCN7 classes that overlap AID classes by meaning: withheld with them in a fold.
OVERLAP = {
    "Meadow": ["aGrass"],
    "Farmland": ["bField"],
    "Industrial": ["cIndustry"],
    "River": ["dRiverLake"],
    "Pond": ["dRiverLake"],
    "Forest": ["eForest"],
    "DenseResidential": ["fResident"],
    "MediumResidential": ["fResident"],
    "SparseResidential": ["fResident"],
    "Parking": ["gParking"],
}
VALIDATION_FOLDS = (0, 1)


@dataclass(frozen=True)
class Recipe:
    kind: str = "img"  # conse | img | both | lit | blend | untuned
    alpha: float = 0.0  # ConSE prior weight (blend)
    top: int = 10  # ConSE: top-T ImageNet classes
    conse_temp: float = 1.0
    name_template: str = "{}"
    init: str = "random"  # img head init: random | conse | zero (degenerate: all-zero output)
    reg: float = 0.0  # L2 toward the init (img/both heads), per element mean
    text_reg: float = 0.0  # L2 of the text head toward identity (both)
    captions: str = "phrases"  # name | phrases | phrases+multi
    prompts: str = "prompts3"  # name | prompts3 | templates8
    steps: int = 400
    lr: float = 1e-3
    wd: float = 0.0
    batch: int = 128
    logit_scale: float = 30.0
    train_scale: bool = False
    center: bool = False  # ConSE prior minus its mean over the training images
    vtemp: float = 0.05  # vproto / bank: softmax temperature over name similarities
    bank_imagenet: float = 0.0  # bank: weight of ImageNet prototypes (0: seen classes only)
    bank_protos: str = "mean"  # bank: class vectors = "mean" features or "probe" weights


class TextCache:
    """MiniLM pooled, L2-normalised sentence embeddings (the locked text tower), memoised."""

    def __init__(self, path: Path):
        self.path = path
        self.tim = None
        self.emb: dict[str, np.ndarray] = {}
        if path.is_file():
            data = np.load(path)
            self.emb = dict(zip(data["texts"].tolist(), data["emb"], strict=True))

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self.emb})
        if todo:
            if self.tim is None:
                self.tim = create_text_image_model()
            text = self.tim.model.text
            for i in range(0, len(todo), 256):
                chunk = todo[i : i + 256]
                tokens = self.tim.tokenizer(chunk)
                mask = (tokens != text.config.pad_token_id).long()
                pooled = text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
                self.emb.update(zip(chunk, pooled, strict=True))
        return np.stack([self.emb[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

    def save(self) -> None:
        texts = sorted(self.emb)
        np.savez(self.path, texts=np.array(texts), emb=np.stack([self.emb[t] for t in texts]))


def imagenet_names() -> list[str]:
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [info.index_to_description(i).split(",")[0].strip() for i in range(1000)]


def load_set(cache: Path, name: str, features: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    data = np.load(cache / f"{name}-{features}.npz")
    return data["features"].astype(np.float32), data["paths"], list(data["labels"])


def phrases_for(label: str, recipe: Recipe) -> tuple[str, ...]:
    return (normalise_class(label),) if recipe.captions == "name" else class_phrases(label)


def eval_phrase(label: str, seen: set[str]) -> str:
    """Seen classes: the first hand-written phrase; unseen: the folder name alone."""
    return class_phrases(label)[0] if label in seen else normalise_class(label)


def prompt_set(recipe: Recipe) -> tuple[str, ...]:
    return {"name": ("{}",), "prompts3": PROMPTS, "templates8": TEMPLATES}[recipe.prompts]


def class_embeddings(text: TextCache, labels: list[str], seen: set[str], recipe: Recipe):
    out = []
    for lbl in labels:
        e = text([p.format(eval_phrase(lbl, seen)) for p in prompt_set(recipe)]).mean(0)
        out.append(e / np.linalg.norm(e))
    return np.stack(out)


def caption_pool(text: TextCache, labels: list[str], recipe: Recipe) -> dict[str, np.ndarray]:
    """All captions a class may get (templates x phrases [+ multi-object]), embedded."""
    pool = {}
    for lbl in labels:
        ph = phrases_for(lbl, recipe)
        caps = [t.format(p) for t in TEMPLATES for p in ph]
        if recipe.captions == "phrases+multi" and len(ph) > 1:
            caps += [t.format(a, b) for t in MULTI_TEMPLATES for a in ph for b in ph if a != b]
        pool[lbl] = text(caps)
    return pool


class Heads(torch.nn.Module):
    def __init__(self, recipe: Recipe, init_img: torch.Tensor | None, dim_img: int = 1280):
        super().__init__()
        self.recipe = recipe
        torch.manual_seed(0)
        if recipe.kind == "lit":
            self.text = torch.nn.Linear(384, dim_img, bias=False)
            self.img = None
        else:
            w = torch.zeros(384, dim_img)
            if recipe.init == "random":
                w = torch.randn(384, dim_img) / dim_img**0.5
            elif recipe.init == "conse" and init_img is not None:
                w = init_img.clone()
            self.register_buffer("img_init", w.clone())
            self.img = torch.nn.Parameter(w)
            self.text = torch.nn.Linear(384, 384, bias=False) if recipe.kind == "both" else None
            if self.text is not None:
                if recipe.text_reg > 0 or recipe.init != "random":
                    torch.nn.init.eye_(self.text.weight)
        self.log_scale = torch.nn.Parameter(torch.tensor(float(np.log(recipe.logit_scale))))

    def image(self, feats: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
        if self.img is None:
            return torch.nn.functional.normalize(feats, dim=-1)
        e = torch.nn.functional.normalize(feats @ self.img.T, dim=-1)
        if prior is not None and self.recipe.alpha > 0:
            e = torch.nn.functional.normalize(e + self.recipe.alpha * prior, dim=-1)
        return e

    def texts(self, t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.text(t), dim=-1) if self.text is not None else t


def conse(logits: np.ndarray, names_emb: np.ndarray, top: int, temp: float) -> np.ndarray:
    z = logits / temp
    idx = np.argpartition(-z, top - 1, axis=1)[:, :top] if top < z.shape[1] else None
    if idx is not None:
        mask = np.full_like(z, -np.inf)
        np.put_along_axis(mask, idx, np.take_along_axis(z, idx, 1), 1)
        z = mask
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    e = p @ names_emb
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def train_heads(recipe, feats, labels, pool, init_img, prior=None) -> Heads:
    heads = Heads(recipe, init_img)
    if recipe.kind in ("conse", "vproto", "bank"):
        return heads
    params = [p for n, p in heads.named_parameters() if n != "log_scale" or recipe.train_scale]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.wd)
    rng = np.random.default_rng(0)
    x_all = torch.from_numpy(feats)
    label_ids = {lbl: i for i, lbl in enumerate(sorted(set(labels)))}
    y_all = np.array([label_ids[lbl] for lbl in labels])
    for _ in range(recipe.steps):
        idx = rng.choice(len(feats), size=min(recipe.batch, len(feats)), replace=False)
        x = x_all[idx]
        caps = np.stack([pool[labels[i]][rng.integers(len(pool[labels[i]]))] for i in idx])
        y = torch.from_numpy(y_all[idx])
        img = heads.image(x, None if prior is None else torch.from_numpy(prior[idx]))
        txt = heads.texts(torch.from_numpy(caps))
        logits = heads.log_scale.exp() * img @ txt.T
        same = (y[:, None] == y[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = -(target * logits.log_softmax(1)).sum(1).mean()
        loss = (loss - (target * logits.T.log_softmax(1)).sum(1).mean()) / 2
        if recipe.reg > 0 and heads.img is not None:
            loss = loss + recipe.reg * ((heads.img - heads.img_init) ** 2).sum()
        if recipe.text_reg > 0 and heads.text is not None:
            eye = torch.eye(384)
            loss = loss + recipe.text_reg * ((heads.text.weight - eye) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return heads


def centered(prior: np.ndarray, mu: np.ndarray | None) -> np.ndarray:
    if mu is None:
        return prior
    e = prior - mu
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@torch.no_grad()
def predict(heads, recipe, feats, logits, names_emb, class_emb, mu=None, data=None):
    prior = centered(conse(logits, names_emb, recipe.top, recipe.conse_temp), mu)
    if recipe.kind == "fuse":
        head = predict(heads, replace(recipe, kind="img"), feats, logits, names_emb, class_emb)
        bank = predict(
            heads, replace(recipe, kind="bank"), feats, logits, names_emb, class_emb, mu, data
        )
        return head + recipe.alpha * bank
    if recipe.kind == "bank":
        return centred_unit(feats, data.feat_mean) @ bank_prototypes(data, recipe, class_emb).T
    if recipe.kind == "vproto":
        sim = class_emb @ names_emb.T / recipe.vtemp
        w = np.exp(sim - sim.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        proto = w @ data.cls_w
        f = feats - data.aid_x[:, 0].mean(0)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        proto /= np.linalg.norm(proto, axis=1, keepdims=True)
        return f @ proto.T
    if recipe.kind == "conse":
        img = torch.from_numpy(prior)
    else:
        img = heads.image(torch.from_numpy(feats), torch.from_numpy(prior))
    txt = heads.texts(torch.from_numpy(class_emb))
    return (img @ txt.T).numpy()


class Data:
    def __init__(self, cache: Path, text: TextCache, features: str = "lite0-160"):
        self.aid_x, self.aid_paths, self.aid_y = load_set(cache, "aid-20", features)
        self.rs_x, self.rs_paths, self.rs_y = load_set(cache, "rsscn7", features)
        state = efficientnet_lite0_state_dict(features.split("-")[0])
        self.cls_w = state["classifier.weight"].numpy()
        self.cls_b = state["classifier.bias"].numpy()
        self.text = text
        self.names = imagenet_names()
        self.aid_split = self._split(self.aid_paths, self.aid_y)
        self.rs_split = self._split(self.rs_paths, self.rs_y)

    @staticmethod
    def _split(paths, labels) -> np.ndarray:
        classes: dict[str, list[Path]] = {}
        for p, lbl in zip(paths, labels, strict=True):
            classes.setdefault(lbl, []).append(Path(p))
        split = split_images(classes, seed=DEFAULT_SEED)
        where = {str(p): s for s, items in split.items() for p, _ in items}
        return np.array([where[str(p)] for p in paths])

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.cls_w.T + self.cls_b

    def names_emb(self, template: str) -> np.ndarray:
        return self.text([template.format(n) for n in self.names])

    def conse_init(self, template: str) -> torch.Tensor:
        """ConSE-linear map: logits-weighted name embeddings, scaled to unit-ish outputs."""
        w = self.names_emb(template).T @ self.cls_w  # (384, 1280)
        norms = np.linalg.norm(self.aid_x[:, 0] @ w.T, axis=1).mean()
        return torch.from_numpy((w / norms).astype(np.float32))


def probe_weights(f, lab, classes, recipe) -> np.ndarray:
    """Multinomial logistic regression (no bias) on unit features: one weight row per class."""
    torch.manual_seed(0)
    x = torch.from_numpy(f.astype(np.float32))
    y = torch.tensor([classes.index(v) for v in lab])
    w = torch.zeros(len(classes), f.shape[1], requires_grad=True)
    opt = torch.optim.Adam([w], lr=1e-2)
    for _ in range(recipe.steps):
        loss = torch.nn.functional.cross_entropy(recipe.logit_scale * x @ w.T, y)
        loss = loss + recipe.wd * (w**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach().numpy()


def build_bank(data, recipe, feats, labels, pool) -> None:
    """Concept bank: every training caption -> its class's mean (centred, unit) feature;
    optionally every ImageNet name -> its classifier weight (unit), scaled by bank_imagenet."""
    data.feat_mean = feats.mean(0)
    f = feats - data.feat_mean
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    lab = np.array(labels)
    texts, vis = [], []
    classes = sorted(set(labels))
    protos = np.stack([f[lab == c].mean(0) for c in classes])
    if recipe.bank_protos == "probe":
        protos = probe_weights(f, lab, classes, recipe)
    for c, m in zip(classes, protos, strict=True):
        m = m / np.linalg.norm(m)
        texts.append(pool[c])
        vis.append(np.repeat(m[None], len(pool[c]), 0))
    if recipe.bank_imagenet > 0:
        w = data.cls_w / np.linalg.norm(data.cls_w, axis=1, keepdims=True)
        texts.append(data.names_emb(recipe.name_template))
        vis.append(recipe.bank_imagenet * w)
    data.bank = (np.concatenate(texts), np.concatenate(vis))


def folds(classes: list[str], n: int) -> list[list[str]]:
    order = sorted(classes)
    random.Random(17).shuffle(order)
    return [sorted(order[i::n]) for i in range(n)]


def run_fold(data: Data, recipe: Recipe, held: list[str]) -> dict:
    aid_classes = sorted(set(data.aid_y))
    seen_aid = [c for c in aid_classes if c not in held]
    rs_out = {r for c in held for r in OVERLAP.get(c, [])}
    tr_aid = np.array([y in seen_aid for y in data.aid_y]) & (data.aid_split == "train")
    tr_rs = np.array([y not in rs_out for y in data.rs_y]) & (data.rs_split == "train")
    feats = np.concatenate([data.aid_x[tr_aid, 0], data.rs_x[tr_rs, 0]])
    labels = [y for y, m in zip(data.aid_y, tr_aid, strict=True) if m]
    labels += [y for y, m in zip(data.rs_y, tr_rs, strict=True) if m]
    pool = caption_pool(data.text, sorted(set(labels)), recipe)
    names_emb = data.names_emb(recipe.name_template)
    init = data.conse_init(recipe.name_template) if recipe.init == "conse" else None
    t0 = time.perf_counter()
    prior = conse(data.logits(feats), names_emb, recipe.top, recipe.conse_temp)
    mu = prior.mean(0) if recipe.center else None
    if recipe.kind in ("bank", "fuse"):
        build_bank(data, recipe, feats, labels, pool)
    heads = train_heads(recipe, feats, labels, pool, init, centered(prior, mu))
    seconds = time.perf_counter() - t0
    seen = set(labels)
    # unseen: all images of the held-out classes, N-way among them
    m_un = np.array([y in held for y in data.aid_y])
    x_un = data.aid_x[m_un, 0]
    y_un = [y for y in data.aid_y if y in held]

    def classify(x: np.ndarray, classes: list[str]) -> np.ndarray:
        class_emb = class_embeddings(data.text, classes, seen, recipe)
        sims = predict(heads, recipe, x, data.logits(x), names_emb, class_emb, mu, data)
        return np.array(classes)[sims.argmax(1)]

    pred = classify(x_un, held)
    unseen = float(np.mean(pred == np.array(y_un)))
    per_class = {c: float(np.mean(pred[np.array(y_un) == c] == c)) for c in held}
    # generalized 20-way: seen-class test images + all unseen images, all 20 names
    m_all = m_un | (data.aid_split == "test")
    x_all = data.aid_x[m_all, 0]
    y_all = np.array([y for y, m in zip(data.aid_y, m_all, strict=True) if m])
    pred = classify(x_all, aid_classes)
    is_un = np.isin(y_all, held)
    queries = query_scores(heads, data, recipe, held, seen) if recipe.kind == "fuse" else {}
    return {
        **queries,
        "held_out": held,
        "unseen_top1": round(unseen, 4),
        "per_class": per_class,
        "gzsl20_unseen": round(float(np.mean(pred[is_un] == y_all[is_un])), 4),
        "gzsl20_seen": round(float(np.mean(pred[~is_un] == y_all[~is_un])), 4),
        "train_s": round(seconds, 1),
    }


@torch.no_grad()
def fused_images(heads: Heads, data: Data, feats: np.ndarray) -> np.ndarray:
    """Image half of the fused embedding (product: FusedImageHead), unit length."""
    head = heads.image(torch.from_numpy(feats), None).numpy()
    e = np.concatenate([head, centred_unit(feats, data.feat_mean)], axis=1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def centred_unit(feats: np.ndarray, mean: np.ndarray) -> np.ndarray:
    f = feats - mean
    return f / np.linalg.norm(f, axis=1, keepdims=True)


def bank_prototypes(data: Data, recipe: Recipe, class_emb: np.ndarray) -> np.ndarray:
    """Concept bank: softmax over caption similarity -> mix of class-mean features, unit."""
    bank_t, bank_v = data.bank
    sim = class_emb @ bank_t.T / recipe.vtemp
    w = np.exp(sim - sim.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    proto = w @ bank_v
    return proto / np.linalg.norm(proto, axis=1, keepdims=True)


def fused_texts(data: Data, recipe: Recipe, class_emb: np.ndarray) -> np.ndarray:
    """Text half (product: ConceptBankTextHead), unit length."""
    e = np.concatenate([class_emb, bank_prototypes(data, recipe, class_emb)], axis=1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def query_scores(heads, data, recipe, held, seen, examples: int = 3, per_class: int = 10):
    """Held-out classes as a search: "more like these" (mean of ``examples`` images of a
    class) vs the class name as text, over all held-out images (examples removed);
    top-1 = the first hit is of the class, R@10 = one of the top 10 is."""
    m = np.array([y in held for y in data.aid_y])
    emb = fused_images(heads, data, data.aid_x[m, 0])
    labels = np.array([y for y in data.aid_y if y in held])
    texts = fused_texts(data, recipe, class_embeddings(data.text, held, seen, recipe))
    rng = np.random.default_rng(0)
    out = {"image": [], "text": []}
    for ci, c in enumerate(held):
        members = np.flatnonzero(labels == c)
        order = np.argsort(-(emb @ texts[ci]))
        out["text"].append((labels[order[0]] == c, (labels[order[:10]] == c).any()))
        for _ in range(per_class):
            ex = rng.choice(members, size=examples, replace=False)
            q = emb[ex].mean(0)
            sims = emb @ q
            sims[ex] = -np.inf
            order = np.argsort(-sims)
            out["image"].append((labels[order[0]] == c, (labels[order[:10]] == c).any()))
    return {
        f"{kind}_query_{metric}": round(float(np.mean([h[i] for h in hits])), 4)
        for kind, hits in out.items()
        for i, metric in enumerate(("top1", "r10"))
    }


def rsscn7_in_vocab(data: Data, recipe: Recipe) -> float:
    """Trained on everything (AID-20 + RSSCN7 train splits), RSSCN7 test split, 7-way."""
    tr_aid = data.aid_split == "train"
    tr_rs = data.rs_split == "train"
    feats = np.concatenate([data.aid_x[tr_aid, 0], data.rs_x[tr_rs, 0]])
    labels = [y for y, m in zip(data.aid_y, tr_aid, strict=True) if m]
    labels += [y for y, m in zip(data.rs_y, tr_rs, strict=True) if m]
    pool = caption_pool(data.text, sorted(set(labels)), recipe)
    init = data.conse_init(recipe.name_template) if recipe.init == "conse" else None
    names_emb = data.names_emb(recipe.name_template)
    prior = conse(data.logits(feats), names_emb, recipe.top, recipe.conse_temp)
    mu = prior.mean(0) if recipe.center else None
    if recipe.kind in ("bank", "fuse"):
        build_bank(data, recipe, feats, labels, pool)
    heads = train_heads(recipe, feats, labels, pool, init, centered(prior, mu))
    te = data.rs_split == "test"
    x = data.rs_x[te, 0]
    y = np.array([v for v, m in zip(data.rs_y, te, strict=True) if m])
    classes = sorted(set(data.rs_y))
    sims = predict(
        heads,
        recipe,
        x,
        data.logits(x),
        names_emb,
        class_embeddings(data.text, classes, set(labels), recipe),
        mu,
        data,
    )
    return round(float(np.mean(np.array(classes)[sims.argmax(1)] == y)), 4)


LEVERS: dict[str, Recipe] = {
    "untuned(random heads)": Recipe(kind="img", init="random", steps=0),
    "conse T=10": Recipe(kind="conse", top=10),
    "conse T=10 'a photo of a {}'": Recipe(kind="conse", top=10, name_template="a photo of a {}"),
    "conse T=5": Recipe(kind="conse", top=5),
    "conse T=20": Recipe(kind="conse", top=20),
    "conse T=10 centered": Recipe(kind="conse", top=10, center=True),
    "conse T=10 centered photo": Recipe(
        kind="conse", top=10, center=True, name_template="a photo of a {}"
    ),
    "vproto t=0.05": Recipe(kind="vproto", vtemp=0.05),
    "vproto t=0.02": Recipe(kind="vproto", vtemp=0.02),
    "both heads (today, locked tower)": Recipe(kind="both", init="random"),
    "both heads, text reg to identity 1e-2": Recipe(kind="both", init="random", text_reg=1e-2),
    "lit (text head only)": Recipe(kind="lit"),
    "img head, random init": Recipe(kind="img", init="random"),
    "img head, conse init": Recipe(kind="img", init="conse"),
    "img head, conse init, reg 1e-3": Recipe(kind="img", init="conse", reg=1e-3),
    "img head, conse init, reg 1e-2": Recipe(kind="img", init="conse", reg=1e-2),
    "img head, 100 steps": Recipe(kind="img", init="random", steps=100),
    "img head, 1500 steps": Recipe(kind="img", init="random", steps=1500),
    "img head, wd 0.1": Recipe(kind="img", init="random", wd=0.1),
    "img head, scale 10": Recipe(kind="img", init="random", logit_scale=10.0),
    "img head, scale 100": Recipe(kind="img", init="random", logit_scale=100.0),
    "img head, captions name only": Recipe(kind="img", init="random", captions="name"),
    "img head, captions +multi": Recipe(kind="img", init="random", captions="phrases+multi"),
    "img head, prompts name only": Recipe(kind="img", init="random", prompts="name"),
    "img head, prompts 8 templates": Recipe(kind="img", init="random", prompts="templates8"),
    "bank seen t=0.05": Recipe(kind="bank", vtemp=0.05),
    "bank seen t=0.02": Recipe(kind="bank", vtemp=0.02),
    "bank seen+imagenet t=0.05": Recipe(kind="bank", vtemp=0.05, bank_imagenet=1.0),
    "bank seen+imagenet t=0.05 photo": Recipe(
        kind="bank", vtemp=0.05, bank_imagenet=1.0, name_template="a photo of a {}"
    ),
    "bank seen t=0.1": Recipe(kind="bank", vtemp=0.1),
    "bank seen t=0.05 +multi": Recipe(kind="bank", vtemp=0.05, captions="phrases+multi"),
    "bank seen t=0.05 name captions": Recipe(kind="bank", vtemp=0.05, captions="name"),
    "bank seen t=0.05 prompts8": Recipe(kind="bank", vtemp=0.05, prompts="templates8"),
    "bank seen t=0.05 prompt name": Recipe(kind="bank", vtemp=0.05, prompts="name"),
    "bank seen+imagenet sat t=0.05": Recipe(
        kind="bank", vtemp=0.05, bank_imagenet=1.0, name_template="a satellite image of {}"
    ),
    "bank probe t=0.05": Recipe(kind="bank", vtemp=0.05, bank_protos="probe"),
    "bank probe t=0.1": Recipe(kind="bank", vtemp=0.1, bank_protos="probe"),
    "bank probe t=0.05 wd1e-3": Recipe(kind="bank", vtemp=0.05, bank_protos="probe", wd=1e-3),
    "fuse head + 1 x bank": Recipe(kind="fuse", alpha=1.0, vtemp=0.05),
    "fuse head + 2 x bank": Recipe(kind="fuse", alpha=2.0, vtemp=0.05),
    "fuse head + 0.5 x bank": Recipe(kind="fuse", alpha=0.5, vtemp=0.05),
    "blend a=1": Recipe(kind="blend", init="random", alpha=1.0),
    "blend centered a=0.3": Recipe(kind="blend", init="random", alpha=0.3, center=True),
    "blend centered a=1": Recipe(kind="blend", init="random", alpha=1.0, center=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default="/tmp/h17-cache")
    parser.add_argument(
        "--features", default="lite0-160", help="TOWER-SIZE of the cached features (lite2-224)"
    )
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--levers", default=None, help="comma-separated lever names")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--in-vocab", action="store_true", help="also RSSCN7 7-way, all trained")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    text = TextCache(Path(args.cache) / "text.npz")
    data = Data(Path(args.cache), text, args.features)
    fold_classes = folds(sorted(set(data.aid_y)), args.folds)
    chosen = args.levers.split("|") if args.levers else list(LEVERS)
    out = {
        "load_average": {"start": load_average()},
        "folds": fold_classes,
        "validation_folds": list(VALIDATION_FOLDS),
        "levers": {},
    }
    for name in chosen:
        recipe = LEVERS[name]
        rows = [run_fold(data, recipe, held) for held in fold_classes]
        val = np.mean([rows[i]["unseen_top1"] for i in VALIDATION_FOLDS])
        test = np.mean([r["unseen_top1"] for i, r in enumerate(rows) if i not in VALIDATION_FOLDS])
        res = {
            "recipe": recipe.__dict__,
            "folds": rows,
            "val_unseen_top1": round(float(val), 4),
            "test_unseen_top1": round(float(test), 4),
            "gzsl20_unseen": round(float(np.mean([r["gzsl20_unseen"] for r in rows])), 4),
            "gzsl20_seen": round(float(np.mean([r["gzsl20_seen"] for r in rows])), 4),
        }
        if args.in_vocab:
            res["rsscn7_in_vocab_top1"] = rsscn7_in_vocab(data, recipe)
        out["levers"][name] = res
        print(
            f"{name:40s} val {res['val_unseen_top1']:.3f} test {res['test_unseen_top1']:.3f} "
            f"folds {' '.join(format(r['unseen_top1'], '.2f') for r in rows)} "
            f"gzsl20 un {res['gzsl20_unseen']:.3f} seen {res['gzsl20_seen']:.3f} "
            f"rsscn7 {res.get('rsscn7_in_vocab_top1', '-')}",
            file=sys.stderr,
        )
        text.save()
    out["load_average"]["end"] = load_average()
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
