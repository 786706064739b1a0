from __future__ import annotations

import numpy as np
import pytest
import torch

from lymphosort.data.transforms import to_model_input
from lymphosort.realtime.crop import Preprocessor, crop_cells


def test_crop_is_centred_like_the_dataset() -> None:
    img = np.zeros((96, 320), np.uint8)
    img[50, 100] = 255
    crop = crop_cells(img, [(100.0, 50.0)])[0]
    ys, xs = np.nonzero(crop)
    assert (int(ys[0]), int(xs[0])) in {(31, 31), (32, 32), (31, 32), (32, 31)}


def test_crop_near_the_edge_repeats_border_rows() -> None:
    img = np.tile(np.arange(96, dtype=np.uint8)[:, None], (1, 320))
    crop = crop_cells(img, [(160.0, 5.0), (160.0, 90.0)])
    assert crop.shape == (2, 64, 64)
    assert (crop[0, :20] == 0).all() and crop[0, -1, 0] == 37
    assert (crop[1, -20:] == 95).all()


@pytest.mark.parametrize("size", [28, 32, 48, 64])
def test_numpy_preprocessor_matches_to_model_input(size: int) -> None:
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (5, 64, 64), dtype=np.uint8)
    ref = to_model_input(torch.from_numpy(crops), size, 0.5, 0.25).numpy()
    got = Preprocessor(size, 0.5, 0.25)(crops)
    assert got.shape == ref.shape == (5, 1, size, size)
    np.testing.assert_allclose(got, ref, atol=2e-5)


@pytest.mark.parametrize(("size", "fov"), [(32, 32), (24, 32), (32, 40), (28, 31)])
def test_numpy_preprocessor_matches_to_model_input_with_a_field_of_view(size: int, fov: int) -> None:
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)
    ref = to_model_input(torch.from_numpy(crops), size, 0.5, 0.25, fov=fov).numpy()
    got = Preprocessor(size, 0.5, 0.25, fov=fov)(crops)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    with pytest.raises(ValueError, match="field of view"):
        Preprocessor(size, 0.5, 0.25, fov=65)


def test_preprocessor_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError):
        Preprocessor(32, 0.5, 0.25)(np.zeros((2, 32, 32), np.uint8))


def test_edge_crops_equal_padding_by_edge_replication() -> None:
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (96, 320), dtype=np.uint8)
    padded = np.pad(img, 64, mode="edge")
    for cx, cy in [(5.0, 5.0), (318.0, 90.0), (160.0, 2.0), (40.0, 95.0), (-10.0, 48.0), (330.0, -3.0)]:
        x0, y0 = int(round(cx - 31.5)), int(round(cy - 31.5))
        ref = padded[y0 + 64:y0 + 128, x0 + 64:x0 + 128]
        np.testing.assert_array_equal(crop_cells(img, [(cx, cy)])[0], ref)
