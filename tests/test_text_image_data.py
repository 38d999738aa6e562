"""Text-image training data: the caption converter (SkyScript CSVs), image sets and CSVs
together, classes left out, and images that cannot be read."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skysearch.encoders.datasets import captions
from text_image_env import MINI, last_json

from skysearch.config import Workspace
from skysearch.errors import UsageError


def test_converter_writes_skyscript_csv_with_disjoint_split(tmp_path):
    paths = captions.convert_folder(MINI, tmp_path / "a")
    again = captions.convert_folder(MINI, tmp_path / "b")
    seen: dict[str, str] = {}
    titles = set()
    for split, path in paths.items():
        assert path.read_bytes() == again[split].read_bytes()  # fixed seed: same split, captions
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            assert tuple(reader.fieldnames) == captions.CSV_COLUMNS
            for row in reader:
                assert row["filepath"] not in seen, f"{row['filepath']} in {split} and another"
                seen[row["filepath"]] = split
                assert Path(row["filepath"]).is_file()
                assert row["title"] and row["title_multi_objects"]
                titles.add(row["title"])
    assert len(seen) == 84  # every image exactly once
    assert {s for s in seen.values()} == {"train", "val", "test"}
    assert len(titles) > 40  # varied templates and phrases, not one caption per class
    assert captions.normalise_class("dRiverLake") == "river lake"
    assert captions.display_name("fResident") == "a residential area"


def test_files_that_are_not_images_are_left_out_of_the_split_and_named(tmp_path):
    """A text file or an empty file named .jpg in a class folder must not move real images
    between the seeded splits (eval would then drop test images as copies of training ones)."""
    import shutil
    import warnings

    junk = tmp_path / "junk"
    shutil.copytree(MINI, junk)
    (junk / "gParking" / "fake.jpg").write_text("not a jpeg")
    (junk / "gParking" / "zero.jpg").write_bytes(b"")
    clean = captions.split_images(captions.list_class_images(MINI))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        listed = captions.list_class_images(junk)
    assert [len(v) for v in listed.values()] == [
        len(v) for v in captions.list_class_images(MINI).values()
    ]
    for split, items in captions.split_images(listed).items():
        assert [(p.relative_to(junk), c) for p, c in items] == [
            (p.relative_to(MINI), c) for p, c in clean[split]
        ]
    assert len(said) == 1, [str(w.message) for w in said]
    message = str(said[0].message)
    assert "left out 2 file(s)" in message and "fake.jpg (" in message and "zero.jpg (" in message


def test_images_cut_short_are_skipped_before_training(tmp_path):
    """A JPEG cut short passed the header check and then ended the run while features were
    computed, after the images before it."""
    from skysearch.encoders.training.text_image_data import check_images

    good = sorted(MINI.glob("aGrass/*.jpg"))[0]
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    png = tmp_path / "whole.png"
    Image.open(good).save(png)
    (tmp_path / "cut.png").write_bytes(png.read_bytes()[:-40])
    names = ["cut.jpg", "empty.jpg", "text.jpg", "cut.png"]
    rows = [(str(good), "grass", "aGrass"), (str(png), "grass", "aGrass")]
    rows += [(str(tmp_path / n), "grass", "aGrass") for n in names]
    kept, skipped = check_images(rows)
    assert kept == rows[:2]
    assert [Path(s["path"]).name for s in skipped] == names and all(s["reason"] for s in skipped)
    assert "truncated" in skipped[0]["reason"]


def test_small_sets_empty_captions_and_one_class_left(cli, tmp_path):
    """Four images a class (no validation image) failed on an empty val.csv the run had made;
    a CSV without one caption trained a model on no words; excluding all but one class trained
    on that class alone; a CSV listing the set's test images beside it trained on them; an
    evaluation on another split named only the first class whose test images it trained on."""
    import shutil

    small = tmp_path / "small"
    for cls in ("aGrass", "gParking"):
        (small / cls).mkdir(parents=True)
        for path in sorted((MINI / cls).glob("*.jpg"))[:4]:
            shutil.copy(path, small / cls / path.name)
    quick = ("--epochs", "1", "--max-steps", "1", "--threads", "1", "--image-tower", "locked")
    done = cli("train", "text-image", "--images", small, *quick, "-w", tmp_path / "ws")
    assert done.exit_code == 0, done.stderr
    assert "no validation top-1" in done.stderr
    other_split = cli("eval", "text-image", "--images", small, "--seed", "1", "--threads", "1",
                      "-w", tmp_path / "ws")  # fmt: skip
    assert other_split.exit_code == 2  # under seed 1 each class's test image was a training one
    assert "test images of aGrass (1), gParking (1) were in the model's training CSV" in (
        other_split.stderr
    )
    cut = cli("train", "text-image", "--images", small, "--exclude-classes", "aGrass", *quick,
              "-w", tmp_path / "ws")  # fmt: skip
    assert cut.exit_code == 2 and "one class (gParking) left after excluding aGrass" in cut.stderr
    listing = tmp_path / "listing.csv"  # every image, the set's test images too
    listing.write_text("filepath,title\n" + "".join(f"{p},grass\n" for p in small.glob("*/*.jpg")))
    both = cli("train", "text-image", "--images", small, "--csv", listing, *quick,
               "-w", tmp_path / "ws3")  # fmt: skip
    assert both.exit_code == 2 and "rows of " in both.stderr
    assert "are validation or test images of the --images set" in both.stderr
    blank = tmp_path / "blank.csv"
    blank.write_text("filepath,title\n" + "".join(f"{p},\n" for p in small.glob("*/*.jpg")))
    done = cli("train", "text-image", "--csv", blank, *quick, "-w", tmp_path / "ws2")
    assert done.exit_code == 2 and "fewer than two rows with a caption" in done.stderr
    assert "Traceback" not in done.stderr + cut.stderr


def test_image_sets_named_alike_keep_their_own_training_csvs(cli, tmp_path):
    """`a/set` and `b/set` shared `captions/set-<seed>/`: training on the second rewrote the
    first model's training CSV, and its evaluation then scored its own training images."""
    import shutil

    for parent, classes in (("a", ("aGrass", "gParking")), ("b", ("eForest", "fResident"))):
        for cls in classes:
            (tmp_path / parent / "set" / cls).mkdir(parents=True)
            for path in sorted((MINI / cls).glob("*.jpg"))[:6]:
                shutil.copy(path, tmp_path / parent / "set" / cls / path.name)
    quick = ("--epochs", "1", "--max-steps", "1", "--threads", "1", "--image-tower", "locked")
    ws = tmp_path / "ws"
    ids = []
    for parent in ("a", "b"):
        done = cli("train", "text-image", "--images", tmp_path / parent / "set", *quick,
                   "-w", ws, "--json")  # fmt: skip
        assert done.exit_code == 0, done.stderr
        ids.append(last_json(done)["model_id"])
    assert len({p.parent for p in (ws / "captions").glob("*/train.csv")}) == 2
    res = cli("eval", "text-image", "--images", tmp_path / "a" / "set", "--model", ids[0],
              "--threads", "1", "-w", ws, "--json")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert last_json(res)["test_images"] == 2  # one test image a class, not all twelve


