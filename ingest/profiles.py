"""Source profiles: how to recognise, date and preprocess one satellite product.

A profile is data (``ingest/profiles/*.json``), not code: adding a satellite product means
adding a JSON file, either to the package or to a folder named by ``--profiles DIR`` or the
``SKYSEARCH_PROFILES`` environment variable (``os.pathsep``-separated folders). Fields:

- ``name``, ``satellite``: the profile name (``--source``) and the catalog's satellite.
  Names (these, channel and satellite names) become workspace folders: 1-64 letters, digits,
  ``.``, ``_`` or ``-``, starting with a letter or digit.
- ``pattern``: a regex matched against the file name, with named groups ``channel`` and time
  fields: ``year`` (4 digits) or ``yy`` (2 digits, 70-99 -> 19yy), ``month`` + ``day`` or ``doy``
  (day of year), ``hour``, ``minute``. Times in names are UTC.
- ``channels``: file-name channel code -> catalog channel name (codes not listed are skipped);
  or ``channel``: the one channel of a product whose names carry none.
- ``instrument`` (optional): the imager, e.g. ``ami`` (STAC ``instruments``).
- ``satellites`` (optional): with a ``satellite`` group in the pattern (one archive across
  satellite generations), name code -> catalog satellite (default: the code in lower case).
- ``crops``: rules ``{"width": W?, "height": H?, "box": [l, t, r, b]}``; the first rule whose
  size matches the image gives the crop box; box terms are integers or ``W``/``H`` plus or minus
  an integer. An image no rule matches is skipped as "wrong dimensions".
- ``resolution``: ``[width, height]`` of the stored working frame (grey uint8), at most
  ``MAX_SIDE`` (4096) on a side.
- ``cadence_minutes``: the product's native cadence (clip start times step by it).
- ``max_value`` (optional): full-scale count of 16-bit grey PNGs (default 65535), scaled to 255.
- ``event`` (optional): a named group ``event`` in the pattern (e.g. a typhoon id) makes each
  frame carry that event (catalog column, store payload, ``--event`` filter); frames of two
  events at one time are two frames.
- ``decoder`` (optional, default ``{"kind": "image"}``): how pixels are read, see
  ``skysearch.ingest.readers``: ``hdf5`` (``dataset``), ``netcdf`` / ``zarr`` (``variable``,
  ``time``: the time coordinate; one file may hold many frames), each with the physical
  ``range`` mapped to grey, ``invert`` (cold = bright), ``valid`` (values outside are physically
  impossible: flagged) and ``bad_frames`` (``skip``, ``keep`` or ``repair``).
- ``footprint`` (optional): the lat/lon box frames cover, ``{"bounds": [west, south, east,
  north]}`` (a fixed sector) or ``{"centred_on": "track", "pixel_km": KM}`` (storm-centred
  frames: the box follows the best track), see ``skysearch.ingest.footprints``; frames then
  carry ``west, south, east, north`` and ``--bbox`` filters them by it.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from skysearch.ingest.footprints import Footprint
from skysearch.ingest.profile_fields import (
    FOLDER_NAME,
    MAX_SIDE,
    box_inside,
    check_crops,
    crop_term,
    folder_name,
    interval,
    known_keys,
    optional_text,
    whole_number,
)

from skysearch.config import Workspace
from skysearch.errors import UsageError

PROFILES_ENV = "SKYSEARCH_PROFILES"
DECODER_KINDS = ("image", "hdf5", "netcdf", "zarr")
MULTI_FRAME_KINDS = ("netcdf", "zarr")  # may hold many frames along a time coordinate
BAD_FRAME_POLICIES = ("skip", "keep", "repair")


@dataclass(frozen=True)
class Decoder:
    """How a profile's files hold pixels (``decoder`` in the profile JSON).

    ``image``: PNG/GIF/JPEG read by Pillow (grey, or 16-bit scaled by ``max_value``).
    ``hdf5``/``netcdf``/``zarr``: a physical quantity (``variable``; ``dataset`` is accepted for
    hdf5), mapped linearly from ``range`` to grey 1..255 (``invert``: the low end is bright, as
    forecasters view infrared brightness temperature); grey 0 means no data (NaN, fill, or a
    physically impossible value outside ``valid``). ``time``: the time coordinate of a file
    holding many frames (else the time comes from the file name). ``bad_frames``: what happens
    to a frame with impossible values (see ``skysearch.ingest.quality``).
    """

    kind: str = "image"
    variable: str = ""
    time: str = ""
    range: tuple[float, float] = (0.0, 255.0)
    invert: bool = False
    valid: tuple[float, float] | None = None
    bad_frames: str = "repair"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decoder:
        if not isinstance(data, dict):
            raise ValueError(
                f"decoder must be an object of {', '.join(DECODER_KEYS)}, got {data!r}"
            )
        known_keys(data, DECODER_KEYS, "decoder")
        kind = str(data.get("kind", "image"))
        if kind not in DECODER_KINDS:
            raise ValueError(f"decoder kind {kind!r} is not one of {', '.join(DECODER_KINDS)}")
        policy = str(data.get("bad_frames", "repair"))
        if policy not in BAD_FRAME_POLICIES:
            raise ValueError(f"bad_frames {policy!r} is not one of {', '.join(BAD_FRAME_POLICIES)}")
        variable = optional_text(data, "variable", optional_text(data, "dataset"))
        if kind != "image" and not variable:
            raise ValueError(f"a {kind} decoder needs the variable (or dataset) to read")
        time = optional_text(data, "time")
        if time and kind not in MULTI_FRAME_KINDS:
            raise ValueError(
                f"decoder time names the time coordinate of a file of many frames: "
                f"{' and '.join(MULTI_FRAME_KINDS)} files only (a {kind} file is one frame, "
                "timed by its name)"
            )
        low, high = interval(data.get("range", (0.0, 255.0)), "decoder range")
        valid = data.get("valid")
        invert = data.get("invert", False)
        if not isinstance(invert, bool):
            raise ValueError(f"invert must be true or false, got {invert!r}")
        return cls(
            kind=kind,
            variable=variable,
            time=time,
            range=(low, high),
            invert=invert,
            valid=None if valid is None else interval(valid, "valid"),
            bad_frames=policy,
        )

    @property
    def multi_frame(self) -> bool:
        """One file holds many frames along the ``time`` coordinate."""
        return bool(self.time)


#: the origin of a packaged profile starts so (a user's is its file's path)
PACKAGED = "skysearch.ingest/profiles/"
#: keys every source profile has (the others have defaults)
REQUIRED_KEYS = ("name", "satellite", "pattern", "crops", "resolution", "cadence_minutes")
OPTIONAL_KEYS = (
    "channels", "channel", "description", "notes", "max_value", "decoder", "instrument",
    "satellites", "footprint",
)  # fmt: skip
DECODER_KEYS = ("kind", "variable", "dataset", "time", "range", "invert", "valid", "bad_frames")


@dataclass(frozen=True)
class NameMatch:
    """What a file name says: the frame's channel and UTC time under a profile (None when the
    file's own time coordinate gives the times), and its event (None for most products)."""

    profile: str
    satellite: str
    channel: str
    time: datetime | None
    event: str | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    satellite: str
    pattern: re.Pattern[str]
    channels: dict[str, str]
    crops: tuple[dict[str, Any], ...]
    resolution: tuple[int, int]  # (width, height)
    cadence_minutes: int
    description: str = ""
    max_value: int = 65535  # full-scale count of 16-bit grey images (scaled to 0..255)
    decoder: Decoder = field(default_factory=lambda: Decoder())
    channel: str = ""  # the one channel of a product whose names carry none
    instrument: str = ""  # the imager (STAC ``instruments``), when one instrument makes it all
    satellites: dict[str, str] = field(default_factory=dict)  # name's satellite -> catalog's
    footprint: Footprint | None = None  # the lat/lon box its frames cover, where known
    origin: str = field(default="", compare=False)  # the file it was read from ("" or packaged)
    text: str = field(default="", compare=False, repr=False)  # that file's text, as read

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "") -> Profile:
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a JSON object is needed, not {type(data).__name__}")
            missing = [key for key in REQUIRED_KEYS if key not in data]
            if missing:
                raise ValueError(
                    f"the key {missing[0]!r} is missing (required: {', '.join(REQUIRED_KEYS)})"
                )
            known_keys(data, REQUIRED_KEYS + OPTIONAL_KEYS, "profile")
            for key in ("channels", "satellites"):
                if not isinstance(data.get(key, {}), dict):
                    raise ValueError(f"{key} must be an object of name code -> name")
            if not isinstance(data["pattern"], str):
                raise ValueError(f"pattern must be a string, got {data['pattern']!r}")
            pattern = re.compile(data["pattern"])
            size = data["resolution"]
            if not isinstance(size, list) or len(size) != 2:
                raise ValueError(f"resolution must be [width, height], got {size!r}")
            width, height = (whole_number(v, "resolution") for v in size)
            if max(width, height) > MAX_SIDE:
                raise ValueError(f"resolution {size!r} is larger than {MAX_SIDE} on a side")
            channels = data.get("channels", {})
            profile = cls(
                name=folder_name(data["name"], "name", reserved=("auto",)),
                satellite=folder_name(data["satellite"], "satellite"),
                pattern=pattern,
                channels={str(k): folder_name(v, "channel") for k, v in channels.items()},
                crops=check_crops(data["crops"], (width, height)),
                resolution=(width, height),
                cadence_minutes=whole_number(data["cadence_minutes"], "cadence_minutes"),
                description=str(data.get("description", "")),
                max_value=whole_number(data.get("max_value", 65535), "max_value"),
                decoder=Decoder.from_dict(data.get("decoder") or {}),
                channel=folder_name(data["channel"], "channel") if "channel" in data else "",
                instrument=str(data.get("instrument", "")),
                satellites={
                    str(k): folder_name(v, "satellite")
                    for k, v in data.get("satellites", {}).items()
                },
                footprint=Footprint.from_dict(data["footprint"]) if "footprint" in data else None,
                origin=origin,
            )
        except re.error as exc:
            raise UsageError(
                f"source profile {origin or data!r} is invalid: pattern is not a regular "
                f"expression ({exc})"
            ) from None
        except (TypeError, ValueError) as exc:
            raise UsageError(f"source profile {origin or data!r} is invalid: {exc}") from None
        except (KeyError, AttributeError, IndexError) as exc:  # a list where an object belongs
            raise UsageError(
                f"source profile {origin or data!r} is invalid: a value has the wrong shape "
                f"({type(exc).__name__}: {exc})"
            ) from None
        times = {"year", "yy"} & set(pattern.groupindex)
        if not times and not profile.decoder.time:
            raise UsageError(
                f"source profile {origin}: the pattern has no (?P<year>...) or (?P<yy>...) group "
                "and the decoder names no time coordinate: frames would have no time"
            )
        if "channel" not in pattern.groupindex and not profile.channel:
            raise UsageError(
                f"source profile {origin}: the pattern needs a (?P<channel>...) group, or the "
                'profile a fixed "channel"'
            )
        if "channel" in pattern.groupindex and not profile.channels:
            raise UsageError(
                f'source profile {origin}: the pattern has a channel group and no "channels" '
                "maps its codes to channel names: every file would be skipped"
            )
        dated = {"doy"} <= set(pattern.groupindex) or {"month", "day"} <= set(pattern.groupindex)
        if times and not dated and not profile.decoder.multi_frame:  # else: the file's times
            raise UsageError(
                f"source profile {origin}: the pattern has a year and no (?P<month>...) and "
                "(?P<day>...) or (?P<doy>...) groups: frames would have no date"
            )
        return profile

    def match(self, filename: str) -> NameMatch | None:
        """Channel and time from a file name, or None when the name is not this product's."""
        found = self.pattern.match(filename)
        if not found or has_control_character(filename):  # "$" matches before a final "\n"
            return None
        groups = found.groupdict()
        channel = self.channels.get(groups["channel"]) if "channel" in groups else self.channel
        if not channel:
            return None
        satellite = self.name_satellite(groups)
        if not FOLDER_NAME.fullmatch(satellite):  # a name's text becomes a folder name
            return None
        time = None
        if not self.decoder.multi_frame:
            try:
                time = _time_from_groups(groups)
            except (KeyError, ValueError, TypeError):
                return None
        event = groups.get("event") or None
        return NameMatch(self.name, satellite, channel, time, event)

    def name_satellite(self, groups: dict[str, str | None]) -> str:
        """The catalog satellite of a matched name: its ``satellite`` group mapped (or in
        lower case), else the profile's."""
        code = groups.get("satellite")
        return self.satellites.get(code, code.lower()) if code else self.satellite

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """The crop box for an image of this size, or None when no rule fits (wrong size)."""
        for rule in self.crops:
            if rule.get("width", width) == width and rule.get("height", height) == height:
                left, top, right, bottom = (crop_term(t, width, height) for t in rule["box"])
                box = (left, top, right, bottom)
                return box if box_inside(box, width, height) else None
        return None

    def expected_sizes(self) -> str:
        sizes = [f"{r.get('width', '*')}x{r.get('height', '*')}" for r in self.crops]
        return " or ".join(sizes)


