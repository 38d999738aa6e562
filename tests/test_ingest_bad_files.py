"""One bad file never stops a run: decompression bombs, huge files and zip members, corrupt
headers are skipped with a reason; the same files given to a query are one ``error:`` line."""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA
from skysearch.ingest import decode

from skysearch.config import Workspace

SAMPLE_IR = SAMPLE_DATA / "goes-irma-2017" / "infrared"
LIMIT = 64 * 2**20  # decode.MAX_SOURCE_BYTES
MEMBER_BYTES = LIMIT + 2**20  # a 65 MiB zip member (of zeros)


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int, height: int) -> bytes:
    """A real, valid grey PNG of zeros: a few hundred KB that decode to width*height bytes."""
    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + \
        _chunk(b"IEND", b"")  # fmt: skip


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with pixel data that cannot decode."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"garbage") + \
        _chunk(b"IEND", b"")  # fmt: skip


def gif_bomb() -> bytes:
    """29 bytes declaring a 50000 x 50000 GIF."""
    screen = struct.pack("<HH", 50000, 50000) + b"\0\0\0"
    image = b"," + struct.pack("<HHHH", 0, 0, 50000, 50000) + b"\0"
    return b"GIF89a" + screen + image + b"\x02\x02\x44\x01\x00;"


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory) -> Path:
    """Ten real GOES frames (enough for the worker pool) beside every kind of hostile file."""
    src = tmp_path_factory.mktemp("bad") / "src"
    src.mkdir()
    good = sorted(SAMPLE_IR.glob("HUIR17249*.GIF"))[:10]
    for path in good:
        shutil.copy(path, src / path.name)
    (src / "HUIR172481200.GIF").write_bytes(gif_bomb())
    (src / "coms_mi_le1b_ir01_ea040ps_201103030000.png").write_bytes(png_bomb(15000, 15000))
    # the GK2A profile accepts any width at height 1300: only the pixel bound refuses this one
    (src / "gk2a_ami_le1b_ir105_ea020lc_201909010000.png").write_bytes(
        png_header_only(200_000, 1300)
    )
    (src / "HUIR172481230.GIF").write_bytes(png_header_only(4000, 4000))  # wrong size header
    with open(src / "HUIR172481300.GIF", "wb") as sparse:  # a plain file past the bound
        sparse.truncate(LIMIT + 1)
    with zipfile.ZipFile(src / "archive.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(good[0], "inner/HUIR172481330.GIF")  # a good member, another time
        with archive.open("inner/HUIR172481400.GIF", "w", force_zip64=True) as member:
            for _ in range(MEMBER_BYTES // 2**20):
                member.write(b"\0" * 2**20)
    assert (src / "archive.zip").stat().st_size < 2**20  # a small zip, a 64 MiB member
    (src / "damaged.zip").write_bytes(b"PK\x03\x04" + b"\x00" * 100)  # a zip in name only
    return src


def test_hostile_files_are_skipped_with_reasons_through_the_cli(bad_tree, tmp_path, cli):
    result = cli("ingest", bad_tree, "-w", tmp_path / "ws", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads(result.stdout)
    assert report["frames_added"] == 11  # ten files and the good zip member
    reasons = {Path(s["path"].split("::")[-1]).name: s["reason"] for s in report["skipped"]}
    assert "image too large, not decoded" in reasons["HUIR172481200.GIF"]
    assert "2500000000 pixels" in reasons["HUIR172481200.GIF"]
    assert "image too large" in reasons["coms_mi_le1b_ir01_ea040ps_201103030000.png"]
    assert "image too large" in reasons["gk2a_ami_le1b_ir105_ea020lc_201909010000.png"]
    # refused from its header: "wrong dimensions", not a decode error
    assert reasons["HUIR172481230.GIF"].startswith("wrong dimensions 4000x4000")
    assert f"larger than {LIMIT} bytes" in reasons["HUIR172481300.GIF"]
    assert f"zip member of {MEMBER_BYTES} bytes is larger" in reasons["HUIR172481400.GIF"]
    assert reasons["damaged.zip"].startswith("not a readable zip archive")
    again = cli("ingest", bad_tree, "-w", tmp_path / "ws", "--json")
    assert again.exit_code == 0
    assert json.loads(again.stdout)["frames_added"] == 0
    assert len(json.loads(again.stdout)["skipped"]) == len(report["skipped"])


def test_a_huge_zip_member_is_not_read(bad_tree, monkeypatch):
    """The member is refused by its declared size: its bytes are never decompressed."""
    source = decode.Source(str(bad_tree / "archive.zip"), "inner/HUIR172481400.GIF")
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(
        zipfile.ZipFile,
        "open",
        lambda self, name, *a, **k: (
            opened.append(name) or real_open(self, name, *a, **k)
        ),  # fmt: skip
    )
    with pytest.raises(decode.SourceTooLarge, match=f"zip member of {MEMBER_BYTES} bytes"):
        decode.read_bytes(source)
    assert opened == []


def _workspace_with_a_tiny_text_image_model(root: Path) -> Workspace:
    """A workspace whose registry holds a tiny (untrained) open_clip text-image model, with
    a (still empty) scenes collection for its vectors."""
    import open_clip
    from skysearch.encoders import registry
    from skysearch.encoders.models.text_image import (
        KIND,
        create_text_image_model,
        save_text_image_model,
    )

    configs = root.parent / "configs"
    configs.mkdir()
    tiny = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    }  # fmt: skip
    (configs / "Tiny-Bomb-Test.json").write_text(json.dumps(tiny))
    open_clip.add_model_config(configs)
    ws = Workspace(root)
    model_id = registry.new_model_id(KIND)
    save_text_image_model(
        create_text_image_model("Tiny-Bomb-Test"), registry.model_dir(ws, model_id)
    )
    registry.register_model(ws, model_id, KIND)
    from skysearch.retrieval.store.embedded import EmbeddedStore
    from skysearch.retrieval.store.schema import SCENES

    store = EmbeddedStore(ws.store_dir)
    store.ensure_collection(SCENES, tiny["embed_dim"], vector_name=model_id)
    store.close()
    return ws


def test_bomb_as_a_query_is_one_error_line(bad_tree, tmp_path, cli):
    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "ir.png").write_bytes(png_bomb(15000, 15000))
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(sorted(SAMPLE_IR.glob("*.GIF"))[0], other / "ir.png")
    result = cli("similarity", folder, other, "-w", tmp_path / "ws")
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot decode"), lines
    assert "225000000 pixels" in lines[0]
    ws = _workspace_with_a_tiny_text_image_model(tmp_path / "ws")
    search = cli("search", "image", bad_tree / "HUIR172481200.GIF", "-w", ws.root)
    assert search.exit_code == 2, search.stderr
    assert "Traceback" not in search.stderr
    errors = [line for line in search.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "2500000000 pixels" in errors[0], search.stderr


def test_links_odd_names_and_impossible_times_through_the_cli(tmp_path, cli):
    """A folder reached through a link is read (a link loop once); a file under a name that is
    not UTF-8 and names with impossible times are skipped with reasons, the rest stored."""
    good = sorted(SAMPLE_IR.glob("HUIR17249*.GIF"))[:4]
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    src.mkdir()
    elsewhere.mkdir()
    shutil.copy(good[0], src / good[0].name)
    shutil.copy(good[1], elsewhere / good[1].name)
    (src / "linked").symlink_to(elsewhere)
    (src / "loop").symlink_to(src)
    odd = os.path.join(os.fsencode(src), b"bad\xffname")
    os.mkdir(odd)
    shutil.copy(good[2], os.path.join(odd, os.fsencode(good[2].name)))
    shutil.copy(good[3], src / "HUIR172492545.GIF")  # 25:45
    shutil.copy(good[3], src / "HUIR173670015.GIF")  # day 367 of 2017
    result = cli("ingest", src, "-w", tmp_path / "ws", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["frames_added"] == 2
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped"]}
    assert reasons["HUIR172492545.GIF"].startswith("file name has the pattern of source profile")
    assert reasons["HUIR172492545.GIF"].endswith("but no valid time (time of day 25:45)")
    assert "no valid time (day of year 367)" in reasons["HUIR173670015.GIF"]
    assert reasons[good[2].name] == "name is not valid UTF-8: rename it"
    assert len(report["skipped"]) == 3
