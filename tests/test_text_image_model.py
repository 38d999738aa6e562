"""Text-image model: the offline towers, checkpoints (local files, open_clip
architectures), the traced text tower, the learning-rate schedule and the training recipes."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from skysearch.encoders.models.text_image import (
    DEFAULT_MODEL,
    create_text_image_model,
    load_text_image_model,
    save_text_image_model,
)
from text_image_env import MINI, TINY_CONFIG, one_torch_thread

from skysearch.config import Workspace
from skysearch.errors import UsageError


@pytest.fixture(scope="module")
def tiny_model_name(tmp_path_factory) -> str:
    """A tiny open_clip architecture (ViT + open_clip text transformer) registered from JSON."""
    import open_clip

    cfg_dir = tmp_path_factory.mktemp("configs")
    (cfg_dir / "Tiny-ViT-Test.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(cfg_dir)
    return "Tiny-ViT-Test"


@pytest.fixture
def one_thread():
    with one_torch_thread():
        yield


def _outputs(tim, image_path: Path) -> tuple[np.ndarray, np.ndarray]:
    return tim.encode_images([image_path]), tim.encode_texts(["a parking lot", "a forest"])


def _assert_same_outputs(tim, other, image_path: Path) -> None:
    for a, b in zip(_outputs(tim, image_path), _outputs(other, image_path), strict=True):
        np.testing.assert_array_equal(a, b)


def _weights(tim) -> dict[str, torch.Tensor]:
    """The model's state as a checkpoint file holds it (safetensors wants contiguous)."""
    return {k: v.contiguous() for k, v in tim.model.state_dict().items()}


def test_local_checkpoint_file_round_trip(tiny_model_name, tmp_path):
    """--model ARCH --pretrained LOCAL_FILE loads exactly the saved weights (no hub)."""
    from safetensors.torch import save_file

    image = next((MINI / "gParking").glob("*.jpg"))
    original = create_text_image_model(tiny_model_name, seed=3)
    state = _weights(original)
    for suffix in (".safetensors", ".pt"):
        path = tmp_path / f"tiny{suffix}"
        if suffix == ".pt":
            torch.save(state, path)
        else:
            save_file(state, str(path))
        loaded = create_text_image_model(tiny_model_name, pretrained=str(path), seed=99)
        _assert_same_outputs(original, loaded, image)


def test_epochs_zero_registers_a_checkpoint_unchanged(tiny_model_name, tmp_path, cli):
    """`train text-image --pretrained FILE --epochs 0` (what the docs offer SkyCLIP/RemoteCLIP
    users) registers the checkpoint as it is: the registered model embeds exactly as the file."""
    from safetensors.torch import save_file

    original = create_text_image_model(tiny_model_name, seed=7)
    path = tmp_path / "remote.safetensors"
    save_file(_weights(original), str(path))
    args = ["train", "text-image", "--images", MINI, "--model", tiny_model_name]
    args += ["--pretrained", path, "--image-tower", "tuned", "--epochs", "0"]
    result = cli(*args, "-w", tmp_path / "ws", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["history"] == [] and summary["epochs"] == 0
    assert "registered without training" in result.stderr
    registered = load_text_image_model(summary["path"])
    image = next((MINI / "aGrass").glob("*.jpg"))
    _assert_same_outputs(original, registered, image)
    # the same architecture (its own text transformer, no `.text` module) also fine-tunes
    args[-1] = "1"
    result = cli(*args, "--batch-size", "8", "-w", tmp_path / "ws", "--json")
    assert result.exit_code == 0, result.stderr
    tuned = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(tuned["history"]) == 1 and tuned["trainable_params"] > 0
    changed = load_text_image_model(tuned["path"])
    assert not np.array_equal(_outputs(original, image)[0], _outputs(changed, image)[0])


def test_skysearch_checkpoint_round_trip(tiny_model_name, tmp_path):
    """save_text_image_model / load_text_image_model: safetensors + config, same outputs."""
    image = next((MINI / "eForest").glob("*.jpg"))
    original = create_text_image_model(tiny_model_name, seed=5)
    save_text_image_model(original, tmp_path / "ckpt", {"note": "test"})
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = load_text_image_model(tmp_path / "ckpt")
    assert loaded.metadata["note"] == "test"
    _assert_same_outputs(original, loaded, image)


def test_bad_model_or_pretrained_is_a_usage_error(tiny_model_name, tmp_path):
    with pytest.raises(UsageError, match="unknown text-image model"):
        create_text_image_model("No-Such-Model")
    with pytest.raises(UsageError, match="neither a file nor an open_clip tag"):
        create_text_image_model(tiny_model_name, pretrained=str(tmp_path / "missing.pt"))


def test_a_checkpoint_open_clip_cannot_read_is_one_usage_error(tiny_model_name, tmp_path, cli):
    """A garbage file ended in an UnpicklingError traceback, an empty one in EOFError, which
    click turns into an Abort traceback (exit code 3)."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(UsageError, match="is not a checkpoint open_clip can read .UnpicklingErr"):
        create_text_image_model(tiny_model_name, pretrained=str(garbage))
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(UsageError, match="cut.pt is not a checkpoint open_clip can read"):
        create_text_image_model(tiny_model_name, pretrained=str(tmp_path / "cut.pt"))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    listing = tmp_path / "one.csv"
    images = [*sorted(MINI.glob("aGrass/*.jpg"))[:1], *sorted(MINI.glob("gParking/*.jpg"))[:1]]
    listing.write_text(
        "filepath,title\n" + "".join(f"{p},a photo of {p.parent.name}\n" for p in images)
    )
    done = cli("train", "text-image", "--csv", listing, "--pretrained", empty, "--epochs", "1",
               "--threads", "1", "-w", tmp_path / "ws")  # fmt: skip
    assert done.exit_code == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"error: --pretrained {empty} is not a checkpoint open_clip can read (the file is empty)"
    )


def test_a_checkpoint_of_another_architecture_is_one_short_line(tiny_model_name, tmp_path):
    """torch's error listed every missing key, over several lines."""
    other = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(2), "bar.bias": torch.zeros(2)}, other)
    with pytest.raises(UsageError) as caught:
        create_text_image_model(tiny_model_name, pretrained=str(other))
    message = str(caught.value)
    own = len(create_text_image_model(tiny_model_name).model.state_dict())
    assert "\n" not in message and len(message) < 500, message
    assert f"pretrained {other} does not fit {tiny_model_name}: {own} missing key(s) (" in message
    assert f"and {own - 3} more), 2 unexpected key(s) (foo.weight, bar.bias); a checkpoint of" in (
        message
    )


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


