"""Every CLI command with broken arguments and a broken environment: one ``error:`` line (or
click's usage error), exit code 2 (1 where a command documents it), never a traceback.

The matrix walks the typer app's command tree: a new command fails
``test_every_command_has_broken_cases`` until it gets its cases here. Each case names the text
its error must contain, so a case that falls through to some other error fails too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA

GOES = SAMPLE_DATA / "goes-irma-2017"
SCENES = SAMPLE_DATA / "rsscn7-mini"
AT = "2017-09-07T00:45Z"
LATER = "2017-09-07T03:45Z"
INTEGRITY = "integrity slice: damaged frame store / sketch files"
ENV_KEYS = ("SKYSEARCH_WORKSPACE", "QDRANT_URL", "QDRANT_API_KEY", "SKYSEARCH_API_KEY")
UNREACHABLE = "http://127.0.0.1:1"
USAGE = "Invalid value for"  # click's usage error (exit code 2)


@dataclass(frozen=True)
class Case:
    """``args`` and ``env`` values may hold ``{name}`` placeholders (see ``world``)."""

    args: tuple[str, ...]
    expect: str  # must appear in stderr
    code: int = 2
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "{clean}"  # folder the command runs in (a skysearch.toml there is read)
    xfail: str | None = None


def c(*args: str, expect: str, **kw) -> Case:
    return Case(tuple(args), expect, **kw)


# The arguments that get each command past parsing, for the cases every command shares.
BASE: dict[str, tuple[str, ...]] = {
    "demo": (),
    "doctor": (),
    "repair": (),
    "ingest": ("{goes}",),
    "ingest-track": ("{track}",),
    "clips": (),
    "predict": (AT,),
    "serve": (),
    "similarity": (AT, LATER),
    "train frames": (),
    "train clips": (),
    "train predictor": (),
    "train text-image": ("--images", "{scenes}"),
    "eval analogs": (),
    "eval clips": (),
    "eval frames": (),
    "eval augment": (),
    "eval text-image": ("--images", "{scenes}"),
    "index clips": (),
    "index frames": (),
    "index scenes": ("{scenes}",),
    "search clip": ("--at", AT),
    "search frame": ("--at", AT),
    "search text": ("a river",),
    "search image": ("{file}",),
    "store info": (),
    "store export": ("--out", "{tmp}/out.jsonl"),
    "store import": ("{bin}",),
    "store optimize": (),
    "catalog export": ("--stac", "{tmp}/stac"),
    "update": ("{goes}",),
}


def shared_cases(command: str) -> list[Case]:
    """Broken workspace, environment and skysearch.toml: the same for every command."""
    base = (*command.split(), *BASE[command])
    return [
        c(*base, "-w", "{file}", expect="is a file, not a folder"),
        c(*base, expect="is a file, not a folder", env={"SKYSEARCH_WORKSPACE": "{file}"}),
        c(*base, expect="skysearch.toml: 'utf-8' codec can't decode", cwd="{toml_binary}"),
        c(*base, expect="workspace must be a string", cwd="{toml_wrong_type}"),
    ]


W = ("-w", "{ws}")
CASES: dict[str, list[Case]] = {
    "demo": [
        c("demo", "--sample", "{missing}", "-w", "{tmp}/demo", expect="demo sample"),
        c("demo", "--frame-epochs", "0", expect=USAGE),
        c("demo", "--text-epochs", "0", expect=USAGE),
        c("demo", "--threads", "-1", expect=USAGE),
        c("demo", "-w", "{ws_demo_state}", expect="state.json is corrupt"),
    ],
    "doctor": [
        c("doctor", "-w", "{ws_registry_entry}", expect="not a model record", code=1),
        c("doctor", "-w", "{ws_meta_binary}", expect="meta.json", code=1),
        c("doctor", "-w", "{loop}", expect="cannot use workspace"),  # was a traceback
        c("doctor", "-w", "{file}/ws", expect="a-file is a file, not a folder"),
    ],
    "repair": [
        c("repair", "-w", "{missing}", expect="does not exist"),
        c("repair", "--profiles", "{missing}", *W, expect="does not exist"),
    ],
    "ingest": [
        c("ingest", "{goes}", "--bad-frames", "drop", *W, expect="--bad-frames must be one of"),
        c("ingest", "{missing}", *W, expect="path not found"),
        c("ingest", "{goes}", "--source", "nope", "-w", "{tmp}/w", expect="unknown --source"),
        c("ingest", "{goes}", "--profiles", "{missing}", *W, expect="does not exist"),
        c("ingest", "{goes}", "--profiles", "{bin}", *W, expect="is a file, not a folder"),
        c("ingest", "{goes}", "--workers", "-1", *W, expect=USAGE),
        c("ingest", "{goes}", "--engine", "spark", *W, expect=USAGE),
        c("ingest", "{goes}", "--address", "ray://h:10001", *W, expect="it needs --engine ray"),
        c("ingest", "{goes}", "--engine", "ray", "--address", "h:1", *W, expect="ray://HOST:PORT"),
        c("ingest", "{goes}", "--engine", "ray", "--address", "ray://h:x", *W, expect="not a Ray"),
        c("ingest", "{goes}", "-w", "{file}/sub", expect="a-file is a file, not a folder"),
        c("ingest", "{goes}", "-w", "{ws_meta_binary}", expect="meta.json"),
        # sketches are derived data: an unreadable sketch meta.json is rebuilt, not an error
        c("ingest", "{goes}", "-w", "{ws_sketch_rebuilt}", expect="60 images sketched", code=0),
    ],
    "ingest-track": [
        c("ingest-track", "{missing}", *W, expect="best-track path not found"),
        c("ingest-track", "{tmp}", *W, expect="no best-track files (*.tsv) in"),
        c("ingest-track", "{track}", *W, expect="unknown event '198702' (198702.tsv)"),
        c("ingest-track", "{track}", "-w", "{missing}", expect="unknown event '198702'"),
        c("ingest-track", "{bin}", *W, expect="unknown event 'binary'"),
    ],
    "clips": [
        c("clips", "-w", "{missing}", expect="no frames in the catalog"),
        c("clips", "--length", "0", *W, expect=USAGE),
        c("clips", "--length", "99999999999", *W, expect=USAGE),
        c("clips", "--gap", "-1", *W, expect=USAGE),
        c("clips", "--tolerance", "-1", *W, expect=USAGE),
        c(
            *("clips", "--gap", "60", "--tolerance", "60", *W),
            expect="--tolerance must be >= 0 and smaller than --gap",
        ),
        c("clips", "--channels", "nope", *W, expect="no satellite has all channels nope"),
        c("clips", "--channels", "", *W, expect="--channels names nothing"),  # not every channel
        c("clips", "--channels", "ir,ir", *W, expect="--channels ir,ir names a channel twice"),
        c("clips", "--satellite", "a,b", *W, expect="--satellite takes one name, got a, b"),
    ],
    "predict": [
        c("predict", AT, *W, expect="no predictor model"),
        c("predict", "not-a-time", "-w", "{ws_registry_binary}", expect="is unreadable"),
    ],
    "serve": [
        c("serve", "-w", "{missing}", expect="does not exist"),
        c("serve", "--port", "0", *W, expect=USAGE),
        c("serve", "--port", "70000", *W, expect=USAGE),
        c("serve", "--torch-threads", "-1", *W, expect=USAGE),
        c("serve", "--host", "0.0.0.0", *W, expect="reachable from other machines"),
        c("serve", "--port", "{busy_port}", *W, expect="cannot listen on 127.0.0.1"),
        c(
            "serve",
            "--host",
            "no-such-host.invalid",
            *W,
            expect="cannot listen on no-such-host.invalid",
            env={"SKYSEARCH_API_KEY": "0123456789abcdef-key"},
        ),
        c("serve", "--write-openapi", "{missing}/openapi.json", expect="cannot write"),
        c("serve", "--write-openapi", "{tmp}", expect="cannot write"),
    ],
    "similarity": [
        c("similarity", "a", "b", *W, expect="no such folder, and not a clip id"),
        c("similarity", "{missing}", "{missing}", *W, expect="folder not found"),
        c("similarity", "{bin}", "{bin}", *W, expect="is a file"),
        c("similarity", AT, LATER, "--grid", "0", *W, expect="must be positive"),
        c("similarity", AT, LATER, "--mode", "nope", *W, expect="unknown similarity mode"),
        c("similarity", AT, LATER, "--channel", " , ", *W, expect="--channel names nothing"),
        c("similarity", "99999-09-07", LATER, *W, expect="cannot read time"),
        c("similarity", AT, "2099-01-01", *W, expect="no clip starts at"),
        c("similarity", AT, LATER, "-w", "{ws_sketch_binary}", expect="meta"),
    ],
    "train frames": [
        c("train", "frames", "--lr", "-1", *W, expect=USAGE),
        c("train", "frames", "--length", "0", *W, expect=USAGE),  # said "run skysearch clips"
        c("train", "frames", "--lr", "nan", *W, expect=USAGE),
        c("train", "frames", "--holdout", "2", *W, expect=USAGE),
        c("train", "frames", "--holdout", "0", *W, expect=USAGE),  # an open range
        c("train", "frames", "--validation", "-1", *W, expect=USAGE),
        c("train", "frames", "--epochs", "0", *W, expect="--epochs must be >= 1, got 0"),
        c(
            "train",
            "frames",
            "--objective",
            "triplet",
            "--batch-size",
            "0",
            *W,
            expect="--batch-size must be >= 2, got 0",
        ),
        c("train", "frames", "--threads", "-1", *W, expect=USAGE),
        c("train", "frames", "--backbone", "nope", *W, expect="unknown frame backbone"),
        c("train", "frames", "--objective", "nope", *W, expect="unknown objective"),
        c("train", "frames", "-w", "{missing}", expect="no clips in the clip catalog"),
        c("train", "frames", "--satellites", "goes-east,nope", *W, expect="no clips of nope"),
        c("train", "frames", "--length", "99", *W, expect="no clips of 99x*m in the clip"),
        c("train", "frames", "--channels", "IR", *W, expect="(it has goes-east ir "),
        c("train", "frames", "--validation", "1", *W, expect=USAGE),
        c("train", "frames", "--satellites", "goes-east,goes-east", *W, expect="twice"),
        c("train", "frames", "--satellites", ",", *W, expect="--satellites names nothing"),
        c("train", "frames", "--channels", "", *W, expect="--channels names nothing"),
        c("train", "frames", "--satellite", " ", *W, expect="--satellite names nothing"),
        c(
            "train",
            "frames",
            *("--satellite", "goes-east", "--satellites", "goes-east"),
            *W,
            expect="give --satellite or --satellites, not both",
        ),
    ],
    "train clips": [
        c("train", "clips", *W, expect="no frame model"),
        c("train", "clips", "--length", "0", *W, expect=USAGE),
        c("train", "clips", "--lr", "inf", *W, expect=USAGE),
        c("train", "clips", "--threads", "999", *W, expect=USAGE),
        c("train", "clips", "--frame-model", "nope", *W, expect="no frame model 'nope' in the"),
        c("train", "clips", "-w", "{ws_registry_entry}", expect="is not a model record"),
    ],
    "train predictor": [
        c("train", "predictor", "--holdout", "5", *W, expect=USAGE),
        c("train", "predictor", "--validation", "1", *W, expect=USAGE),
        c("train", "predictor", "--lr", "0", *W, expect=USAGE),
        c("train", "predictor", "--epochs", "0", *W, expect=USAGE),
        c("train", "predictor", "--lambda-g", "5", *W, expect="--lambda-g applies only with --adv"),
        c("train", "predictor", "--adversarial", "--lambda-g", "-1", *W, expect="--lambda-g must"),
        c("train", "predictor", "--adversarial", "--ortho-beta", "inf", *W, expect="finite"),
        c(
            "train",
            "predictor",
            "--adversarial",
            "--lambda-mse",
            "0",
            "--lambda-g",
            "0",
            "--lambda-d",
            "0",
            *W,
            expect="--lambda-mse, --lambda-g and --lambda-d are all 0",
        ),
        c("train", "predictor", "-w", "{missing}", expect="in the clip catalog of"),
        c("train", "predictor", "-w", "{ws_meta_binary}", expect="meta.json"),
    ],
    "train text-image": [
        c("train", "text-image", *W, expect="pass --images DIR"),
        c("train", "text-image", "--model", "text-image-0d1", *W, expect="is a trained model id"),
        c(
            "train",
            "text-image",
            *("--images", "{scenes}", "--exclude-classes", ","),
            *W,
            expect="--exclude-classes names nothing",
        ),
        # the default towers' heads untrained, registered as the latest text-image model
        c("train", "text-image", "--epochs", "0", *W, expect="--epochs 0 registers a --pretr"),
        c("train", "text-image", "--images", "{missing}", *W, expect="not a folder of class"),
        c("train", "text-image", "--train-csv", "{missing}", *W, expect="not found"),
        c("train", "text-image", "--train-csv", "{tmp}", *W, expect="not found"),
        c("train", "text-image", "--train-csv", "{bin}", *W, expect="is not a UTF-8 CSV"),
        c("train", "text-image", "--images", "{scenes}", "--epochs", "-1", *W, expect=USAGE),
        c("train", "text-image", "--images", "{scenes}", "--batch-size", "0", *W, expect=USAGE),
        c("train", "text-image", "--images", "{scenes}", "--lr", "-1", *W, expect=USAGE),
        c("train", "text-image", "--images", "{scenes}", "--image-size", "0", *W, expect=USAGE),
    ],
    "eval analogs": [
        c("eval", "analogs", *W, expect="no clip model"),
        c("eval", "analogs", "--k", "0", *W, expect=USAGE),
        c("eval", "analogs", "--exclude-hours", "-1", *W, expect=USAGE),
        c("eval", "analogs", "--satellite", "nope", *W, expect="no clip model"),
        c("eval", "analogs", "-w", "{ws_config_binary}", expect="is corrupt"),
        c("eval", "analogs", "-w", "{ws_config_empty}", expect="has no frame, clip section"),
    ],
    "eval clips": [
        c("eval", "clips", *W, expect="no clip model"),
        c("eval", "clips", "--exclude-hours", "-1", *W, expect=USAGE),
        c("eval", "clips", "--satellite", "nope", *W, expect="no clip model"),
        c("eval", "clips", "-w", "{ws_config_binary}", expect="is corrupt"),
        c("eval", "clips", "-w", "{ws_config_empty}", expect="has no frame, clip section"),
    ],
    "eval frames": [
        c("eval", "frames", *W, expect="no frame model"),
        c("eval", "frames", "--exclude-hours", "-1", *W, expect=USAGE),
        c("eval", "frames", "--satellite", "nope", *W, expect="no frame model"),
        c("eval", "frames", "-w", "{ws_config_empty}", expect="has no frame section"),
    ],
    "eval augment": [
        c("eval", "augment", *W, expect="no predictor model"),
        c("eval", "augment", "--fusion", "nope", *W, expect="unknown fusion"),
        c("eval", "augment", "--beta", "2", *W, expect="--beta must be between 0 and 1"),
        c("eval", "augment", "--exclude-hours", "-1", *W, expect=USAGE),
    ],
    "eval text-image": [
        c("eval", "text-image", "--images", "{missing}", *W, expect="no text-image model"),
        c(
            "eval",
            "text-image",
            "--images",
            "{scenes}",
            "-w",
            "{ws_registry_binary}",
            expect="is unreadable",
        ),
    ],
    "index clips": [
        c("index", "clips", *W, expect="no clip model"),
        c("index", "clips", "--workers", "-1", *W, expect=USAGE),
        c("index", "clips", "--satellite", "nope", *W, expect="no clip model was trained on"),
        c("index", "clips", "--engine", "spark", *W, expect=USAGE),
        c("index", "clips", "--address", "ray://h:1", *W, expect="it needs --engine ray"),
        c("index", "clips", "-w", "{ws_config_empty}", expect="has no frame, clip section"),
    ],
    "index frames": [
        c("index", "frames", *W, expect="no frame model"),
        c("index", "frames", "--workers", "-1", *W, expect=USAGE),
        c("index", "frames", "--satellite", "x", *W, expect="no frame model was trained on"),
        c("index", "frames", "--engine", "ray", "--address", "h", *W, expect="ray://HOST:PORT"),
        c("index", "frames", "-w", "{ws_config_empty}", expect="has no frame section"),
    ],
    "index scenes": [
        c("index", "scenes", "{missing}", *W, expect="no text-image model"),
        c("index", "scenes", "{scenes}", "--threads", "-1", *W, expect=USAGE),
        c("index", "scenes", "{scenes}", "--workers", "0", *W, expect=USAGE),
        c("index", "scenes", "{scenes}", "--address", "ray://h:1", *W, expect="needs --engine ray"),
        c("index", "scenes", "{scenes}", "--engine", "ray", "--address", "h", *W, expect="ray://"),
    ],
    "search frame": [
        c("search", "frame", *W, expect="a time (--at), a frame id (--frame-id) or an image"),
        c("search", "frame", "--at", "not-a-time", *W, expect="cannot read time"),
        c("search", "frame", "--at", AT, "--k", "0", *W, expect="k must be in 1..10000"),
        c("search", "frame", "--at", AT, "--rerank", "-5", *W, expect="--rerank must be in"),
        c("search", "frame", "--at", AT, "--min-class", "9", *W, expect="--min-class must be a"),
        c("search", "clip", "--at", AT, "--max-pressure", "5", *W, expect="--max-pressure must"),
        c("search", "frame", "--file", "{missing}", *W, expect="no such file or folder"),
        c("search", "frame", "--frame-id", "x", "--tolerance", "5", *W, expect="query by --at"),
        c("search", "frame", "--at", AT, "--channel", "ir,wv", *W, expect="--channel takes one"),
    ],
    "search clip": [
        c(
            "search",
            "clip",
            *W,
            expect="a start time (--at), a clip id (--clip-id) or frames (--frames)",
        ),
        c("search", "clip", "--at", AT, "--exclude-window", "99999999d", *W, expect="too long"),
        c("search", "clip", "--at", AT, "--exclude-window", "9" * 400 + "d", *W, expect="too long"),
        c("search", "clip", "--at", AT, "--exclude-window", "abc", *W, expect="read duration"),
        c("search", "clip", "--at", "not-a-time", *W, expect="cannot read time"),
        c(
            "search",
            "clip",
            "--at",
            AT,
            "--between",
            "2020-01-01..2019-01-01",
            *W,
            expect="ends before",
        ),
        c(
            "search",
            "clip",
            "--at",
            AT,
            "--between",
            "2020-01-01/2019-01-01",
            *W,
            expect="START..END",
        ),
        c("search", "clip", "--at", AT, "--k", "0", *W, expect="k must be in 1..10000"),
        c("search", "clip", "--at", AT, "--k", "-1", *W, expect="k must be in 1..10000"),
        c("search", "clip", "--at", AT, "--k", "9" * 20, *W, expect="k must be in 1..10000"),
        c("search", "clip", "--at", AT, "--rerank", "-5", *W, expect="--rerank must be in"),
        c("search", "clip", "--at", AT, "--hours", "25", *W, expect="hours must be in 0..23"),
        c("search", "clip", "--at", AT, "--hours", " , ", *W, expect="--hours names nothing"),
        c("search", "clip", "--at", AT, "--day-of-year", "400-9", *W, expect="--day-of-year must"),
        c("search", "clip", "--at", AT, "--day-of-year", "9", *W, expect="use e.g. 152-243"),
        c("search", "clip", "--clip-id", "x", "--tolerance", "5", *W, expect="by --at or --fr"),
        c("search", "clip", "--at", AT, "--tolerance", "721", *W, expect=USAGE),
        c("search", "clip", "--at", AT, "--channel", "", *W, expect="--channel names nothing"),
        c("search", "clip", "--at", AT, "--satellite", "a,b", *W, expect="one name, got a, b"),
        c("search", "clip", "--at", AT, "--between", "", *W, expect="START..END"),
        c("search", "clip", "--at", AT, "--exclude-window", "", *W, expect="read duration"),
        c("search", "clip", "--at", AT, "-w", "{missing}", expect="no clip model trained yet"),
        c("search", "clip", "--frames", "{missing}", *W, expect="no such file or folder"),
        c("search", "clip", "--at", AT, "-w", "{ws_registry_binary}", expect="is unreadable"),
        c("search", "clip", "--at", AT, "-w", "{ws_registry_entry}", expect="not a model record"),
        c("search", "clip", "--at", AT, "-w", "{ws_config_binary}", expect="is corrupt"),
        c("search", "clip", "--at", AT, "-w", "{ws_config_empty}", expect="has no frame, clip"),
    ],
    "search text": [
        c("search", "text", "a river", *W, expect="no text-image model"),
        c("search", "text", "a river", "--k", "0", *W, expect="k must be in 1..10000"),
        c("search", "text", "a river", "--label", " ", *W, expect="--label names nothing"),
        c("search", "text", "river " * 100, *W, expect="599 characters; at most 500"),
        c("search", "text", "a river", "-w", "{ws_registry_binary}", expect="is unreadable"),
    ],
    "search image": [
        c("search", "image", "{missing}", *W, expect="not found"),
        c("search", "image", "{tmp}", *W, expect="is a folder: give image files"),
        c("search", "image", "{bin}", *W, expect="no text-image model"),
    ],
    "store info": [
        c("store", "info", "-w", "{missing}", expect="missing does not exist"),
        c("store", "info", "--qdrant-url", UNREACHABLE, *W, expect="cannot reach Qdrant"),
        c("store", "info", *W, expect="cannot reach Qdrant", env={"QDRANT_URL": UNREACHABLE}),
        c("store", "info", "-c", "nope", *W, expect="collection 'nope' does not exist"),
    ],
    "catalog export": [
        c("catalog", "export", "--stac", "{file}", *W, expect="--stac"),
        c("catalog", "export", "--stac", "{missing}/x", *W, expect="not an existing folder"),
        c("catalog", "export", "--stac", "{tmp}/stac", "-w", "{tmp}", expect="no frames in the"),
    ],
    "store export": [
        c("store", "export", "--out", "{tmp}/x.jsonl", "-w", "{missing}", expect="does not exist"),
        c("store", "export", "--out", "{tmp}/x.jsonl", "-w", "{tmp}", expect="nothing to export"),
        c("store", "export", "--out", "{missing}/x.jsonl", *W, expect="not an existing folder"),
        c("store", "export", "--out", "{file}/x.jsonl", *W, expect="not an existing folder"),
        c("store", "export", "--out", "{tmp}", *W, expect="it is a folder"),
        c("store", "export", "--out", "{tmp}/x.jsonl", "-c", "nope", *W, expect="does not exist"),
        c(
            "store",
            "export",
            "--out",
            "{tmp}/x.jsonl",
            *W,
            expect="cannot reach Qdrant",
            env={"QDRANT_URL": UNREACHABLE},
        ),
    ],
    "store import": [
        c("store", "import", "{missing}", *W, expect="does not exist"),
        c("store", "import", "{tmp}", *W, expect="is a folder, not an export file"),
        c("store", "import", "{bin}", *W, expect=":1 is not UTF-8 text"),
        c("store", "import", "{bin_gz}", *W, expect="cannot read it"),
        c("store", "import", "{truncated_gz}", *W, expect="it was cut short"),
        c("store", "import", "{plain_named_gz}", *W, expect=".gz:1: cannot read it"),
        c("store", "import", "{empty}", *W, expect="is empty"),
        c("store", "import", "{export_list}", *W, expect=":1 is not a JSON object"),
        c("store", "import", "{export_no_collection}", *W, expect=":1: header line needs"),
        c("store", "import", "{export_bad_base64}", *W, expect=":2: point line needs"),
        c("store", "import", "{export_no_id}", *W, expect=":2: point line needs"),
        c("store", "import", "{export_list_payload}", *W, expect=":2: point line needs"),
        c("store", "import", "{bin}", "--format", "parquet", *W, expect="not a readable Parquet"),
        c("store", "import", "{clean}", "--format", "parquet", *W, expect="holds no .parquet"),
        c("store", "import", "{missing}", "--format", "parquet", *W, expect="does not exist"),
        c(
            "store",
            "import",
            "{plain_parquet}",
            "--format",
            "parquet",
            *W,
            expect="not a SkySearch",
        ),
        c(
            "store",
            "import",
            "{points_c4}",
            "--format",
            "parquet",
            "-w",
            "{ws_store_c8}",
            expect="has dimension 4, but",
        ),
        c("store", "import", "{tmp}", "--format", "xml", *W, expect=USAGE),
    ],
    "store optimize": [
        c("store", "optimize", "-c", "nope", *W, expect="collection 'nope' does not exist"),
        c("store", "optimize", "--qdrant-url", UNREACHABLE, *W, expect="cannot reach Qdrant"),
    ],
    "update": [
        c("update", "{missing}", *W, expect="path not found"),
        c("update", "{goes}", "--clip-spec", "12", *W, expect="--clip-spec '12' is not a clip"),
        c("update", "{goes}", "--model", "clip-nope", *W, expect="no model 'clip-nope'"),
        c("update", "{goes}", "--threads", "100000", *W, expect=USAGE),  # was a crash
        c("update", "{goes}", "--index-after", "0", *W, expect=USAGE),
        c("update", "{goes}", "--source", "nope", *W, expect="unknown --source"),
        c("update", "{goes}", "--engine", "spark", *W, expect=USAGE),
        c("update", "{goes}", "--engine", "ray", "--address", "x", *W, expect="ray://HOST:PORT"),
        c("update", "{goes}", "-w", "{ws_registry_binary}", expect="is unreadable"),
        # the sample holds one bad file: loaded all but it, listed, exit code 1
        c("update", "{goes}", "-w", "{tmp}/update", expect="HUIR172502115.GIF", code=1),
        c("update", "{goes}", "-w", "{ws_config_binary}", expect="names no satellite", code=1),
        c("update", "{goes}", "-w", "{ws_model_damaged}", expect="FAILED", code=1),
    ],
}


def command_paths() -> list[str]:
    """Every command of the app, as ``"group command"`` strings, from its click tree."""
    import typer
    from skysearch.cli.app import _register, app

    _register()
    paths: list[str] = []

    def walk(group, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, [*prefix, name])
            else:
                paths.append(" ".join([*prefix, name]))

    walk(typer.main.get_command(app), [])
    return paths


def all_cases() -> list:
    params = []
    for command in sorted(CASES):
        for i, case in enumerate([*shared_cases(command), *CASES[command]]):
            marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if case.xfail else []
            params.append(pytest.param(case, id=f"{command}-{i}", marks=marks))
    return params


def test_every_command_has_broken_cases():
    commands = set(command_paths())
    assert commands == set(CASES), (
        f"commands without broken cases here: {sorted(commands - set(CASES))}; "
        f"cases for commands that are gone: {sorted(set(CASES) - commands)}"
    )
    assert set(BASE) == commands


# ---------------------------------------------------------------------------- the world
def _register_broken_models(root: Path, config: bytes) -> None:
    from skysearch.encoders.registry import register_model

    from skysearch.config import Workspace

    ws = Workspace(root)
    for kind in ("frame", "clip"):
        register_model(ws, f"{kind}-broken", kind, {}, {})
        folder = ws.models_dir / f"{kind}-broken"
        folder.mkdir()
        (folder / "config.json").write_bytes(config)


def _exports(folder: Path) -> dict[str, Path]:
    """Files that are not `store export` files, each in its own way."""
    import gzip
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq
    from skysearch.retrieval.store.parquet_format import write_points
    from skysearch.retrieval.store.transfer import FORMAT, encode_vector

    header = json.dumps({"format": FORMAT, "collection": "c", "vectors": {"v": 4}, "points": 1})
    point = {"id": str(uuid.uuid4()), "vectors": {"v": encode_vector([1, 0, 0, 0])}, "payload": {}}
    good = f"{header}\n{json.dumps(point)}\n"
    texts = {
        "export_list": "[1, 2]\n",
        "export_no_collection": json.dumps({"format": FORMAT}) + "\n",
        "export_bad_base64": f"{header}\n{json.dumps({**point, 'vectors': {'v': '!!'}})}\n",
        "export_no_id": f"{header}\n{json.dumps({'vectors': point['vectors']})}\n",
        "export_list_payload": f"{header}\n{json.dumps({**point, 'payload': [1]})}\n",
        "empty": "",
    }
    paths = {name: folder / f"{name}.jsonl" for name in texts}
    for name, text in texts.items():
        paths[name].write_text(text)
    paths["bin_gz"] = folder / "binary.jsonl.gz"
    paths["bin_gz"].write_bytes(b"\x1f\x8b" + bytes(range(200)))
    paths["truncated_gz"] = folder / "truncated.jsonl.gz"
    paths["truncated_gz"].write_bytes(gzip.compress(good.encode() * 50)[:60])
    paths["plain_named_gz"] = folder / "plain.jsonl.gz"
    paths["plain_named_gz"].write_text(good)
    paths["plain_parquet"] = folder / "plain.parquet"
    pq.write_table(pa.table({"id": ["a"], "vector": [[1.0, 0.0]]}), paths["plain_parquet"])
    paths["points_c4"] = folder / "c-v-4.parquet"
    write_points(paths["points_c4"], "c", "v", 4, [(point["id"], [1, 0, 0, 0], {})])
    return paths


def _register_damaged_clip_model(root: Path, config: bytes) -> None:
    """A clip model of the sample's spec whose checkpoint config is damaged."""
    from skysearch.encoders.registry import register_model

    from skysearch.config import Workspace

    ws = Workspace(root)
    data = {"satellite": "goes-east", "channels": ["ir"], "length": 6, "gap_minutes": 60}
    register_model(ws, "clip-damaged", "clip", {"data": data}, {})
    (ws.models_dir / "clip-damaged").mkdir()
    (ws.models_dir / "clip-damaged" / "config.json").write_bytes(config)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict[str, str]]:
    """An ingested sample workspace (no model), broken copies of it, broken files."""
    from skysearch.ingest.clips import build_clips
    from skysearch.ingest.pipeline import ingest
    from skysearch.ingest.similarity import SketchStore
    from skysearch.retrieval.store.embedded import EmbeddedStore

    from skysearch.config import Workspace

    root = tmp_path_factory.mktemp("cli-errors")
    ws = Workspace(root / "ws")
    ingest([GOES], ws, progress=False)
    build_clips(ws, length=6, gap_minutes=60)
    SketchStore(ws).update()

    def broken(name: str, relative: str | None = None, content: bytes = b"") -> str:
        copy = root / name
        shutil.copytree(ws.root, copy)
        if relative is not None:
            targets = sorted(copy.glob(relative))
            assert targets, relative
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        return str(copy)

    binary = bytes(reversed(range(256))) * 4  # not UTF-8 from the first byte
    places = {
        "ws": str(ws.root),
        "goes": str(GOES),
        "scenes": str(SCENES),
        "ws_meta_binary": broken("meta", "frames/*/*/*/meta.json", binary),
        "ws_sketch_binary": broken("sketch", "sketches/*/*/*/*/meta.json", binary),
        "ws_sketch_rebuilt": broken("sketch-rebuilt", "sketches/*/*/*/*/meta.json", binary),
        "ws_registry_binary": broken("registry"),
        "ws_registry_entry": broken("entry"),
        "ws_config_binary": broken("config-binary"),
        "ws_config_empty": broken("config-empty"),
        "ws_demo_state": broken("demo-state"),
        "ws_model_damaged": broken("model-damaged"),
        "ws_store_c8": broken("store-c8"),
    }
    models = Path(places["ws_registry_binary"]) / "models"
    models.mkdir()
    (models / "registry.json").write_bytes(binary)
    models = Path(places["ws_registry_entry"]) / "models"
    models.mkdir()
    (models / "registry.json").write_text(json.dumps({"models": [{"model_id": "clip-x"}]}))
    _register_broken_models(Path(places["ws_config_binary"]), binary)
    _register_broken_models(Path(places["ws_config_empty"]), b"{}")
    _register_damaged_clip_model(Path(places["ws_model_damaged"]), binary)
    with EmbeddedStore(Path(places["ws_store_c8"]) / "store") as store:
        store.ensure_collection("c", 8, "v")  # the file {points_c4} holds 4-dimensional "v"
    (Path(places["ws_demo_state"]) / "demo").mkdir()
    (Path(places["ws_demo_state"]) / "demo" / "state.json").write_text("{{{")

    files = root / "files"
    files.mkdir()
    (files / "a-file").write_text("hello\n")
    (files / "binary.jsonl").write_bytes(binary)
    # a valid best-track row of an event the sample (GOES, no events) does not have
    row = ["1987", "04", "09", "18", "2", "7.1", "144.9", "1006", *["0"] * 12]
    (files / "198702.tsv").write_text("\t".join(row) + "\n")
    places["file"], places["bin"] = str(files / "a-file"), str(files / "binary.jsonl")
    places["track"] = str(files / "198702.tsv")
    (files / "loop-a").symlink_to(files / "loop-b")
    (files / "loop-b").symlink_to(files / "loop-a")
    places["loop"] = str(files / "loop-a")
    places.update({name: str(path) for name, path in _exports(files).items()})
    for name, text in [("toml_binary", None), ("toml_wrong_type", "workspace = 5\n")]:
        folder = root / name
        folder.mkdir()
        toml = folder / "skysearch.toml"
        toml.write_text(text) if text else toml.write_bytes(binary)
        places[name] = str(folder)
    with socket.socket() as busy:  # a port something else listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        places["busy_port"] = str(busy.getsockname()[1])
        yield places