def _time_from_groups(groups: dict[str, str | None]) -> datetime:
    if groups.get("year"):
        year = int(groups["year"])
    else:
        yy = int(groups["yy"])
        year = 1900 + yy if yy >= 70 else 2000 + yy
    hour, minute = int(groups.get("hour") or 0), int(groups.get("minute") or 0)
    if not (0 <= hour <= 23 and 0 <= minute <= 59):
        raise ValueError(f"time of day {hour:02d}:{minute:02d}")
    if groups.get("doy"):
        base = datetime(year, 1, 1, tzinfo=timezone.utc)
        doy = int(groups["doy"])
        if not 1 <= doy <= (366 if (base.replace(year=year + 1) - base).days == 366 else 365):
            raise ValueError(f"day of year {doy}")
        return base + timedelta(days=doy - 1, hours=hour, minutes=minute)
    return datetime(
        year, int(groups["month"]), int(groups["day"]), hour, minute, tzinfo=timezone.utc
    )


def _profile_dirs(extra: list[Path] | None) -> list[Path]:
    """The user's profile folders: ``extra``, then ``$SKYSEARCH_PROFILES``."""
    dirs = list(extra or [])
    env = os.environ.get(PROFILES_ENV, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    return dirs


@lru_cache(maxsize=8)
def _load(kept: Path | None, dirs: tuple[Path, ...], _stamp: object = None) -> dict[str, Profile]:
    """Packaged profiles, then a workspace's ``kept`` copies, then the user's ``dirs`` (each
    overriding a name before it); two of the user's files naming one profile with different
    contents are an error (which won was an accident). ``_stamp``: the files' names and times
    (:func:`_stamp`), so that the cache never answers with a profile edited since."""
    profiles: dict[str, Profile] = {}
    sources: list[tuple[str, str]] = []
    packaged = resources.files("skysearch.ingest") / "profiles"
    for entry in sorted(packaged.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            sources.append((f"{PACKAGED}{entry.name}", entry.read_text()))
    for folder in dirs if kept is None else (kept, *dirs):
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            raise UsageError(
                f"profiles folder {folder} ({{profiles}}, SKYSEARCH_PROFILES) {what}",
                params=["profiles"],
            )
        for path in sorted(folder.glob("*.json")):
            try:
                sources.append((str(path), path.read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read source profile {path}: {exc}") from None
    given: dict[str, tuple[str, str]] = {}  # profile name -> the user's file naming it, text
    for origin, text in sources:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"source profile {origin} is not valid JSON: {exc}") from None
        profile = replace(Profile.from_dict(data, origin), text=text)
        if not origin.startswith(PACKAGED) and (kept is None or Path(origin).parent != kept):
            first, first_text = given.setdefault(profile.name, (origin, text))
            if first != origin and first_text != text:
                raise UsageError(
                    f"source profiles {first} and {origin} are both named {profile.name!r}: "
                    "rename one (or pass one folder)"
                )
        profiles[profile.name] = profile  # a user's folder may override a packaged profile
    return profiles


def load_profiles(
    extra_dirs: list[Path] | None = None, workspace: Workspace | None = None
) -> dict[str, Profile]:
    """All profiles by name: packaged ones, then the copies ``workspace`` keeps of the user
    profiles its frames were ingested with, then ``extra_dirs``, then ``$SKYSEARCH_PROFILES``."""
    kept = workspace.profiles_dir.resolve() if workspace is not None else None
    dirs = tuple(dict.fromkeys(Path(d).resolve() for d in _profile_dirs(extra_dirs)))
    kept = kept if kept is not None and kept.is_dir() else None
    return _load(kept, dirs, _stamp((kept, *dirs)))


def _stamp(folders: tuple[Path | None, ...]) -> tuple[tuple[str, int], ...]:
    """The profile files' paths and times: a profile edited or added meanwhile is read again
    (a running service, or a second ingest in one process)."""
    found = (p for f in folders if f is not None and f.is_dir() for p in sorted(f.glob("*.json")))
    return tuple((str(p), _mtime(p)) for p in found)


def _mtime(path: Path) -> int:
    """``path``'s modification time; -1 where it cannot be read (a dangling link): reading
    the file then says why, in one line."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def select_profiles(
    source: str, extra_dirs: list[Path] | None = None, workspace: Workspace | None = None
) -> list[Profile]:
    """The profiles ``source`` names: one profile, or all of them for ``auto``, the user's
    first (``$SKYSEARCH_PROFILES``, ``extra_dirs``, the workspace's copies, then the packaged
    ones): a name both a user's and a packaged profile recognise is the user's product."""
    profiles = load_profiles(extra_dirs, workspace)
    if source == "auto":
        return list(profiles.values())[::-1]  # loaded packaged first
    if source not in profiles:
        known = ", ".join(sorted(profiles))
        raise UsageError(
            f"unknown {{source}} {source!r}: use auto or one of {known}", params=["source"]
        )
    return [profiles[source]]


def match_name(filename: str, profiles: list[Profile]) -> tuple[Profile, NameMatch] | None:
    """The first profile whose pattern recognises ``filename``."""
    for profile in profiles:
        found = profile.match(filename)
        if found is not None:
            return profile, found
    return None


def has_control_character(name: str) -> bool:
    """Whether ``name`` holds a control character (a line break, a tab...); other characters
    that are not printable (a no-break space, macOS's narrow one before AM/PM) are fine."""
    return any(unicodedata.category(c) == "Cc" for c in name)


def unmatched_reason(filename: str, profiles: list[Profile]) -> str:
    """Why no profile recognises ``filename``: a name a pattern matches but whose time is
    impossible (month 13, hour 25, day of year 367) says so."""
    if filename.lower().endswith(".zip"):  # only a zip's member gets here: walks open the rest
        return "a zip archive inside a zip archive is not opened: unpack the outer one"
    if has_control_character(filename):
        return f"the file name {filename!r} holds a control character (a line break?): rename it"
    for profile in profiles:
        found = profile.pattern.match(filename)
        if found is None or profile.decoder.multi_frame:
            continue
        groups = found.groupdict()
        sat = profile.name_satellite(groups)
        if not FOLDER_NAME.fullmatch(sat):
            return (
                f"file name has the pattern of source profile {profile.name} but satellite "
                f"{sat!r}, which cannot name a folder (letters, digits, '.', '_', '-')"
            )
        code = groups.get("channel")
        if code is not None and code not in profile.channels:
            return (
                f"file name has the pattern of source profile {profile.name} but channel code "
                f"{code}, which its channels do not map ({', '.join(profile.channels)})"
            )
        try:
            _time_from_groups(groups)
        except (KeyError, ValueError, TypeError) as exc:
            name = profile.name
            return f"file name has the pattern of source profile {name} but no valid time ({exc})"
    for profile in profiles:
        if re.match(profile.pattern.pattern, filename, profile.pattern.flags | re.IGNORECASE):
            return (
                f"file name has the pattern of source profile {profile.name} only with its "
                "letters in another case (name patterns are case-sensitive): rename the file "
                "as the profile's files are named"
            )
    return f"file name matches no source profile ({', '.join(p.name for p in profiles)})"