def test_text_embeddings_skip_unused_padding_and_stay_the_same(tiny_model_name):
    """encode_texts runs the MiniLM tower on the batch's longest text, not the context length
    (the cost of a query), with the embeddings of full padding; a tower that does not mask
    padding (open_clip's own, causal) gets every column."""
    texts = ["a forest", "dense residential area with small houses and gardens", "x"]
    for name, trimmed in ((DEFAULT_MODEL, True), (tiny_model_name, False)):
        tim = create_text_image_model(name, load_tower_weights=False)
        seen: list[int] = []
        encode_text = tim.model.encode_text
        with torch.no_grad():
            full = encode_text(tim.tokenizer(texts), normalize=True).numpy()

        def spy(tokens, normalize=False, encode_text=encode_text, seen=seen):
            seen.append(tokens.shape[1])
            return encode_text(tokens, normalize=normalize)

        tim.model.encode_text = spy
        np.testing.assert_allclose(tim.encode_texts(texts), full, atol=1e-5)
        np.testing.assert_allclose(tim.encode_texts(texts[:1]), full[:1], atol=1e-5)
        context = tim.tokenizer(texts).shape[1]
        assert (seen[0] < context and seen[1] < seen[0]) if trimmed else seen == [context] * 2


def test_traced_text_tower_embeds_as_the_eager_one(tiny_model_name, monkeypatch):
    """The service's traced text tower gives the eager embeddings for batches of other sizes
    and lengths than the one it was traced on; a tower that fails to trace, or whose trace
    differs, stays eager."""
    texts = ["a forest", "dense residential area with small houses and gardens", "x"] * 3
    for name in (DEFAULT_MODEL, tiny_model_name):
        tim = create_text_image_model(name, load_tower_weights=False)
        eager = [tim.encode_texts(texts), tim.encode_texts(texts[:1]), tim.encode_texts(texts[1:5])]
        assert tim.trace_text_tower() and tim.traced_text is not None
        traced = [
            tim.encode_texts(texts),
            tim.encode_texts(texts[:1]),
            tim.encode_texts(texts[1:5]),
        ]
        for a, b in zip(eager, traced, strict=True):
            np.testing.assert_allclose(b, a, atol=1e-5)

    tim = create_text_image_model(tiny_model_name, load_tower_weights=False)
    before = tim.encode_texts(texts)

    def fails(*args, **kwargs):
        raise RuntimeError("cannot trace")

    with monkeypatch.context() as m:
        m.setattr(torch.jit, "trace", fails)
        assert not tim.trace_text_tower() and tim.traced_text is None
    with monkeypatch.context() as m:  # a trace that drifts from the eager tower
        m.setattr(torch.jit, "optimize_for_inference", lambda mod: lambda t: mod(t) * 1.01)
        assert not tim.trace_text_tower() and tim.traced_text is None
    np.testing.assert_array_equal(tim.encode_texts(texts), before)


