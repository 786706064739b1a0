"""Where LymphoSim's cell interiors differ from the real crops': two diagnostics for the next
image model (docs/lymphosim.md, "Realism, measured").

`stats`: per set, the interior's fine texture (the crop minus its Gaussian blur, inside 0.7 R
of the fitted cell): its grey sd (mean and crop-to-crop sd), its shape (skew, excess
kurtosis: 0 for a Gaussian) and its anisotropy, the mean
squared gradient along the relief's shear (the diagonal towards the lower right, where the
real crops' bright rim faces) over that across it (1 = isotropic; a relief image of a
phase texture streaks along its shear).

`rings`: the fine structure's grey sd (crop minus its blur, `--sigma`) in rings from the
centre out past the rim, mean and crop-to-crop sd per ring: where it is too strong, and
whether its strength is as even from crop to crop as the real one's.

`graft`: the real crops' fine texture put into simulated cells (each simulated cell gets a
random real crop's residual at the same offsets from its centre, inside LO-HI R) and the
`data compare` discriminator read again (mean +- sd of 10 readings): how much of the tell
the texture carries. A probe, not a simulator. The donors are the reference crops themselves,
which favours the graft; `--holdout` takes the donors from one half of the 64 and compares
against the other half (32 vs 32: wider intervals, but no crop is its own donor).

    python benchmarks/realism_texture.py stats default
    python benchmarks/realism_texture.py rings default --sigma 1.5
    python benchmarks/realism_texture.py graft default --band 0:0.9 --sigma 4
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from realism import REFERENCE  # benchmarks/realism.py: the 64 real crops
from scipy import ndimage, stats

from lymphosort.data.appearance import crop_appearance
from lymphosort.data.realism import ImageSet, compare_sets, load_image_set, resample_set

SIDE = 59  # the reference crops' side: everything is measured there, as `data compare` does


def residual(img: np.ndarray, sigma: float) -> np.ndarray:
    """Fine texture: the crop minus its Gaussian blur (relief shading and level removed)."""
    img = np.asarray(img, dtype=np.float64)
    return img - ndimage.gaussian_filter(img, sigma)


def _geometry(img: np.ndarray) -> tuple[float, float, float]:
    st = crop_appearance(img)
    return st["centre_x"], st["centre_y"], st["diam_px"] / 2


def _cell_frame(img: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(fine structure, each pixel's distance from the fitted cell centre in units of R);
    None: no cell found."""
    img = np.asarray(img, dtype=np.float64)
    cx, cy, r = _geometry(img)
    if not np.isfinite(r):
        return None
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    return residual(img, sigma), np.hypot(xx - cx, yy - cy) / r


def interior_texture(img: np.ndarray, sigma: float = 4.0,
                     inner: float = 0.7) -> tuple[float, float, float, float] | None:
    """(residual grey sd, along/across-shear gradient ratio, skew, excess kurtosis) inside
    `inner` R; None: no cell found."""
    frame = _cell_frame(img, sigma)
    if frame is None:
        return None
    res, rho = frame
    inside = rho < inner
    gx, gy = ndimage.sobel(res, 1)[inside], ndimage.sobel(res, 0)[inside]
    along, across = (gx + gy) / np.sqrt(2), (gx - gy) / np.sqrt(2)
    v = res[inside]
    ratio = float(np.mean(along**2) / max(np.mean(across**2), 1e-12))
    return float(v.std()), ratio, float(stats.skew(v)), float(stats.kurtosis(v))


#: rings of `rings`, in units of the fitted radius R
RINGS = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4)


def ring_texture(img: np.ndarray, sigma: float = 1.5) -> np.ndarray | None:
    """Grey sd of the fine structure (crop minus its blur) in each ring of `RINGS`; None: no cell."""
    frame = _cell_frame(img, sigma)
    if frame is None:
        return None
    res, rho = frame
    return np.array([res[(rho >= lo) & (rho < hi)].std() for lo, hi in zip(RINGS[:-1], RINGS[1:])])