@pytest.fixture
def places(world, tmp_path, monkeypatch) -> dict[str, str]:
    """The world plus this case's own scratch folders; a clean environment and cwd."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "clean").mkdir()
    return {
        **world,
        "tmp": str(tmp_path),
        "missing": str(tmp_path / "missing"),
        "clean": str(tmp_path / "clean"),
    }


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """A broken case must fail fast: one that starts real work (training, serving) is stopped."""

    def stop(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: the broken input was not caught")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_clean_error(code: int, stdout: str, stderr: str, case: Case) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == case.code, (code, stderr)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if case.code == 2:  # click's usage errors too: one line naming where --help is
        assert last.startswith("error: "), stderr
        assert [ln for ln in stderr.splitlines() if ln.startswith("error: ")] == [last], stderr
    assert case.expect in stderr, stderr
    if case.expect == USAGE:
        assert last.endswith(" --help)") and "Usage:" not in stderr, stderr
    for line in stdout.splitlines():  # stdout: nothing, or JSON (--json owns stdout)
        json.loads(line)


@pytest.mark.parametrize("case", all_cases())
def test_broken_input_is_one_error_line(case, places, cli, monkeypatch):
    args = [arg.format(**places) for arg in case.args]
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(**places))
    monkeypatch.chdir(case.cwd.format(**places))
    with time_limit(60):
        result = cli(*args)
    assert_clean_error(result.exit_code, result.stdout, result.stderr, case)


# A few through a real interpreter: output written at exit, the console entry point itself.
SUBPROCESS_CASES = [
    CASES["store import"][1],
    CASES["search clip"][0],
    shared_cases("store export")[1],
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=lambda case: " ".join(case.args[:3]))
def test_broken_input_in_a_real_process(case, places):
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update({k: v.format(**places) for k, v in case.env.items()})
    done = subprocess.run(
        [sys.executable, "-m", "skysearch", *(a.format(**places) for a in case.args)],
        cwd=case.cwd.format(**places),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_clean_error(done.returncode, done.stdout, done.stderr, case)


# ---------------------------------------------------------------------------- disk full
def _catalog(root: Path) -> tuple[list[dict], object]:
    """Frame catalog rows sorted by id, and the frames' pixels in that order."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.framestore import FrameStore

    from skysearch.config import Workspace

    ws = Workspace(root)
    rows = read_frames(ws).sort_by("frame_id").to_pylist()
    return rows, FrameStore(ws).read_many([r["frame_id"] for r in rows])


