"""Batched transforms: model input conversion and per-sample augmentation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lymphosort.data.transforms import AugmentConfig, BatchAugment, to_model_input
from lymphosort.errors import ConfigError

OFF = AugmentConfig.none()


def _batch(n: int = 8, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int = 1) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- to_model_input


def test_to_model_input_normalises_uint8() -> None:
    x = torch.full((3, 64, 64), 255, dtype=torch.uint8)
    y = to_model_input(x, 64, mean=0.5, std=0.25)
    assert y.dtype == torch.float32 and y.shape == (3, 1, 64, 64)
    assert torch.all(y == 2.0)
    z = to_model_input(torch.zeros(2, 1, 64, 64, dtype=torch.uint8), 64, 0.5, 0.25)
    assert torch.all(z == -2.0)


def test_to_model_input_float_and_no_aliasing() -> None:
    x = _batch(4, 28, 28)
    before = x.clone()
    y = to_model_input(x, 28, mean=0.1307, std=0.3081)
    torch.testing.assert_close(y, (before - 0.1307) / 0.3081)
    assert torch.equal(x, before)  # the caller's batch is untouched
    y64 = to_model_input(x.double(), 28, 0.0, 1.0)
    assert y64.dtype == torch.float32


@pytest.mark.parametrize(("h", "w", "size"), [(64, 64, 28), (64, 64, 224), (50, 70, 32), (16, 16, 16)])
def test_to_model_input_resize_shape_and_constant(h: int, w: int, size: int) -> None:
    x = torch.full((2, h, w), 51, dtype=torch.uint8)  # 51/255 = 0.2
    y = to_model_input(x, size, 0.0, 1.0)
    assert y.shape == (2, 1, size, size)
    torch.testing.assert_close(y, torch.full_like(y, 0.2))


def test_to_model_input_antialias_when_shrinking() -> None:
    # A one-pixel checkerboard shrunk 64 -> 16 should average to grey, not alias to stripes.
    i = torch.arange(64)
    board = ((i[:, None] + i[None, :]) % 2).to(torch.uint8) * 255
    y = to_model_input(board[None], 16, 0.0, 1.0)
    assert float((y - 0.5).abs().max()) < 0.05


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(8, 8), torch.zeros(2, 8, 8, dtype=torch.int64)],
)
def test_to_model_input_rejects_bad_input(bad: torch.Tensor) -> None:
    with pytest.raises((TypeError, ValueError)):
        to_model_input(bad, 8, 0.0, 1.0)


def test_to_model_input_rejects_bad_args() -> None:
    x = torch.zeros(1, 8, 8, dtype=torch.uint8)
    for kw in ({"size": 0, "mean": 0.0, "std": 1.0}, {"size": 8, "mean": 0.0, "std": 0.0}):
        with pytest.raises(ConfigError):
            to_model_input(x, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- AugmentConfig


def test_config_validation_and_identity_flag() -> None:
    assert OFF.is_identity and not AugmentConfig().is_identity
    assert AugmentConfig(scale=[0.9, 1.1]).scale == (0.9, 1.1)  # type: ignore[arg-type]
    for bad in (
        {"flip_p": 1.5},
        {"scale": (1.2, 0.8)},
        {"scale": (0.0, 1.0)},
        {"blur_sigma": (-1.0, 1.0)},
        {"noise_std": (0.1, 0.0)},
        {"padding_mode": "wrap"},
        {"rotate_deg": -1.0},
    ):
        with pytest.raises(ConfigError):
            AugmentConfig(**bad)  # type: ignore[arg-type]
    assert OFF.replace(flip_p=1.0).flip_p == 1.0
    with pytest.raises(ConfigError):
        OFF.replace(blur_p=2.0)


# ---------------------------------------------------------------- BatchAugment


def test_identity_config_is_exact_identity() -> None:
    x = _batch(5, 12, 20)
    y = BatchAugment(OFF)(x, _gen())
    assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("shape", [(7, 1, 16, 16), (3, 1, 10, 14), (4, 2, 8, 8)])
def test_default_shapes_dtype_range(shape: tuple[int, int, int, int]) -> None:
    x = torch.rand(*shape, generator=_gen(3))
    y = BatchAugment()(x, _gen())
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.equal(y, x)


def test_strong_intensity_changes_stay_in_range() -> None:
    cfg = OFF.replace(brightness=(-0.9, 0.9), contrast=(0.0, 4.0), noise_std=(0.3, 0.5))
    y = BatchAugment(cfg)(_batch(32), _gen())
    assert float(y.min()) == 0.0 and float(y.max()) == 1.0


def test_determinism_with_seed() -> None:
    x = _batch(16)
    aug = BatchAugment(AugmentConfig(blur_p=0.5))
    a, b, c = aug(x, _gen(7)), aug(x, _gen(7)), aug(x, _gen(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_uint8_input_accepted() -> None:
    x8 = (_batch(4) * 255).round().to(torch.uint8)
    y = BatchAugment(OFF)(x8)
    torch.testing.assert_close(y, x8.float() / 255)


def test_per_sample_parameters_differ() -> None:
    # Identical images in one batch must come out differently (not one draw per batch).
    x = _batch(1).repeat(8, 1, 1, 1)
    y = BatchAugment(OFF.replace(brightness=(-0.2, 0.2)))(x, _gen())
    offsets = (y - x).mean(dim=(1, 2, 3))
    assert len(set(offsets.round(decimals=4).tolist())) == 8


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), square=st.booleans())
def test_flips_and_rot90_permute_pixels(seed: int, square: bool) -> None:
    x = _batch(6, 9, 9 if square else 13, seed=seed % 1000)
    y = BatchAugment(OFF.replace(flip_p=0.5, rot90=True))(x, _gen(seed))
    assert y.shape == x.shape
    for a, b in zip(x, y):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values)
        # and each output is one of the 8 dihedral images of its input (4 for non-square)
        cands = [torch.rot90(f, k, dims=(-2, -1)) for f in (a, a.flip(-1)) for k in range(4)]
        assert any(c.shape == b.shape and torch.equal(c, b) for c in cands)


def test_default_keeps_the_relief_direction() -> None:
    # A relief image: bright towards the lower right. The default augmentation may rotate a
    # little, shift, blur and change the levels, but never shows it lit from another side.
    g = torch.linspace(0.2, 0.8, 32)
    ramp = ((g[:, None] + g[None, :]) / 2).expand(64, 1, 32, 32).contiguous()
    y = BatchAugment(AugmentConfig())(ramp, _gen(3))
    lower_right, upper_left = y[..., 16:, 16:].mean(dim=(1, 2, 3)), y[..., :16, :16].mean(dim=(1, 2, 3))
    assert bool((lower_right > upper_left + 0.1).all())
    # with flips and quarter turns (isotropic optics) most samples face another way
    z = BatchAugment(AugmentConfig(flip_p=0.5, rot90=True))(ramp, _gen(3))
    assert int((z[..., 16:, 16:].mean(dim=(1, 2, 3)) < z[..., :16, :16].mean(dim=(1, 2, 3))).sum()) >= 16


def test_to_dict_round_trips() -> None:
    cfg = AugmentConfig(scale=(0.9, 1.1), flip_p=0.25)
    d = cfg.to_dict()
    assert d["scale"] == [0.9, 1.1] and AugmentConfig(**d) == cfg


def test_flip_p_one_always_flips_both_axes() -> None:
    x = _batch(4)
    y = BatchAugment(OFF.replace(flip_p=1.0))(x, _gen())
    assert torch.equal(y, x.flip(-1).flip(-2))


def test_affine_moves_content_and_keeps_constants() -> None:
    # A constant image stays constant under any affine warp with border/reflection fill.
    cfg = OFF.replace(rotate_deg=45.0, translate=0.2, scale=(0.8, 1.2))
    const = torch.full((6, 1, 16, 16), 0.4)
    for mode in ("border", "reflection"):
        y = BatchAugment(cfg.replace(padding_mode=mode))(const, _gen())
        torch.testing.assert_close(y, const)
    # A centred dot moves under translation only.
    dot = torch.zeros(4, 1, 17, 17)
    dot[:, :, 8, 8] = 1.0
    y = BatchAugment(OFF.replace(translate=0.25))(dot, _gen())
    rows = torch.arange(17.0)[:, None]
    cy = (y[:, 0] * rows).sum(dim=(1, 2)) / y[:, 0].sum(dim=(1, 2))
    assert float((cy - 8).abs().max()) > 0.5


def test_blur_reduces_high_frequency_energy() -> None:
    i = torch.arange(32)
    board = ((i[:, None] + i[None, :]) % 2).float().expand(3, 1, 32, 32)

    def hf(t: torch.Tensor) -> float:
        return float((t[..., 1:] - t[..., :-1]).pow(2).sum() + (t[..., 1:, :] - t[..., :-1, :]).pow(2).sum())

    y = BatchAugment(OFF.replace(blur_p=1.0, blur_sigma=(0.8, 1.5)))(board, _gen())
    assert hf(y) < 0.1 * hf(board)
    torch.testing.assert_close(y.mean(), board.mean(), atol=0.01, rtol=0)  # blur keeps the mean
    # blur_p=0.5 leaves some samples exactly untouched and blurs others
    y = BatchAugment(OFF.replace(blur_p=0.5, blur_sigma=(1.0, 1.0)))(board[:1].expand(16, 1, 32, 32), _gen(2))
    same = [torch.equal(a, board[0]) for a in y]
    assert any(same) and not all(same)


def test_noise_std_is_per_sample_scale() -> None:
    x = torch.full((64, 1, 32, 32), 0.5)
    y = BatchAugment(OFF.replace(noise_std=(0.05, 0.05)))(x, _gen())
    assert abs(float((y - x).std()) - 0.05) < 0.005


def test_contrast_keeps_each_image_mean() -> None:
    x = _batch(8) * 0.5 + 0.25
    y = BatchAugment(OFF.replace(contrast=(0.5, 1.5)))(x, _gen())
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)


def test_teacher_and_student_see_same_pixels() -> None:
    # Augment once, then each model converts the same pixels to its own size.
    x8 = (_batch(4, 64, 64) * 255).to(torch.uint8)[:, 0]
    aug = BatchAugment()(x8.float().div(255).unsqueeze(1), _gen())
    t = to_model_input(aug, 64, 0.5, 0.25)
    s = to_model_input(aug, 28, 0.5, 0.25)
    assert t.shape == (4, 1, 64, 64) and s.shape == (4, 1, 28, 28)
    torch.testing.assert_close(to_model_input(t * 0.25 + 0.5, 28, 0.5, 0.25), s)


def test_large_batch_runs() -> None:
    x = torch.rand(1000, 1, 64, 64, generator=_gen(0))
    y = BatchAugment(AugmentConfig(blur_p=0.5))(x, _gen(1))
    assert y.shape == x.shape and bool(torch.isfinite(y).all())


def test_bad_input() -> None:
    aug = BatchAugment()
    with pytest.raises(ValueError):
        aug(torch.zeros(8, 8))
    with pytest.raises(TypeError):
        aug(torch.zeros(1, 1, 8, 8, dtype=torch.int32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda_with_cpu_generator() -> None:
    x = _batch(8)
    aug = BatchAugment(AugmentConfig(blur_p=1.0, noise_std=(0.0, 0.0)))
    cpu = aug(x, _gen(5))
    gpu = aug(x.cuda(), _gen(5))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
    assert to_model_input(gpu, 28, 0.5, 0.25).device.type == "cuda"


def test_to_model_input_field_of_view_cuts_the_centre_without_touching_the_input() -> None:
    images = torch.arange(64 * 64, dtype=torch.float32).reshape(1, 64, 64) / (64 * 64)
    before = images.clone()
    x = to_model_input(images, 32, 0.0, 1.0, fov=32)
    assert torch.equal(x[0, 0], images[0, 16:48, 16:48])  # native scale, no resize
    y = to_model_input(images, 16, 0.5, 0.25, fov=32)  # window, then resize
    assert torch.allclose(y, to_model_input(images[:, 16:48, 16:48].clone(), 16, 0.5, 0.25))
    assert torch.equal(images, before)
    with pytest.raises(ConfigError, match="field of view"):
        to_model_input(images, 32, 0.5, 0.25, fov=80)