def graft(sim: list[np.ndarray], real: list[np.ndarray], band: tuple[float, float], sigma: float,
          rng: np.random.Generator) -> list[np.ndarray]:
    """`sim` crops with their fine texture inside band[0]-band[1] R replaced by a random real
    crop's, taken at the same pixel offsets from that crop's cell centre (crops of one side)."""
    real_geo = [_geometry(im) for im in real]
    real_res = [residual(im, sigma) for im in real]
    out = []
    for im in sim:
        img = np.asarray(im, dtype=np.float64)
        cx, cy, r = _geometry(img)
        j = int(rng.integers(len(real)))
        rx, ry, rr = real_geo[j]
        if not (np.isfinite(r) and np.isfinite(rr)):
            out.append(np.asarray(im, dtype=np.uint8))
            continue
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]].astype(np.float64)
        # whole-pixel offsets, nearest neighbour: no interpolation smooths the texture moved
        src = [np.rint(ry + yy - cy), np.rint(rx + xx - cx)]
        moved = ndimage.map_coordinates(real_res[j], src, order=0, mode="nearest")
        rho = np.hypot(xx - cx, yy - cy) / r
        w = ndimage.gaussian_filter(((rho >= band[0]) & (rho < band[1])).astype(np.float64), 0.7)
        new = img + w * (moved - residual(img, sigma))
        out.append(np.clip(np.rint(new), 0, 255).astype(np.uint8))
    return out


def _sets(presets: list[str], n: int) -> tuple[ImageSet, dict[str, ImageSet]]:
    real = load_image_set(str(REFERENCE), 64, 0)
    real = real._replace(images=resample_set(real.images, SIDE))
    sims = {}
    for p in presets:
        s = load_image_set(f"sim:{p}", n, 1)
        sims[p] = s._replace(images=resample_set(s.images, SIDE))
    return real, sims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("stats", "rings", "graft"))
    ap.add_argument("presets", nargs="+", help="LymphoSim presets (or BASE+ITEM,... variants)")
    ap.add_argument("--n", type=int, default=512, help="simulated crops per preset")
    ap.add_argument("--sigma", type=float, default=4.0, help="blur removed to leave the fine texture (px)")
    ap.add_argument("--band", default="0:0.9", help="graft: radii LO:HI in units of R")
    ap.add_argument("--holdout", action="store_true",
                    help="graft: donors from the odd-numbered reference crops, compared against the even-numbered")
    a = ap.parse_args()
    if not REFERENCE.is_dir():
        raise SystemExit(f"needs the reference crops at {REFERENCE} (../shared)")
    real, sims = _sets(a.presets, a.n)
    if a.mode == "stats":
        for name, s in [("real (64 crops)", real), *sims.items()]:
            v = np.array([t for t in (interior_texture(im, a.sigma) for im in s.images) if t is not None])
            print(f"{name}: residual sd {v[:, 0].mean():.2f} +- {v[:, 0].std():.2f}, along/across-shear gradient "
                  f"{v[:, 1].mean():.2f} +- {v[:, 1].std():.2f}, skew {v[:, 2].mean():+.2f}, excess kurtosis "
                  f"{v[:, 3].mean():+.2f} ({len(v)} cells)")
        return
    if a.mode == "rings":
        print("rings (R): " + " ".join(f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(RINGS[:-1], RINGS[1:])))
        for name, s in [("real (64 crops)", real), *sims.items()]:
            v = np.array([t for t in (ring_texture(im, a.sigma) for im in s.images) if t is not None])
            print(f"{name}: " + " ".join(f"{m:.2f} ({d:.2f})" for m, d in zip(v.mean(0), v.std(0))))
        return
    lo, hi = (float(x) for x in a.band.split(":"))
    donors = real.images
    if a.holdout:
        donors, real = real.images[1::2], real._replace(images=real.images[::2])
    for name, s in sims.items():
        for tag, images in (("as rendered", s.images),
                            (f"real texture grafted at {lo}-{hi} R", graft(s.images, donors, (lo, hi), a.sigma,
                                                                           np.random.default_rng(0)))):
            with tempfile.TemporaryDirectory() as tmp:
                d = compare_sets(real, s._replace(images=images), tmp, n=a.n, repeats=10)["discriminator"]
            print(f"{name}, {tag}: ROC-AUC {d['auc']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}], "
                  f"mean of 10 readings {d['repeats']['mean']:.3f} +- {d['repeats']['sd']:.3f}")


if __name__ == "__main__":
    main()
