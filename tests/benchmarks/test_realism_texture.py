"""The texture diagnostics: the anisotropy reads a texture's direction, and a graft of a set
onto itself changes nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import realism_texture  # noqa: E402

from lymphosort.data.synth import render_crops  # noqa: E402


def _cell() -> np.ndarray:
    # a fixed cell (3.3's image model), so the thresholds below do not move with the default
    img, _, _ = render_crops(1, seed=3, preset="relief-3.3")
    return img[0].astype(np.float64)


def test_anisotropy_reads_the_direction_of_a_texture() -> None:
    img = _cell()
    yy, xx = np.mgrid[:64, :64]
    along = 25 * np.sin(2 * np.pi * (xx + yy) / (4 * np.sqrt(2)))  # varies along the shear (lower right)
    across = 25 * np.sin(2 * np.pi * (xx - yy) / (4 * np.sqrt(2)))
    sd0, r0, _, _ = realism_texture.interior_texture(img)
    r_along = realism_texture.interior_texture(img + along)[1]
    r_across = realism_texture.interior_texture(img + across)[1]
    assert r_along > 3 > 0.5 > r_across and r_across < r0 < r_along and sd0 > 0


def test_a_set_grafted_onto_itself_is_unchanged_and_a_smooth_donor_removes_the_texture() -> None:
    img = _cell().astype(np.uint8)
    same = realism_texture.graft([img], [img], (0.0, 0.9), 4.0, np.random.default_rng(0))[0]
    assert np.array_equal(same, img)
    flat = np.full_like(img, 120)  # a donor with no cell found: the crop is kept as it is
    assert np.array_equal(realism_texture.graft([img], [flat], (0.0, 0.9), 4.0, np.random.default_rng(0))[0], img)
    smooth = np.clip(img.astype(float) - realism_texture.residual(img, 4.0),
                     0, 255).astype(np.uint8)  # the same cell without its fine texture
    grafted = realism_texture.graft([img], [smooth], (0.0, 0.9), 4.0, np.random.default_rng(0))[0]
    assert realism_texture.interior_texture(grafted)[0] < 0.6 * realism_texture.interior_texture(img)[0]


def test_rings_place_the_fine_structure_where_it_is() -> None:
    img = _cell()
    base = realism_texture.ring_texture(img)
    assert base is not None and len(base) == len(realism_texture.RINGS) - 1
    st = realism_texture.crop_appearance(img)
    cx, cy, r = st["centre_x"], st["centre_y"], st["diam_px"] / 2
    yy, xx = np.mgrid[:64, :64]
    rr = np.hypot(xx - cx, yy - cy) / r
    checker = 20.0 * ((xx + yy) % 2 * 2 - 1) * (rr < 0.4)  # finest texture, inner rings only
    rings = realism_texture.ring_texture(img + checker)
    assert rings is not None
    assert (rings[:2] > base[:2] + 10).all() and np.allclose(rings[3:], base[3:])
    assert realism_texture.ring_texture(np.full((64, 64), 120.0)) is None
