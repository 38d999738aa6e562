"""Text-image inputs a user gets wrong: short CSV rows, image sets given twice or holding files
that are not images, empty or nested folders, images cut short at evaluation, validation sets
too small to score (checkpoint files open_clip cannot use: test_text_image_model.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from skysearch.encoders.datasets import captions
from text_image_env import MINI, last_json

from skysearch.errors import UsageError

QUICK = ("--epochs", "1", "--max-steps", "1", "--threads", "1", "--image-tower", "locked")


def _copy_class(cls: str, dest: Path, count: int) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    paths = sorted((MINI / cls).glob("*.jpg"))[:count]
    for path in paths:
        shutil.copy(path, dest / path.name)
    return [dest / p.name for p in paths]


def test_a_short_csv_row_is_one_error_naming_its_lines(cli, tmp_path):
    """csv fills a short row with None: training ended in an AttributeError traceback."""
    images = sorted(MINI.glob("*/*.jpg"))[:3]
    good = "filepath,title,title_multi_objects,label\n" + "".join(
        f"{p},a photo,a photo of two,aGrass\n" for p in images
    )
    short = tmp_path / "short.csv"
    short.write_text(good + f"{images[0]}\n")
    with pytest.raises(UsageError, match=rf"^line 5 of {short} has 1 of its 4 columns, no title"):
        captions.read_csv(short)
    open_quote = tmp_path / "quote.csv"  # the row runs on to the end of the file
    open_quote.write_text(good + 'a.jpg,b\n"unterminated,quote\n,,,\n')
    with pytest.raises(UsageError, match=r"^lines 6-7 of .* are one row \(a quote left open\?\)"):
        captions.read_caption_rows(open_quote)  # as when CSVs are merged
    in_caption = tmp_path / "caption-quote.csv"  # it took the rows after it as its caption
    in_caption.write_text(
        good + f'{images[0]},"open quote,x\n{images[1]},b,c,d\n{images[2]},e,f,g\n'
    )
    with pytest.raises(
        UsageError, match=r"^lines 5-7 of .* are one row .* no title_multi_objects or label:"
    ):
        captions.read_csv(in_caption)
    two_lines = tmp_path / "two-lines.csv"  # a caption over two lines, quoted, no label: fine
    two_lines.write_text(good + f'{images[0]},"a river\nand a bridge"\n')
    assert captions.read_csv(two_lines)[-1][1:] == ("a river\nand a bridge", "")
    done = cli("train", "text-image", "--csv", short, *QUICK, "-w", tmp_path / "ws")
    assert done.exit_code == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"error: line 5 of {short} has 1 of its")


def test_rows_without_an_image_path_are_skipped_with_a_reason(tmp_path):
    """An empty filepath was read as the CSV's own folder ("Is a directory")."""
    from skysearch.encoders.training.text_image_data import check_images

    csv_file = tmp_path / "empty_path.csv"
    image = next(MINI.glob("aGrass/*.jpg"))
    csv_file.write_text(f"filepath,title\n,a photo\n{image},a photo\n")
    kept, skipped = check_images(captions.read_csv(csv_file))
    assert kept == [(str(image), "a photo", "")]
    assert skipped == [{"path": "", "reason": "no image path (its filepath column is empty)"}]


def _train(cli, *args):
    done = cli("train", "text-image", *args, *QUICK, "--json")
    assert done.exit_code == 0, done.stderr
    return done


def test_an_image_set_given_twice_is_trained_on_once(cli, tmp_path):
    """Every image was trained on once per mention, without a word."""
    pair = tmp_path / "pair"
    _copy_class("aGrass", pair / "aGrass", 4)
    _copy_class("gParking", pair / "gParking", 4)
    done = _train(cli, "--images", pair, "--images", f"{pair}/./", "-w", tmp_path / "ws")
    assert last_json(done)["train_images"] == 6  # 3 of 4 a class
    assert f"warning: image set given more than once, used once: {pair} (2 times)" in done.stderr


def test_files_left_out_of_an_image_set_are_reported(cli, tmp_path):
    """Files that are not images were only in a warning (the JSON's skipped list was empty);
    empty class folders and nested folders were ignored without a word; a validation set of
    one image reported a loss of 0.0, which reads as a perfect score."""
    odd = tmp_path / "odd"
    _copy_class("aGrass", odd / "aGrass", 10)  # 7 train, 1 val, 2 test
    _copy_class("gParking", odd / "gParking", 4)  # 3 train, 0 val, 1 test
    (odd / "aGrass" / "notes.jpg").write_text("not an image")
    (odd / "Empty").mkdir()
    _copy_class("eForest", odd / "gParking" / "nested", 2)
    done = _train(cli, "--images", odd, "-w", tmp_path / "ws")
    summary = last_json(done)
    assert summary["skipped"] == [
        {
            "path": str((odd / "aGrass" / "notes.jpg").resolve()),
            "reason": "not an image: cannot identify image file",
        }
    ]
    assert summary["train_images"] == 10  # what is trained on does not change
    assert (
        f"warning: ignored in {odd}: class folders without images: Empty; folders inside class "
        "folders (not read): gParking/nested"
    ) in done.stderr
    assert done.stderr.count("warning: ignored in") == 1
    assert summary["val_images"] == 1 and summary["history"][-1]["val_loss"] is None
    assert "no validation loss or top-1 (too few validation images)" in done.stderr


def test_eval_leaves_out_images_cut_short_and_goes_on(cli, tmp_path):
    """One JPEG cut short (its header is whole, so it is in the split) stopped the whole
    evaluation with 'cannot read image'."""
    trained = tmp_path / "trained"
    _copy_class("aGrass", trained / "aGrass", 4)
    _copy_class("gParking", trained / "gParking", 4)
    _train(cli, "--images", trained, "-w", tmp_path / "ws")
    other = tmp_path / "other"  # classes the model never saw: every image is scored
    forest = _copy_class("eForest", other / "eForest", 3)
    _copy_class("fResident", other / "fResident", 3)
    (other / "eForest" / "cut.jpg").write_bytes(forest[0].read_bytes()[:2000])
    evaluate = ("eval", "text-image", "--images", other, "--threads", "1", "-w", tmp_path / "ws")
    res = cli(*evaluate, "--json")
    assert res.exit_code == 0, res.stderr
    result = last_json(res)
    assert result["test_images"] == 6
    assert [Path(s["path"]).name for s in result["skipped"]] == ["cut.jpg"]
    assert "truncated" in result["skipped"][0]["reason"]
    assert "left out 1 file(s) that cannot be read: cut.jpg" in res.stderr
    for path in other.glob("fResident/*.jpg"):  # no image of a class left: nothing to pick from
        path.write_bytes(path.read_bytes()[:2000])
    res = cli(*evaluate)
    assert res.exit_code == 2 and "Traceback" not in res.stderr
    assert "error: fewer than two classes have images that can be read (unreadable: " in (
        res.stderr
    )
