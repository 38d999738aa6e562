"""Video predictor, its training loop and frame metrics, on small synthetic tensors."""

from __future__ import annotations

import pytest
import torch
from skysearch.encoders.checkpoints import CheckpointError
from skysearch.encoders.metrics import mse, psnr, ssim
from skysearch.encoders.models.predictor import (
    PredictorConfig,
    SimVP,
    load_predictor,
    persistence,
    predict,
    predicted_offsets,
    save_predictor,
)
from skysearch.encoders.training import predictor as train_predictor
from skysearch.encoders.training.predictor import PredictorTrainConfig as TrainConfig
from skysearch.encoders.training.predictor import build_predictor, fit

from skysearch.errors import UsageError

SMALL = PredictorConfig(length=4, channels=1, height=16, width=24, hid_s=8, hid_t=32)


def moving_squares(n: int, length: int = 4, h: int = 16, w: int = 24) -> torch.Tensor:
    """(n, 2L, 1, h, w): a bright square moving right 2 pixels per step."""
    seqs = torch.zeros(n, 2 * length, 1, h, w)
    for i in range(n):
        row = i % (h - 4)
        for t in range(2 * length):
            col = (i % 5 + 2 * t) % (w - 4)
            seqs[i, t, 0, row : row + 4, col : col + 4] = 1.0
    return seqs


@pytest.fixture(scope="module")
def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    seqs = moving_squares(24)
    return seqs[:, :4], seqs[:, 4:]


def test_output_shape_matches_input_and_channels() -> None:
    cfg = PredictorConfig(length=3, channels=2, height=16, width=24, hid_s=8, hid_t=32)
    x = torch.rand(2, 3, 2, 16, 24)
    y = SimVP(cfg)(x)
    assert y.shape == x.shape
    with pytest.raises(ValueError, match="expects"):
        SimVP(cfg)(torch.rand(2, 4, 2, 16, 24))


def test_predict_takes_catalog_layout_at_any_resolution() -> None:
    # An untrained residual predictor is exactly persistence: every predicted frame is the last
    # input frame, area-downscaled (2x2 means here) to the working resolution.
    model = build_predictor(SMALL, seed=0)
    gen = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 256, (1, 4, 32, 48), dtype=torch.uint8, generator=gen)  # (C, L, H, W)
    out = predict(model, clip)
    assert out.shape == (1, 4, 16, 24)
    last = clip[0, -1].float().div(255).reshape(16, 2, 24, 2).mean(dim=(1, 3))
    for k in range(4):
        torch.testing.assert_close(out[0, k], last)


def test_predicted_frames_are_the_steps_after_the_last_input() -> None:
    # Frame k of the prediction is k+1 gaps after the last input frame: for a 6x60 min clip
    # starting at 00:00 (last input 05:00), predictions are 06:00 ... 11:00.
    assert predicted_offsets(6, 60) == [60, 120, 180, 240, 300, 360]


def test_persistence_repeats_last_frame() -> None:
    x = torch.rand(2, 4, 1, 8, 8)
    p = persistence(x)
    assert torch.equal(p[:, 2], x[:, -1]) and torch.equal(p[:, 0], x[:, -1])


