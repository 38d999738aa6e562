"""Image files a user names (``predict --out``, ``--contact-sheet``): one rule, the formats
this Pillow can write an image of that mode in, from the suffix in any case; any other name is
one ``UsageError`` that lists the accepted suffixes, and nothing is written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skysearch.retrieval.search.contact_sheet import write_contact_sheet
from skysearch.retrieval.search.results import SearchResult

from skysearch.atomic import image_suffixes, save_image
from skysearch.config import Workspace
from skysearch.errors import UsageError


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize(
    ("name", "expected"),
    [("s.png", "PNG"), ("s.PNG", "PNG"), ("s.jpg", "JPEG"), ("s.webp", "WEBP"), ("s.tif", "TIFF")],
)
def test_a_writable_suffix_writes_that_format(tmp_path, mode, name, expected):
    path = tmp_path / "out" / name
    save_image(Image.new(mode, (40, 10), 90), path, "prediction strip")
    with Image.open(path) as image:
        assert (image.format, image.size) == (expected, (40, 10))


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("s.psd", "L"),  # Pillow reads these but has no writer: was a KeyError traceback
        ("s.fits", "L"),
        ("s.h5", "RGB"),  # a placeholder that writes nothing without a plugin
        ("s.xbm", "L"),  # 1-bit images only
        ("s.ico", "L"),  # shrunk to at most 256 px
        ("s.pbm", "L"),  # written as a grey pixmap (P5), not the bitmap the name says
        ("s.txt", "RGB"),
        ("strip", "L"),
    ],
)
def test_another_suffix_is_refused_naming_the_accepted_ones(tmp_path, name, mode):
    path = tmp_path / name
    with pytest.raises(UsageError) as caught:
        save_image(Image.new(mode, (40, 10)), path, "prediction strip")
    message = str(caught.value)
    assert message.startswith(f"cannot write prediction strip {path}: give a file name ending")
    assert "in .png, .jpg, .jpeg, .webp, .tif, .tiff, .gif, .bmp, " in message
    assert f"{', '.join(image_suffixes(mode))}" in message and ".im," not in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["wide.gif", "wide.tga", "wide.jpg"])
def test_an_image_too_wide_for_its_format_is_one_error_naming_one_that_holds_it(tmp_path, name):
    """A contact sheet of a long clip is wider than GIF, TGA or JPEG can say (an
    OverflowError traceback for GIF and TGA)."""
    with pytest.raises(UsageError, match="a .png holds any size"):
        save_image(Image.new("L", (70_000, 2)), tmp_path / name, "contact sheet")
    assert list(tmp_path.iterdir()) == []


def test_a_contact_sheet_takes_the_same_names_and_refuses_before_rendering(tmp_path):
    result = SearchResult(
        query={"kind": "frame", "mode": "cosine", "channels": ["ir"], "satellite": "goes-east"},
        results=[],
        filters={},
        timing_ms={},
        query_frames=np.full((1, 1, 20, 30), 128, np.uint8),
    )
    ws = Workspace(tmp_path / "ws")
    sheet = write_contact_sheet(ws, result, tmp_path / "sheet.JPG", tile_width=60)
    with Image.open(sheet["path"]) as image:
        assert (image.format, image.size) == ("JPEG", (sheet["width"], sheet["height"]))
    with pytest.raises(UsageError, match="give a file name ending in .png, .jpg"):
        write_contact_sheet(ws, result, tmp_path / "sheet.psd")
    assert not (tmp_path / "sheet.psd").exists()
