"""Checks of a source profile's fields (``skysearch.ingest.profiles``): whole numbers,
intervals, known keys, crop rules and their box terms, names that become folders."""

from __future__ import annotations

import math
import re
from typing import Any

from skysearch.errors import UsageError

_TERM = re.compile(r"^\s*(?:(?P<var>[WH])\s*(?:(?P<sign>[+-])\s*(?P<off>\d+))?|(?P<num>\d+))\s*$")


def crop_term(text: str | int, width: int, height: int) -> int:
    """A crop box term (an integer, ``W`` or ``H`` plus or minus one) for an image's size."""
    match = _TERM.match(str(text))
    if not match:
        raise UsageError(f"crop term {text!r} not understood: use an integer, W, H, W-5, H+10")
    if match.group("num") is not None:
        return int(match.group("num"))
    base = width if match.group("var") == "W" else height
    off = int(match.group("off") or 0)
    return base - off if match.group("sign") == "-" else base + off


def whole_number(value: Any, key: str, minimum: int = 1) -> int:
    """``value`` as an int of at least ``minimum``; a ValueError naming ``key`` if not."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not number.is_integer():
        raise ValueError(f"{key} must be a whole number, got {value!r}")
    if number < minimum:
        raise ValueError(f"{key} must be at least {minimum}, got {value!r}")
    return int(number)


def interval(value: Any, key: str) -> tuple[float, float]:
    """``[low, high]`` as finite floats with low < high; a ValueError naming ``key`` if not."""
    pair = isinstance(value, list | tuple) and len(value) == 2
    if not pair or not all(_finite(v) for v in value):
        raise ValueError(f"{key} must be [low, high] of two finite numbers, got {value!r}")
    low, high = (float(v) for v in value)
    if not low < high:
        raise ValueError(f"{key} [{low}, {high}] is empty")
    return low, high


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def optional_text(data: dict[str, Any], key: str, default: str = "") -> str:
    """``data[key]`` when it is a string (``default`` when absent); a ValueError naming
    ``key`` for a null or a number (which would be read as the name 'None' or '5')."""
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, got {value!r}")
    return value


def known_keys(data: dict[str, Any], known: tuple[str, ...], what: str) -> None:
    """A misspelt key would be ignored and its default used: refuse keys the profile format
    does not have."""
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} key {unknown[0]!r} (known: {', '.join(sorted(known))})")


def box_inside(box: tuple[int, ...], width: int, height: int) -> bool:
    """Whether a crop box (left, top, right, bottom) is a non-empty part of the image."""
    left, top, right, bottom = box
    return 0 <= left < right <= width and 0 <= top < bottom <= height


def check_crops(crops: Any, resolution: tuple[int, int]) -> tuple[dict[str, Any], ...]:
    """Crop rules, each with a ``box`` of four terms that read, inside the image when the rule
    names its size (checked here, not first when a file is decoded)."""
    if not isinstance(crops, list) or not crops:
        raise ValueError("crops must be a non-empty list of {width, height, box} rules")
    rules = []
    for given in crops:
        if not isinstance(given, dict):
            raise ValueError(f"a crop rule is an object {{width, height, box}}, got {given!r}")
        known_keys(given, ("width", "height", "box"), "crop rule")
        rule = {k: whole_number(v, f"crop {k}") if k != "box" else v for k, v in given.items()}
        rules.append(rule)
        box = rule.get("box")
        if not isinstance(box, list) or len(box) != 4:
            raise ValueError(f"a crop box is [left, top, right, bottom], got {box!r}")
        width, height = rule.get("width", resolution[0]), rule.get("height", resolution[1])
        try:
            left, top, right, bottom = (crop_term(t, width, height) for t in box)
        except UsageError as exc:
            raise ValueError(exc.message) from None
        fits = box_inside((left, top, right, bottom), width, height)
        if "width" in rule and "height" in rule and not fits:
            raise ValueError(f"crop box {box} is not inside a {width}x{height} image")
    return tuple(rules)


#: satellite, channel and profile names become folder names and catalog partition values
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: the largest side of a working frame (a frame of 4096 x 4096 is 16 MB; the packaged
#: products' are under 400 pixels)
MAX_SIDE = 4096


def folder_name(value: Any, key: str, reserved: tuple[str, ...] = ()) -> str:
    """``value`` when it can name a folder and a catalog partition, else a ValueError."""
    if value in reserved:
        raise ValueError(f"{key} {value!r} is reserved")
    if not isinstance(value, str) or not FOLDER_NAME.fullmatch(value):
        raise ValueError(
            f"{key} {value!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit (it names folders in the workspace)"
        )
    return value