def test_tiny_training_run_lowers_the_loss(pairs) -> None:
    x, y = pairs
    model = build_predictor(SMALL, seed=0)
    result = fit(model, x, y, TrainConfig(epochs=5, batch_size=8, lr=3e-3), progress=False)
    losses = [h["train_mse"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _moved_parts(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    """Top-level parts (``encoder``, ``translator``, ``decoder``; ``blocks``, ``head``) whose
    weights moved by more than AdamW's weight decay alone could move them (~1e-7 a step)."""
    return {
        name.split(".")[0]
        for name, value in module.state_dict().items()
        if float((value - before[name]).abs().max()) > 1e-4
    }


@pytest.fixture
def discriminators(monkeypatch) -> list[tuple[torch.nn.Module, dict[str, torch.Tensor]]]:
    """Every discriminator ``fit`` builds, with its initial weights."""
    made = []

    class Recorded(train_predictor.Discriminator):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            made.append((self, _snapshot(self)))

    monkeypatch.setattr(train_predictor, "Discriminator", Recorded)
    return made


G_PARTS = {"encoder", "translator", "decoder"}
D_PARTS = {"blocks", "head"}


def test_adversarial_training_runs_all_three_updates(pairs, discriminators) -> None:
    x, y = pairs
    cfg = TrainConfig(epochs=3, batch_size=4, adversarial=True, lambda_g=0.6, lambda_d=0.6)
    model = build_predictor(SMALL, seed=0)
    before = _snapshot(model)
    result = fit(model, x, y, cfg, progress=False)
    seen = {k for h in result.history for k in ("train_mse", "train_g", "train_d") if k in h}
    assert seen == {"train_mse", "train_g", "train_d"}
    (disc, disc_before), *others = discriminators
    assert not others
    assert _moved_parts(before, model) == G_PARTS
    assert _moved_parts(disc_before, disc) == D_PARTS


@pytest.mark.parametrize(
    ("only", "g_moves", "d_moves"),
    [("mse", G_PARTS, set()), ("g", G_PARTS, set()), ("d", set(), D_PARTS)],
)
def test_each_adversarial_update_moves_only_its_own_weights(
    pairs, discriminators, only, g_moves, d_moves
) -> None:
    """One kind of update only (the other two drawn with probability 0), no orthogonal term:
    MSE and G steps train every part of the predictor and leave the discriminator alone, D steps
    the reverse."""
    x, y = pairs
    weights = {"lambda_mse": 0.0, "lambda_g": 0.0, "lambda_d": 0.0, f"lambda_{only}": 1.0}
    cfg = TrainConfig(epochs=1, batch_size=4, adversarial=True, ortho_beta=0.0, **weights)
    model = build_predictor(SMALL, seed=0)
    before = _snapshot(model)
    result = fit(model, x, y, cfg, progress=False)
    assert {k for k in result.history[0] if k.startswith("train_")} == {f"train_{only}"}
    (disc, disc_before), *_ = discriminators
    assert _moved_parts(before, model) == g_moves
    assert _moved_parts(disc_before, disc) == d_moves


def test_same_seed_same_weights(pairs) -> None:
    x, y = pairs
    cfg = TrainConfig(epochs=2, batch_size=8, adversarial=True)
    a, b = build_predictor(SMALL, 3), build_predictor(SMALL, 3)
    initial = _snapshot(a)
    fit(a, x, y, cfg, progress=False)
    fit(b, x, y, cfg, progress=False)
    assert _moved_parts(initial, a) == G_PARTS  # training happened: equal by more than inaction
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name


def test_resumed_training_equals_uninterrupted(pairs, tmp_path) -> None:
    x, y = pairs
    cfg = TrainConfig(epochs=3, batch_size=8, adversarial=True)
    straight = build_predictor(SMALL, 1)
    fit(straight, x, y, cfg, progress=False)
    first = build_predictor(SMALL, 1)
    fit(first, x, y, TrainConfig(**{**cfg.to_dict(), "epochs": 1}), tmp_path, progress=False)
    resumed = build_predictor(SMALL, 1)
    result = fit(resumed, x, y, cfg, tmp_path, progress=False)
    assert result.resumed_from_epoch == 1 and len(result.history) == 3
    assert _moved_parts(_snapshot(build_predictor(SMALL, 1)), straight) == G_PARTS
    for pa, pb in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(pa, pb)
    with pytest.raises(CheckpointError, match="other settings"):
        fit(build_predictor(SMALL, 1), x, y, TrainConfig(epochs=4, lr=0.5), tmp_path)
    fewer = TrainConfig(**{**cfg.to_dict(), "epochs": 2})  # it returned the 3 epochs trained
    with pytest.raises(UsageError, match="already trained 3 epochs .*, more than the 2 asked"):
        fit(build_predictor(SMALL, 1), x, y, fewer, tmp_path, progress=False)


def test_checkpoint_round_trip(tmp_path) -> None:
    model = build_predictor(SMALL, 0)
    save_predictor(tmp_path / "p", model, {"gap_minutes": 60})
    loaded, config = load_predictor(tmp_path / "p")
    assert config["gap_minutes"] == 60 and loaded.config == SMALL
    x = torch.rand(1, 4, 1, 16, 24)
    model.eval()
    assert torch.equal(model(x), loaded(x))


def test_metrics_known_values() -> None:
    x = torch.rand(3, 2, 16, 16)
    assert float(mse(x, x)) == 0.0
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    a, b = torch.full((1, 16, 16), 0.2), torch.full((1, 16, 16), 0.6)
    # Constant frames: SSIM reduces to the luminance term (2ab + C1) / (a^2 + b^2 + C1).
    c1 = 0.01**2
    assert float(ssim(a, b)) == pytest.approx((2 * 0.12 + c1) / (0.04 + 0.36 + c1), rel=1e-4)
    assert float(psnr(a, b)) == pytest.approx(10 * torch.log10(torch.tensor(1 / 0.16)).item())
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert float(ssim(noisy, x)) < 0.9
    assert mse(noisy, x, reduce=False).shape == (3, 2)