def assert_same_catalog(root: Path, reference: Path) -> None:
    import numpy as np

    rows, pixels = _catalog(root)
    ref_rows, ref_pixels = _catalog(reference)
    assert rows == ref_rows
    assert np.array_equal(pixels, ref_pixels)


@pytest.mark.parametrize("command", [("ingest", GOES), ("update", GOES), ("index", "frames")])
def test_ray_engine_without_ray_installed_says_how_to_install_it(
    command, cli, monkeypatch, tmp_path
):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    done = cli(*command, "--engine", "ray", "-w", tmp_path / "ws")
    case = Case(
        (), "--engine ray needs Ray, which is not installed: pip install -e '.[ray]' in the"
    )
    assert_clean_error(done.exit_code, done.stdout, done.stderr, case)
    assert not (tmp_path / "ws").exists()  # refused before anything was written


def test_disk_full_during_ingest_is_one_line_and_a_rerun_recovers(
    cli, world, tmp_path, monkeypatch
):
    """ENOSPC at the 21st frame written: one line, exit 2; what was committed is intact; a
    re-run after "freeing space" ends with exactly the catalog of an uninterrupted run."""
    from skysearch.ingest import framestore

    append = framestore.StoreWriter.append
    written = []

    def append_until_full(self, *args, **kwargs):
        if len(written) == 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(1)
        return append(self, *args, **kwargs)

    ws = tmp_path / "ws"
    monkeypatch.setattr(framestore.StoreWriter, "append", append_until_full)
    full = cli("ingest", GOES, "--commit-every", "16", "-w", ws)
    assert "Traceback" not in full.stderr
    assert full.exit_code == 2, full.stderr
    assert full.stderr.strip().splitlines()[-1] == (
        "error: no space left on device: free space and re-run"
    )
    rows, pixels = _catalog(ws)  # what was committed before the disk filled is whole
    ref_rows, ref_pixels = _catalog(Path(world["ws"]))
    by_id = {r["frame_id"]: i for i, r in enumerate(ref_rows)}
    assert 0 < len(rows) < len(ref_rows)
    for row, frame in zip(rows, pixels, strict=True):
        assert (ref_pixels[by_id[row["frame_id"]]] == frame).all()

    monkeypatch.setattr(framestore.StoreWriter, "append", append)  # space freed
    again = cli("ingest", GOES, "-w", ws)
    assert again.exit_code == 0, again.stderr
    assert_same_catalog(ws, Path(world["ws"]))


