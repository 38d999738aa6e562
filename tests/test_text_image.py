"""Text-image model: offline towers, local checkpoints, caption converter, tiny fine-tuning,
scene index and search — on the bundled real RSSCN7 subset (CPU, offline)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA
from skysearch.encoders import captions
from skysearch.encoders.text_image import (
    DEFAULT_MODEL,
    create_text_image_model,
    load_text_image_model,
    save_text_image_model,
)

from skysearch.config import Workspace
from skysearch.errors import UsageError

MINI = SAMPLE_DATA / "rsscn7-mini"

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_model_name(tmp_path_factory) -> str:
    """A tiny open_clip architecture (ViT + open_clip text transformer) registered from JSON."""
    import open_clip

    cfg_dir = tmp_path_factory.mktemp("configs")
    (cfg_dir / "Tiny-ViT-Test.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(cfg_dir)
    return "Tiny-ViT-Test"


def _outputs(tim, image_path: Path) -> tuple[np.ndarray, np.ndarray]:
    return tim.encode_images([image_path]), tim.encode_texts(["a parking lot", "a forest"])


def test_local_checkpoint_file_round_trip(tiny_model_name, tmp_path):
    """--model ARCH --pretrained LOCAL_FILE loads exactly the saved weights (no hub)."""
    from safetensors.torch import save_file

    image = next((MINI / "gParking").glob("*.jpg"))
    original = create_text_image_model(tiny_model_name, seed=3)
    state = {k: v.contiguous() for k, v in original.model.state_dict().items()}
    for suffix in (".safetensors", ".pt"):
        path = tmp_path / f"tiny{suffix}"
        if suffix == ".pt":
            torch.save(state, path)
        else:
            save_file(state, str(path))
        loaded = create_text_image_model(tiny_model_name, pretrained=str(path), seed=99)
        for a, b in zip(_outputs(original, image), _outputs(loaded, image), strict=True):
            np.testing.assert_array_equal(a, b)


def test_skysearch_checkpoint_round_trip(tiny_model_name, tmp_path):
    """save_text_image_model / load_text_image_model: safetensors + config, same outputs."""
    image = next((MINI / "eForest").glob("*.jpg"))
    original = create_text_image_model(tiny_model_name, seed=5)
    save_text_image_model(original, tmp_path / "ckpt", {"note": "test"})
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = load_text_image_model(tmp_path / "ckpt")
    assert loaded.metadata["note"] == "test"
    for a, b in zip(_outputs(original, image), _outputs(loaded, image), strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_model_or_pretrained_is_a_usage_error(tiny_model_name, tmp_path):
    with pytest.raises(UsageError, match="unknown text-image model"):
        create_text_image_model("No-Such-Model")
    with pytest.raises(UsageError, match="neither a file nor an open_clip tag"):
        create_text_image_model(tiny_model_name, pretrained=str(tmp_path / "missing.pt"))


def test_offline_towers_carry_pretrained_weights():
    """ImageNet EfficientNet-Lite0 tensors are the package's, and MiniLM's sentence space is
    meaningful: 'houses' is nearer 'a residential area' than 'a dense forest'."""
    from skysearch.encoders.pretrained import efficientnet_lite0_state_dict

    tim = create_text_image_model(DEFAULT_MODEL)
    assert tim.spec["image_mean"] == [0.5, 0.5, 0.5]
    trunk = tim.model.visual.trunk.state_dict()
    reference = efficientnet_lite0_state_dict()
    torch.testing.assert_close(trunk["conv_stem.weight"], reference["conv_stem.weight"])
    torch.testing.assert_close(trunk["bn2.running_var"], reference["bn2.running_var"])

    text = tim.model.text
    tokens = tim.tokenizer(["houses", "a residential area", "a dense forest"])
    mask = (tokens != text.config.pad_token_id).long()
    with torch.no_grad():
        pooled = text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    assert float(pooled[0] @ pooled[1]) > float(pooled[0] @ pooled[2]) + 0.1


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


def test_converter_rejects_a_folder_without_classes(tmp_path):
    with pytest.raises(UsageError, match="class folders"):
        captions.convert_folder(tmp_path, tmp_path / "out")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tiny real fine-tuning run on rsscn7-mini (2 epochs x 3 steps, 1 thread)."""
    from skysearch.encoders.train_text_image import TrainConfig, prepare_folder, train_text_image

    torch.set_num_threads(1)
    ws = Workspace(tmp_path_factory.mktemp("ws"))
    csvs = prepare_folder(MINI, ws)
    cfg = TrainConfig(
        train_csv=str(csvs["train"]),
        val_csv=str(csvs["val"]),
        epochs=2,
        batch_size=16,
        max_steps_per_epoch=3,
        split_seed=captions.DEFAULT_SEED,
    )
    return ws, cfg, csvs, train_text_image(cfg, ws, progress=False)