def test_only_hugging_face_tokenizers_export_a_text_side(tiny_model_name, tmp_path):
    """open_clip's own tokenizer (CLIP architectures) has no ``tokenizers`` file: such models
    always answer text queries in full (the default's export: tests/test_text_query.py)."""
    from skysearch.encoders.models.text_query import export_text_query

    tim = create_text_image_model(tiny_model_name, load_tower_weights=False)
    assert not export_text_query(tim, tmp_path) and not list(tmp_path.iterdir())


def _replaced_lr_factor(step: int, total: int, warmup: int) -> float:
    """The hand-written warmup-cosine schedule that transformers' replaced."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@pytest.mark.parametrize(("warmup", "total"), [(10, 6), (10, 60), (3, 25)])
def test_lr_schedule_matches_the_formula_it_replaced(warmup, total):
    """Same learning rates: the warmup step for step, the cosine one step earlier (the old
    formula held the peak for two steps, ``warmup - 1`` and ``warmup``), and a schedule made
    mid-run (a resume) continues where an uninterrupted one is."""
    from skysearch.encoders.training.text_image import lr_schedule

    def lrs(start: int) -> list[float]:
        param = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([{"params": [param], "lr": 2.0, "initial_lr": 2.0}])
        schedule = lr_schedule(opt, warmup, total, start)
        out = []
        for _ in range(start, total):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        return out

    new = lrs(0)
    old = [2.0 * _replaced_lr_factor(s, total, warmup) for s in range(total + 1)]
    assert len(new) == total
    for s, lr in enumerate(new):
        expected = old[s] if s < warmup else old[s + 1]
        assert lr == pytest.approx(expected, abs=1e-12), s
    assert lrs(total // 2) == pytest.approx(new[total // 2 :], abs=1e-12)


def test_tuned_image_tower_recipe_and_other_architectures(tiny_model_name, tmp_path, one_thread):
    """The previous recipe (image blocks tuned, trained text head) still trains and loads as a
    plain model; tuned with the text head locked gets the concept bank of its own tuned trunk;
    the locked recipe refuses a tower without a separable trunk, in plain words."""
    from skysearch.encoders.datasets.captions import read_csv
    from skysearch.encoders.models.text_image import load_rgb
    from skysearch.encoders.training.text_image import train_text_image
    from skysearch.encoders.training.text_image_data import prepare_folder
    from skysearch.encoders.training.text_image_recipe import TextImageTrainConfig as TrainConfig

    ws = Workspace(tmp_path / "ws")
    csvs = prepare_folder(MINI, ws)
    common = {"train_csv": str(csvs["train"]), "epochs": 1, "max_steps_per_epoch": 2}
    tuned = TrainConfig(
        **common,
        batch_size=8,
        image_tower="tuned",
        text_head="trained",
        logit_scale=None,
        unlocked_image_groups=2,
    )
    summary = train_text_image(tuned, ws, progress=False)
    assert summary["trainable_params"] > 1280 * 384 + 384 * 384  # heads + tower blocks
    model = load_text_image_model(summary["path"])
    assert "heads" not in model.metadata and model.embed_dim == 384
    # with the text head locked, the concept bank is built over the TUNED trunk's features, even
    # where a locked run has cached the package tower's features of the same images
    train_text_image(TrainConfig(**common, batch_size=8, image_tower="locked"), ws, progress=False)
    fused = train_text_image(
        TrainConfig(**common, batch_size=8, image_tower="tuned", unlocked_image_groups=2),
        ws,
        progress=False,
    )
    model = load_text_image_model(fused["path"])
    assert model.metadata["heads"]["kind"] == "fused" and model.embed_dim == 384 + 1280
    assert not list(Path(fused["path"]).glob("*features*"))  # the bank's features not kept
    # the bank's feature mean is the mean of the tuned trunk's features of the training images,
    # not of the package tower's
    paths = [row[0] for row in read_csv(csvs["train"], "title")]

    def mean_trunk_features(tim) -> torch.Tensor:
        tim.model.eval()
        with torch.no_grad():
            pixels = torch.stack([tim.preprocess(load_rgb(p)) for p in paths])
            return tim.model.visual.trunk(pixels).mean(0)

    tuned_mean = mean_trunk_features(model)
    package_mean = mean_trunk_features(create_text_image_model(DEFAULT_MODEL))
    stored = model.model.visual.head.feature_mean
    assert torch.allclose(stored, tuned_mean, atol=1e-4)
    assert not torch.allclose(stored, package_mean, atol=1e-3)
    for recipe, words in (("locked", "no separable image trunk"), ("last-stage", "EfficientNet")):
        with pytest.raises(UsageError, match=words):
            cfg = TrainConfig(**common, model_name=tiny_model_name, image_tower=recipe)
            train_text_image(cfg, ws, progress=False)


def test_last_stage_recipe_trains_only_the_last_stages_over_cached_rotations(tmp_path, one_thread):
    """The default recipe: the trunk cut in two gives the trunk's own features; the frozen
    front's activations of the four rotations are computed once per image and cached; only the
    last two stages (and the heads) change; the concept bank holds the tuned trunk's features."""
    from skysearch.encoders.datasets.captions import read_csv
    from skysearch.encoders.models.text_image import load_rgb
    from skysearch.encoders.training.text_image import train_text_image
    from skysearch.encoders.training.text_image_data import prepare_folder
    from skysearch.encoders.training.text_image_recipe import ROTATIONS, TrunkSplit
    from skysearch.encoders.training.text_image_recipe import TextImageTrainConfig as TrainConfig

    ws = Workspace(tmp_path / "ws")
    csvs = prepare_folder(MINI, ws)
    paths = [row[0] for row in read_csv(csvs["train"], "title")]
    package = create_text_image_model(DEFAULT_MODEL)
    split = TrunkSplit(package.model.visual.trunk)
    pixels = torch.stack([package.preprocess(load_rgb(p)) for p in paths[:3]])
    with torch.no_grad():
        whole = package.model.visual.trunk(pixels)
        assert torch.allclose(split.back(split.front(pixels)), whole, atol=1e-5)
        fronts = split.front_rotations(pixels)
        assert fronts.shape[:2] == (3, ROTATIONS) and fronts.dtype == torch.float16
        turned = split.front(torch.rot90(pixels, 3, dims=(2, 3)))
        assert torch.allclose(fronts[:, 3].float(), turned, atol=1e-2, rtol=1e-2)

    cfg = TrainConfig(train_csv=str(csvs["train"]), epochs=1, max_steps_per_epoch=2, batch_size=8)
    assert cfg.image_tower == "last-stage" and TrainConfig(train_csv=cfg.train_csv).epochs == 15
    assert TrainConfig(train_csv=cfg.train_csv, epochs=0).epochs == 0  # not "the default"
    summary = train_text_image(cfg, ws, progress=False)
    (cache,) = (ws.root / "cache" / "text-image-fronts").glob("*.npz")
    with np.load(cache) as data:
        assert data["features"].shape[:2] == (len(paths), ROTATIONS)
    written = cache.stat().st_mtime_ns
    train_text_image(replace(cfg, seed=1), ws, progress=False)  # another run: the same fronts
    assert cache.stat().st_mtime_ns == written

    model = load_text_image_model(summary["path"])
    assert model.metadata["heads"]["kind"] == "fused"
    tuned, start = model.model.visual.trunk.state_dict(), package.model.visual.trunk.state_dict()

    def part(key: str) -> str:  # "blocks.5.0.conv_pw.weight" -> "blocks.5"
        return ".".join(key.split(".")[: 2 if key.startswith("blocks.") else 1])

    changed = {part(k) for k in start if not torch.equal(start[k], tuned[k])}
    assert changed == {f"blocks.{split.cut}", f"blocks.{split.cut + 1}", "conv_head", "bn2"}
    model.model.eval()
    with torch.no_grad():
        all_pixels = torch.stack([model.preprocess(load_rgb(p)) for p in paths])
        mean = model.model.visual.trunk(all_pixels).mean(0)
    assert torch.allclose(model.model.visual.head.feature_mean, mean, atol=1e-2)


def test_embeddings_after_training_mode_are_inference_embeddings():
    """A model left in train mode (dropout on) embeds in inference mode: encode_texts and
    encode_pixels switch it (only then: eval() walks every module, a cost per query)."""
    tim = create_text_image_model(DEFAULT_MODEL, load_tower_weights=False)
    texts, pixels = ["a forest", "a river"], torch.rand(2, 3, tim.image_size, tim.image_size)
    want_t, want_p = tim.encode_texts(texts), tim.encode_pixels(pixels)
    for encode, data, want in (
        (tim.encode_texts, texts, want_t),
        (tim.encode_pixels, pixels, want_p),
    ):
        tim.model.train()
        np.testing.assert_allclose(encode(data), want, atol=1e-5)
        assert not tim.model.training