def test_a_file_where_the_workspace_keeps_a_folder_is_one_line(cli, tmp_path):
    """`reports` replaced by a file: the run ended in a traceback after it had ingested."""
    src = tmp_path / "src"
    src.mkdir()
    for path in sorted((GOES / "infrared").glob("*.GIF"))[:2]:
        shutil.copy(path, src / path.name)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "reports").write_text("not a folder")
    done = cli("ingest", src, "-w", ws)
    assert "Traceback" not in done.stderr and done.exit_code == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: File exists ({ws / 'reports'}): a file where a folder belongs, or the reverse; "
        "`skysearch doctor` checks the workspace; then re-run"
    )


def test_only_os_errors_the_disk_explains_are_taken_for_the_users_files(tmp_path):
    """A file where a folder belongs, seen on disk, is the user's to fix; the same errno from
    a two-path call (os.link racing a compaction) or with nothing wrong on disk is a bug, and
    keeps its traceback."""
    from skysearch.cli.app import _caused_by_files

    a_file, a_folder = tmp_path / "reports", tmp_path / "folder"
    a_file.write_text("x")
    a_folder.mkdir()
    assert _caused_by_files(OSError(errno.EEXIST, "File exists", str(a_file)))
    assert not _caused_by_files(OSError(errno.EEXIST, "File exists", str(a_folder)))
    assert not _caused_by_files(OSError(errno.EEXIST, "File exists", str(a_file), None, "b"))
    assert _caused_by_files(OSError(errno.ENOTDIR, "Not a directory", str(a_file / "x")))
    assert not _caused_by_files(OSError(errno.ENOTDIR, "Not a directory", str(a_folder / "x")))
    assert _caused_by_files(OSError(errno.EACCES, "Permission denied", str(a_file)))
    assert not _caused_by_files(OSError(errno.EIO, "Input/output error", str(a_file)))


