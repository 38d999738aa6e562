"""The broken-input matrix of ``test_cli_errors.py``: for every CLI command, the arguments,
environment and workspaces that must end in one ``error:`` line, and the text that line must
hold. ``{name}`` placeholders are filled by that module's ``world`` fixture."""

from __future__ import annotations

from dataclasses import dataclass, field

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
        c("ingest-track", "{track}", "-w", "{missing}", expect="does not exist (check --w"),
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
        # a name it cannot write is said before the model runs (here: before it is looked for)
        c("predict", AT, "--out", "{tmp}/x.psd", *W, expect="cannot write prediction strip"),
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
        # before the captions are made; options named as flags (they said "image_tower")
        c("train", "text-image", "--image-tower", "x", *W, expect="--image-tower must be one of"),
        c("train", "text-image", "--positives", "x", *W, expect="--positives must be one of"),
        # it trained a byte-identical copy under a new id
        c(
            "train",
            "text-image",
            *("--image-tower", "locked", "--unlocked-image-groups", "3"),
            *W,
            expect="--unlocked-image-groups applies with --image-tower tuned",
        ),
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
        c("eval", "clips", "-w", "{missing}", expect="does not exist (check --workspace)"),
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
        c("search", "frame", "--at", AT, "--source", "goes-sector", *W, expect="file (--file)"),
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
        c("search", "clip", "--at", AT, "-w", "{missing}", expect="does not exist (check --w"),
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
