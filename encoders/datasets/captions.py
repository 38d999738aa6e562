"""Class-folder image sets -> SkyScript-format caption CSVs, split by image (fixed seed).

SkyScript builds captions from OpenStreetMap tags by rules. Here the "tags" are class folder
names: each class gets a small vocabulary of phrases (``grass`` -> grassland, meadow...), and
each image gets captions drawn from varied templates ("an aerial photo of a meadow"). The CSV
columns are SkyScript's: ``filepath``, ``title`` (one-object caption), ``title_multi_objects``
(a longer caption naming two phrases); we add ``label`` (the class folder).

The split is by image and stratified by class: every image lands in exactly one of
train/val/test, decided by a seeded shuffle, so the same folder always gives the same split.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from skysearch.ingest.decode import IMAGE_SUFFIXES, open_image

from skysearch.atomic import atomic_path
from skysearch.errors import UsageError, some_of

CSV_COLUMNS = ("filepath", "title", "title_multi_objects", "label")
SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
DEFAULT_SEED = 20150101

#: Phrases per normalised class name (RSSCN7 plus common scene-set classes). The first phrase
#: is the class's display name, used in zero-shot prompts.
CLASS_PHRASES: dict[str, tuple[str, ...]] = {
    "grass": ("grassland", "a meadow", "grass", "a pasture", "an open field of grass"),
    "field": ("farmland", "cultivated fields", "cropland", "agricultural fields", "farm plots"),
    "industry": (
        "an industrial area",
        "factories",
        "industrial buildings",
        "warehouses",
        "a factory complex",
    ),
    "river lake": ("a river or lake", "a river", "a lake", "water", "a river bank"),
    "forest": ("a forest", "woods", "dense trees", "woodland", "a tree canopy"),
    "resident": (
        "a residential area",
        "houses",
        "homes",
        "residential buildings",
        "a neighbourhood",
    ),
    "parking": ("a parking lot", "parked cars", "a car park", "rows of cars", "a parking area"),
    # AID classes shipped in ../shared/data/aid-20 (never AID's withheld ten: those are scored
    # by their folder names alone).
    "bare land": ("bare land", "barren land", "bare soil", "an empty lot of bare earth"),
    "baseball field": ("a baseball field", "a baseball diamond", "a ballpark"),
    "center": ("a city center", "downtown", "a town centre with large buildings"),
    "commercial": ("a commercial area", "shops and offices", "a business district"),
    "dense residential": (
        "a dense residential area",
        "densely packed houses",
        "crowded housing blocks",
    ),
    "farmland": ("farmland", "cultivated fields", "cropland", "agricultural fields"),
    "industrial": ("an industrial area", "factories", "warehouses", "industrial buildings"),
    "meadow": ("a meadow", "grassland", "a pasture"),
    "medium residential": (
        "a medium density residential area",
        "suburban houses",
        "houses with yards",
    ),
    "park": ("a park", "a city park with lawns and paths", "green space with trees"),
    "playground": ("a playground", "a running track around a sports field", "a sports ground"),
    "pond": ("a pond", "a small lake", "a pool of still water"),
    "railway station": ("a railway station", "a train station", "railway tracks and platforms"),
    "resort": ("a resort", "a holiday resort", "hotel buildings with gardens and pools"),
    "river": ("a river", "a winding river", "a river bank"),
    "school": ("a school", "school buildings and a sports field", "a campus"),
    "sparse residential": (
        "a sparse residential area",
        "scattered houses",
        "detached houses among trees",
    ),
    "square": ("a square", "a public square", "a plaza"),
}

TEMPLATES: tuple[str, ...] = (
    "a satellite image of {}",
    "an aerial photo of {}",
    "a remote sensing image showing {}",
    "{} seen from above",
    "an overhead view of {}",
    "aerial imagery of {}",
    "a top-down satellite view of {}",
    "a high resolution aerial image with {}",
)
MULTI_TEMPLATES: tuple[str, ...] = (
    "an aerial image of {} with {}",
    "a satellite view showing {} and {}",
    "{} next to {}, seen from above",
    "a remote sensing scene of {} including {}",
)
#: Zero-shot prompts (class display name goes in).
PROMPTS: tuple[str, ...] = (
    "a satellite image of {}",
    "an aerial photo of {}",
    "a remote sensing image of {}",
)


def normalise_class(folder: str) -> str:
    """``dRiverLake`` -> ``river lake``; ``parking_lot`` -> ``parking lot``.

    A single lowercase letter before a capital (RSSCN7's ordering prefix) is dropped.
    """
    name = re.sub(r"^[a-z](?=[A-Z])", "", folder)
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return re.sub(r"[\s_\-]+", " ", name).strip().lower()


def class_phrases(folder: str) -> tuple[str, ...]:
    """Caption phrases for a class folder; unknown classes fall back to their own name."""
    name = normalise_class(folder)
    return CLASS_PHRASES.get(name, (name,))


def display_name(folder: str, table: dict[str, list[str]] | None = None) -> str:
    """The phrase used for a class in zero-shot prompts.

    ``table``: a model's own class phrase table (the classes it was trained on, by folder name):
    a class in it gets its first phrase, any other class its folder name alone (an honest
    unseen-class prompt). Without a table, the built-in phrases or the folder name.
    """
    if table is None:
        return class_phrases(folder)[0]
    phrases = table.get(folder) or table.get(normalise_class(folder))
    return phrases[0] if phrases else normalise_class(folder)


def naming_terms(folder: str) -> tuple[str, ...]:
    """Words that name a class in a caption: its folder name and its phrases, without
    articles (``a river bank`` -> ``river bank``), lower case."""
    terms = {normalise_class(folder)}
    for phrase in class_phrases(folder):
        terms.add(re.sub(r"^(a|an|the)\s+", "", phrase.lower()).strip())
    return tuple(sorted(t for t in terms if t))


def names_class(caption: str, terms: Sequence[str]) -> bool:
    """Whether ``caption`` contains one of ``terms`` as whole words (case-insensitive)."""
    text = caption.lower()
    return any(re.search(rf"\b{re.escape(t)}\b", text) for t in terms)


@dataclass(frozen=True)
class CaptionRow:
    filepath: str
    title: str
    title_multi_objects: str
    label: str


def caption_for(
    folder: str, rng: random.Random, phrases: Sequence[str] | None = None
) -> tuple[str, str]:
    """(title, title_multi_objects) for one image of class ``folder``, varied by ``rng``
    (``phrases``: the class's phrases; default: the built-in ones)."""
    phrases = tuple(phrases or class_phrases(folder))
    title = rng.choice(TEMPLATES).format(rng.choice(phrases))
    first, second = rng.sample(phrases, 2) if len(phrases) > 1 else (phrases[0], phrases[0])
    multi = rng.choice(MULTI_TEMPLATES).format(first, second)
    return title[0].upper() + title[1:], multi[0].upper() + multi[1:]


def list_class_images(
    images_dir: str | Path, left_out: list[dict[str, str]] | None = None
) -> dict[str, list[Path]]:
    """``{class folder: sorted image paths}``; a usage error when there are no class folders.

    Files with an image suffix whose header is not an image (an empty file, a text file named
    .jpg) are left out with a warning naming them, and added to ``left_out`` (``path``,
    ``reason``) when given: the seeded split is over the images alone, so such files never move
    real images between the training and test splits. Only headers are read here (a file cut
    short stays in the split, as in the splits made before: its users check it whole, see
    :func:`image_problem`). Class folders without images and folders inside class folders
    (not read) are named in a warning."""
    root = Path(images_dir)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder of class folders (e.g. rsscn7/aGrass/*.jpg)")
    classes, junk, inner = {}, [], []
    for d in sorted(root.iterdir()):
        if _is_folder(d):
            entries = sorted(d.iterdir())
            inner += [str(p.relative_to(root)) for p in entries if _is_folder(p)]
            named = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir()]
            why = {p: image_problem(p) for p in named}
            classes[d.name] = [p for p in named if why[p] is None]
            junk += [(p, why[p]) for p in named if why[p]]
    _say_left_out(root, junk, [name for name, paths in classes.items() if not paths], inner)
    if left_out is not None:
        left_out += [{"path": str(p.resolve()), "reason": f"not an image: {r}"} for p, r in junk]
    classes = {k: v for k, v in classes.items() if v}
    if len(classes) < 2:
        raise UsageError(
            f"{root} needs at least two class folders with images (found {len(classes)})"
        )
    return classes


def image_problem(path: str | Path, whole: bool = False) -> str | None:
    """Why ``path`` is not an image Pillow reads, else None: from its header alone, or with
    ``whole`` from all its data (a file cut short has a good header): a JPEG is then decoded at
    1/8 scale (its whole stream is read, at a fraction of a full decode), other formats are
    verified."""
    try:
        with open_image(path) as im:
            if whole and im.format == "JPEG":
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
                im.load()
            elif whole:
                im.verify()
        return None
    except (OSError, ValueError, SyntaxError) as exc:  # ValueError: declares too many pixels;
        # SyntaxError: Pillow's verify of a broken PNG
        lines = str(exc).splitlines()
        why = lines[0].replace(f" {str(path)!r}", "") if lines else ""  # Pillow names the file
        return why[:200] or type(exc).__name__


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")


def _say_left_out(
    root: Path, junk: list[tuple[Path, str]], empty: list[str], inner: list[str]
) -> None:
    """One warning naming the files of an image set that are not images, one naming the
    folders it does not read (so a nested or empty class is never dropped without a word)."""
    if junk:
        names = [f"{p.relative_to(root)} ({reason})" for p, reason in junk]
        warnings.warn(
            f"left out {len(junk)} file(s) of {root} that are not images: {some_of(names, 5)}",
            stacklevel=3,
        )
    ignored = [f"class folders without images: {some_of(empty, 5)}"] if empty else []
    ignored += [f"folders inside class folders (not read): {some_of(inner, 5)}"] if inner else []
    if ignored:
        warnings.warn(f"ignored in {root}: {'; '.join(ignored)}", stacklevel=3)


def split_images(
    classes: dict[str, list[Path]],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = DEFAULT_SEED,
) -> dict[str, list[tuple[Path, str]]]:
    """Stratified split by image: ``{split: [(path, class folder)...]}``, seeded, disjoint."""
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6 or min(fractions) < 0:
        raise UsageError(f"split fractions must be three numbers summing to 1, got {fractions}")
    out: dict[str, list[tuple[Path, str]]] = {s: [] for s in SPLITS}
    for folder, paths in sorted(classes.items()):
        order = sorted(paths)
        random.Random(f"{seed}/{folder}").shuffle(order)
        n_train = round(len(order) * fractions[0])
        n_val = round(len(order) * fractions[1])
        parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
        for split, part in zip(SPLITS, parts, strict=True):
            out[split].extend((p, folder) for p in part)
    return out


def caption_rows(
    items: Sequence[tuple[Path, str]],
    seed: int = DEFAULT_SEED,
    table: dict[str, list[str]] | None = None,
) -> list[CaptionRow]:
    """Captions for ``(path, class folder)`` items; each image's captions depend only on its
    name and the seed (so re-running never changes them). ``table``: as in
    :func:`display_name` (a class outside it is captioned by its folder name alone)."""
    rows = []
    for path, folder in items:
        rng = random.Random(f"{seed}/{folder}/{path.name}")
        phrases = None if table is None else (table.get(folder) or [display_name(folder, table)])
        title, multi = caption_for(folder, rng, phrases)
        rows.append(CaptionRow(str(path.resolve()), title, multi, folder))
    return rows


def write_csv(rows: Sequence[CaptionRow], path: str | Path) -> Path:
    """Write rows in SkyScript's CSV format (plus ``label``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(CSV_COLUMNS)
        for r in rows:
            writer.writerow([r.filepath, r.title, r.title_multi_objects, r.label])
    return path


def _rows(path: str | Path, need: Sequence[str]) -> list[dict[str, str]]:
    """A caption CSV's rows as dicts, ``filepath`` made absolute (relative to the CSV; an empty
    one stays empty), a missing optional value "". A row without a value for a column in
    ``need`` (a short row, or a quote left open that ran on) is a usage error naming its
    lines: csv fills such a row with None, and its captions would be wrong or empty."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"caption CSV {path} not found")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            fields = reader.fieldnames or []
            for column in ("filepath", *need):
                if column not in fields:
                    columns = ", ".join(fields)
                    raise UsageError(f"{path} has no {column!r} column (columns: {columns})")
            rows, end = [], reader.line_num
            for raw in reader:
                start, end = end + 1, reader.line_num
                short = [c for c in ("filepath", *need) if raw[c] is None]
                missing = [c for c in fields if raw[c] is None]
                if missing and any(_ran_on(v) for v in raw.values() if isinstance(v, str)):
                    short = missing  # a quote left open ran on, whichever column it opened
                if short:
                    raise UsageError(_short_row(path, raw, fields, short, start, end))
                row = {k: v or "" for k, v in raw.items() if k is not None}  # key None: extras
                fp = Path(row["filepath"])
                if row["filepath"]:
                    row["filepath"] = str(fp if fp.is_absolute() else path.parent / fp)
                rows.append(row)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path} is not a UTF-8 CSV file ({exc})") from None
    if not rows:
        raise UsageError(f"caption CSV {path} has no rows")
    return rows


def _ran_on(value: str) -> bool:
    """Whether a value holds later lines of the file: a line break followed by a comma (a
    caption may hold a line break, a swallowed CSV row holds its commas)."""
    return "," in value.partition("\n")[2]


def _short_row(
    path: Path,
    row: dict[str, str | None],
    fields: Sequence[str],
    short: list[str],
    start: int,
    end: int,
) -> str:
    """Why a CSV row with no value for the columns ``short`` is refused, naming its lines: it
    ends on line ``end``, and starts after the blank lines from ``start`` (csv skips them),
    as many lines up as its values hold line breaks (a quote left open runs on)."""
    given = sum(row[f] is not None for f in fields)
    first = max(start, end - sum(v.count("\n") for v in row.values() if isinstance(v, str)))
    what = f"{given} of its {len(fields)} columns, no {' or '.join(short)}"
    if first == end:
        return f"line {end} of {path} has {what}: fix or remove the row"
    return (
        f"lines {first}-{end} of {path} are one row (a quote left open?) with {what}: fix or "
        "remove the row"
    )


def file_sha1(path: str | Path) -> str:
    """SHA-1 of a file's bytes, read in 1 MiB chunks: a caption CSV's or an image's identity
    by content (a copy under another path is the same file)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def read_csv(path: str | Path, caption_key: str = "title") -> list[tuple[str, str, str]]:
    """``[(filepath, caption, label)]`` from a SkyScript CSV (``label`` may be absent: "")."""
    return [
        (r["filepath"], r[caption_key], r.get("label") or "") for r in _rows(path, [caption_key])
    ]


def read_caption_rows(path: str | Path) -> list[CaptionRow]:
    """All rows of a SkyScript CSV (``title_multi_objects`` and ``label`` may be absent: "")."""
    return [
        CaptionRow(
            r["filepath"], r["title"], r.get("title_multi_objects") or "", r.get("label") or ""
        )
        for r in _rows(path, ["title"])
    ]


def exclude_classes(
    rows: Sequence[CaptionRow], classes: Sequence[str]
) -> tuple[list[CaptionRow], int]:
    """Rows left after removing ``classes`` (folder names, any spelling: ``StorageTanks``,
    ``storage tanks``): their images (by ``label``) AND every row whose caption names one of
    them (folder name or phrase, whole words). Returns ``(kept rows, removed count)``."""
    names = {normalise_class(c) for c in classes}
    terms = sorted({t for c in classes for t in naming_terms(c)})
    kept = [
        r
        for r in rows
        if normalise_class(r.label) not in names
        and not names_class(r.title, terms)
        and not names_class(r.title_multi_objects, terms)
    ]
    return kept, len(rows) - len(kept)


def convert_folder(
    images_dir: str | Path,
    out_dir: str | Path,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = DEFAULT_SEED,
    left_out: list[dict[str, str]] | None = None,
) -> dict[str, Path]:
    """Class folders -> ``{train,val,test}.csv`` in ``out_dir``; returns the CSV paths
    (``left_out``: see :func:`list_class_images`)."""
    splits = split_images(list_class_images(images_dir, left_out), fractions, seed)
    return {
        split: write_csv(caption_rows(items, seed), Path(out_dir) / f"{split}.csv")
        for split, items in splits.items()
    }