def test_tiny_fine_tuning_lowers_the_contrastive_loss(tuned):
    from skysearch.encoders.captions import read_csv
    from skysearch.encoders.train_text_image import Trainer

    ws, cfg, csvs, summary = tuned
    rows = read_csv(csvs["train"])
    trainer = Trainer(cfg, ws, progress=False)
    before = trainer.evaluate(create_text_image_model(seed=cfg.seed), None, rows)["val_loss"]
    after = trainer.evaluate(load_text_image_model(summary["path"]), None, rows)["val_loss"]
    assert after < before - 0.1, (before, after)
    assert [h["epoch"] for h in summary["history"]] == [1, 2]


def test_training_rerun_resumes_instead_of_retraining(tuned):
    from skysearch.encoders import registry
    from skysearch.encoders.train_text_image import train_text_image

    ws, cfg, _, summary = tuned
    again = train_text_image(cfg, ws, progress=False)
    assert again["resumed"] == "done" and again["model_id"] == summary["model_id"]
    assert registry.latest(ws, "text-image").model_id == summary["model_id"]


def test_index_and_search_scenes(tuned, cli):
    ws, _, _, _ = tuned
    res = cli("index", "scenes", MINI, "-w", ws.root, "--threads", "1", "--json")
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert report["found"] == 84 and report["written"] == 84
    res = cli("index", "scenes", MINI, "-w", ws.root, "--json")
    assert json.loads(res.stdout.strip().splitlines()[-1])["unchanged"] == 84

    res = cli("search", "text", "parking lot next to a river", "-k", "5", "-w", ws.root, "--json")
    assert res.exit_code == 0, res.stderr
    hits = json.loads(res.stdout.strip().splitlines()[-1])["results"]
    assert len(hits) == 5
    assert all(Path(h["source_path"]).is_file() and h["label"] for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"]

    query = next((MINI / "gParking").glob("*.jpg"))
    res = cli("search", "image", query, "-k", "3", "-w", ws.root, "--json")
    hits = json.loads(res.stdout.strip().splitlines()[-1])["results"]
    assert Path(hits[0]["source_path"]) == query.resolve()  # itself first


def test_eval_reports_untuned_and_tuned(tuned, cli):
    ws, _, _, _ = tuned
    res = cli("eval", "text-image", "--images", MINI, "-w", ws.root, "--threads", "1", "--json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["test_images"] == 21  # 12 per class: 8 train, 1 val, 3 test
    top1, recall = out["zero_shot_top1"], out["text_to_image"]
    assert set(top1) == set(recall) == {"untuned", "tuned"}
    for name in ("untuned", "tuned"):
        r = recall[name]
        assert r["r1"] <= r["r5"] <= r["r10"] and r["pair_r1"] <= r["pair_r5"] <= r["pair_r10"]
        assert all(r[f"pair_r{k}"] <= r[f"r{k}"] for k in (1, 5, 10))  # own image is in-class
    # The fine-tune must pay off on the held-out test images. Measured on this fixture's seeds:
    # zero-shot top-1 3/21 untuned (chance is 1/7) vs 14/21 tuned; class R@5 10/21 vs 21/21.
    # The margins asserted are about half of those, so a different torch build or CPU does not
    # flip them, while scoring the untuned model as "tuned" (equal values) fails.
    assert top1["tuned"] >= top1["untuned"] + 0.25, top1
    assert recall["tuned"]["r5"] >= recall["untuned"]["r5"] + 0.25, recall
    assert recall["tuned"]["pair_r5"] > recall["untuned"]["pair_r5"], recall


def test_search_without_a_model_is_one_clear_error(cli, tmp_path):
    res = cli("search", "text", "houses", "-w", tmp_path)
    assert res.exit_code == 2
    assert res.stderr.startswith("error:") and "train one first" in res.stderr