def test_caption_csvs_of_the_older_layout_are_still_used_for_their_own_set(tmp_path):
    """Folders named by the set's name alone (before the path key) stay in use for that set,
    so its finished and interrupted runs are found again; another set of that name gets its
    own folder."""
    import shutil

    from skysearch.encoders.training.text_image_data import prepare_folder

    ws = Workspace(tmp_path / "ws")
    made = prepare_folder(MINI, ws)["train"].parent
    legacy = ws.root / "captions" / f"{MINI.resolve().name}-{captions.DEFAULT_SEED}"
    assert made != legacy
    made.rename(legacy)
    assert prepare_folder(MINI, ws)["train"].parent == legacy
    shutil.copytree(MINI, tmp_path / "other" / MINI.name)
    assert prepare_folder(tmp_path / "other" / MINI.name, ws)["train"].parent != legacy


def test_converter_rejects_a_folder_without_classes(tmp_path):
    with pytest.raises(UsageError, match="class folders"):
        captions.convert_folder(tmp_path, tmp_path / "out")


def test_exclude_classes_leaves_no_image_or_caption_of_them(tmp_path):
    """Leave-classes-out, checked on the training CSV itself: no image of an excluded class,
    no caption naming it (folder name or phrase, e.g. "a lake" names dRiverLake); the other
    classes stay; several caption sources merge into one CSV."""
    from skysearch.encoders.training.text_image_data import prepare_training_data

    ws = Workspace(tmp_path / "ws")
    extra = tmp_path / "extra.csv"
    image = next((MINI / "aGrass").glob("*.jpg"))
    captions.write_csv(
        [
            captions.CaptionRow(str(image), "A lake beside a meadow", "", ""),
            captions.CaptionRow(str(image), "Parked cars on grass", "", ""),
            captions.CaptionRow(str(image), "A meadow in spring", "", ""),
        ],
        extra,
    )
    out = prepare_training_data(
        ws, images=[MINI], train_csvs=[extra], exclude=["dRiverLake", "Parking"]
    )
    rows = captions.read_caption_rows(out["train"])
    terms = captions.naming_terms("dRiverLake") + captions.naming_terms("Parking")
    assert "lake" in terms and "parking lot" in terms
    assert {r.label for r in rows} == {"", "aGrass", "bField", "cIndustry", "eForest", "fResident"}
    for r in rows:
        text = f"{r.title} | {r.title_multi_objects}".lower()
        assert not captions.names_class(text, terms), text
        assert "dRiverLake" not in r.filepath and "gParking" not in r.filepath
    assert "A meadow in spring" in {r.title for r in rows}  # unrelated caption kept
    assert not {"A lake beside a meadow", "Parked cars on grass"} & {r.title for r in rows}
    assert out["removed"]["train"] == 16 + 2  # 8 + 8 training images, two extra captions
    again = prepare_training_data(
        ws, images=[MINI], train_csvs=[extra], exclude=["dRiverLake", "Parking"]
    )
    assert again["train"].read_bytes() == out["train"].read_bytes()
    with pytest.raises(UsageError, match="Parkng: no training image or caption of that class"):
        prepare_training_data(ws, images=[MINI], exclude=["dRiverLake", "Parkng"])