def _mount_tmpfs(folder: Path, size: str) -> None:
    options = f"size={size}" if not os.path.ismount(folder) else f"remount,size={size}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)


def test_disk_full_on_a_real_small_filesystem(world, tmp_path):
    """The same on a real 3 MB tmpfs (the sample's frames need ~5 MB), through the console."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a small tmpfs")
    folder = tmp_path / "small"
    folder.mkdir()
    try:
        _mount_tmpfs(folder, "3m")
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        command = [sys.executable, "-m", "skysearch", "ingest", str(GOES), "-w", str(folder / "ws")]
        full = subprocess.run([*command, "--commit-every", "16"], capture_output=True, text=True)
        assert "Traceback" not in full.stderr
        assert full.returncode == 2, full.stderr
        last = full.stderr.strip().splitlines()[-1]
        assert last.startswith("error: no space left on device") and "free space and re-run" in last
        _mount_tmpfs(folder, "64m")  # free space
        again = subprocess.run(command, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert_same_catalog(folder / "ws", Path(world["ws"]))
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# ---------------------------------------------------------------------------- units
def test_durations_are_bounded():
    from datetime import timedelta

    from skysearch.errors import UsageError
    from skysearch.timeutil import MAX_DURATION, parse_duration

    assert parse_duration("36525d") == MAX_DURATION
    for text in ("36526d", "99999999d", "9" * 400 + "s"):
        with pytest.raises(UsageError, match="too long"):
            parse_duration(text)
    assert parse_duration("90min") == timedelta(minutes=90)


def test_search_filters_refuse_a_window_datetime_cannot_hold():
    from datetime import datetime, timedelta, timezone

    from skysearch.retrieval.store.filters import SearchFilters

    from skysearch.errors import UsageError

    with pytest.raises(UsageError, match="exclude_window"):
        SearchFilters(
            exclude_around=datetime(2017, 9, 7, tzinfo=timezone.utc),
            exclude_window=timedelta(days=99_999_999),
        )


def test_a_failed_export_leaves_no_partial_file(tmp_path, monkeypatch):
    from skysearch.retrieval.store import Point, open_store
    from skysearch.retrieval.store.transfer import export_store

    store = open_store(None, ":memory:")
    store.ensure_collection("c", 4)
    store.upsert("c", [Point("6f1c2e0a-0000-4000-8000-000000000001", [1.0, 0, 0, 0])])

    def disk_full(*_: object, **__: object):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        yield

    monkeypatch.setattr(store, "scroll", disk_full)
    with pytest.raises(OSError):
        export_store(store, tmp_path / "store.jsonl.gz", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_bug_is_exit_code_3_with_its_traceback(cli, tmp_path, monkeypatch):
    """An unexpected exception is not a user's mistake (2) nor a job's "some inputs skipped"
    (1): its traceback, one line saying what it is, exit code 3."""
    from skysearch.ingest import pipeline

    for error in (RuntimeError, EOFError):  # click reads an EOFError as Ctrl-D: not here

        def broken(*args, error=error, **kwargs):
            raise error("something unforeseen")

        monkeypatch.setattr(pipeline, "discover", broken)
        result = cli("ingest", GOES, "-w", tmp_path / "ws")
        assert result.exit_code == 3
        assert f"{error.__name__}: something unforeseen" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: unexpected failure")


def test_a_share_that_may_be_zero_says_so():
    """`--validation 1` said "between 0 and 1 (both excluded)", though 0 is allowed."""
    import typer
    from skysearch.cli.options import share_or_none

    assert share_or_none(0) == 0 and share_or_none(0.5) == 0.5
    for value in (1, -0.1):
        with pytest.raises(typer.BadParameter, match=f"at least 0 and below 1, got {value}"):
            share_or_none(value)