def test_a_16_bit_grey_image_reads_as_its_8_bit_grey(tmp_path):
    """16-bit PNGs (scaled to 8 bits) read as the same picture, not clipped to white."""
    from PIL import Image
    from skysearch.encoders.models.text_image import load_rgb

    grey = np.asarray(Image.open(sorted(MINI.glob("*/*.jpg"))[0]).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    loaded = np.asarray(load_rgb(tmp_path / "deep.png"))
    assert np.array_equal(loaded, np.repeat(grey[:, :, None], 3, axis=2))


def test_scene_folders_report_broken_links_and_undecodable_names(tmp_path):
    import os
    import shutil

    from skysearch.retrieval.indexing.scenes import find_images

    first = sorted(MINI.glob("*/*.jpg"))[0]
    shutil.copy(first, tmp_path / "good.jpg")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    shutil.copy(first, os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg"))
    skipped: list[dict[str, str]] = []
    assert find_images(tmp_path, skipped) == [tmp_path / "good.jpg"]
    assert sorted((Path(s["path"]).name, s["reason"]) for s in skipped) == [
        ("caf\ufffd.jpg", "name is not valid UTF-8: rename it"),
        ("gone.jpg", "broken link"),
    ]
    # a folder that is gone: said how to drop its indexed scenes (it read "neither an image
    # nor a folder of images", and the scenes stayed searchable with no way given)
    with pytest.raises(UsageError, match="does not exist .to drop the scenes indexed from a"):
        find_images(tmp_path / "gone-folder")
