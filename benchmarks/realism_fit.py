"""Fit LymphoSim's relief optics to the real crops by their feature moments, not by the AUC.

The `data compare` discriminator is a linear model on the features of
`lymphosort.data.appearance.FEATURE_DOC`; minimising its AUC directly rewards a simulator
that is simply noisier (wide spreads blur a linear boundary: docs/lymphosim.md). This fit
targets what a linear discriminator reads, with the spreads held as a constraint:

    loss = Mahalanobis^2 of the simulated feature means from the reference's (reference
           covariance, Ledoit-Wolf shrunk)
         + spread weight * sum over features of log(sim sd / reference sd)^2
         + a penalty on any of the 12 reference statistics leaving 0.8 reference sd

over a box of `ReliefRanges` fields (their current values +- a factor), with Powell's method
on common random numbers (one seeded draw). The winner is then read on a fresh draw with the
real discriminator (`compare_sets`, repeats). Writes a JSON with the fitted fields, the loss
parts and both readings; the fields go into `presets.py` by hand (a reviewed change).

    .venv/bin/python benchmarks/realism_fit.py --out runs/realism_fit.json --maxfev 600
    .venv/bin/python benchmarks/realism_fit.py --explain --start FIT.json --preset BASE --out DIR.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize
from sklearn.covariance import LedoitWolf

from lymphosort.atomic import write_json_atomic
from lymphosort.data.realism import FEATURE_DOC, TABLE_STATS, ImageSet, compare_sets, load_image_set, measure_set, resample_set
from lymphosort.data.synth import get_preset, render_crops
from lymphosort.data.synth.presets import ReliefRanges, SimPreset
from realism import REFERENCE  # benchmarks/realism.py: the 64 real crops
#: the 12 table statistics must stay inside this many reference sds (the aim says 1)
STAT_MARGIN = 0.8
#: fields fitted: (lo, hi) ranges are fitted as their mid-point and half-width (both scaled),
#: numbers as themselves; each moves within [value / SPAN, value * SPAN]
SPAN = 2.5
FIT_FIELDS = (
    "relief", "relief_crop_sd", "bias", "psf_sigma", "defocus", "defocus_crop_sd", "halo_sigma",
    "absorption", "read_noise", "haze", "background_crop_sd", "grain_path", "speckle_path",
    "nucleus_path", "body_absorb", "nucleus_absorb", "flatness", "debris_rate", "speckle_band", "grain_band",
)


def _features(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Discriminator features [n, F] and the table statistics [n, 12] of a set of crops."""
    stats, feats = measure_set(images)
    return feats, np.array([[st[k] for k in TABLE_STATS] for st in stats])


class Space:
    """Maps a unit-free vector x (0 = the base value) to `ReliefRanges` and back."""

    def __init__(self, base: ReliefRanges, names: tuple[str, ...]) -> None:
        self.base = base
        self.slots: list[tuple[str, str]] = []  # (field, "mid" | "half" | "value")
        self.start: list[float] = []
        for name in names:
            v = getattr(base, name)
            if isinstance(v, tuple):
                mid, half = (v[0] + v[1]) / 2, (v[1] - v[0]) / 2
                self.slots += [(name, "mid"), (name, "half")]
                self.start += [mid, half]
            else:
                self.slots.append((name, "value"))
                self.start.append(float(v))

    def values(self, x: np.ndarray) -> dict[str, Any]:
        # log scale: every slot moves by a factor SPAN**x, x in [-1, 1]; signs are kept
        raw = [s * SPAN ** float(xi) for s, xi in zip(self.start, x)]
        out: dict[str, Any] = {}
        for (name, kind), val in zip(self.slots, raw):
            if kind == "value":
                out[name] = type(getattr(self.base, name))(val)
            elif kind == "mid":
                out.setdefault(name, [0.0, 0.0])[0] = val
            else:
                out.setdefault(name, [0.0, 0.0])[1] = val
        for name in list(out):
            if isinstance(getattr(self.base, name), tuple):
                mid, half = out[name]
                out[name] = (max(mid - half, 0.0), mid + half)
        return out

    def ranges(self, x: np.ndarray) -> ReliefRanges:
        return replace(self.base, **self.values(x))


def _reference_space(ref_feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, LedoitWolf]:
    """The features the loss uses (defined and varying in every reference crop), their
    reference mean and sd, and the Ledoit-Wolf covariance of the standardised reference."""
    keep = np.isfinite(ref_feats).all(axis=0) & (np.nanstd(ref_feats, axis=0) > 0)
    r = ref_feats[:, keep]
    mu, sd = r.mean(0), r.std(0, ddof=1)
    return keep, mu, sd, LedoitWolf().fit((r - mu) / sd)


class Objective:
    """The loss of the module docstring for `ReliefRanges` on `base`'s classes: `n` crops drawn
    with `seed` (the same draw for every candidate), resampled to the reference's `side`."""

    def __init__(self, ref_feats: np.ndarray, ref_table: np.ndarray, base: SimPreset, n: int, seed: int,
                 side: int = 59, mean_weight: float = 1.0, spread_weight: float = 1.0) -> None:
        self.keep, self.mu, self.sd, cov = _reference_space(ref_feats)
        self.prec = cov.precision_
        self.t_mu, self.t_sd = np.nanmean(ref_table, 0), np.nanstd(ref_table, 0, ddof=1)
        self.base, self.n, self.seed, self.side = base, n, seed, side
        self.mean_weight, self.spread_weight = mean_weight, spread_weight

    def parts(self, ranges: ReliefRanges) -> dict[str, float]:
        pre = replace(self.base, sessions=ranges)
        ims, _, _ = render_crops(self.n, seed=self.seed, preset=pre)
        feats, table = _features(resample_set(list(ims), self.side))
        found = np.isfinite(feats[:, self.keep]).all(axis=1)
        s = feats[found][:, self.keep]
        z = (s - self.mu) / self.sd
        m = z.mean(0)
        maha = float(m @ self.prec @ m)
        spread = float(np.sum(np.log(z.std(0, ddof=1)) ** 2))
        varying = self.t_sd > 0  # the crop side is the same (59 px) in every resampled crop
        td = np.abs((np.nanmean(table, 0) - self.t_mu) / np.where(varying, self.t_sd, 1.0))[varying]
        penalty = float(np.sum(np.maximum(td - STAT_MARGIN, 0.0) ** 2) * 20.0)
        lost = float(1.0 - found.mean()) * 10.0
        return {"mahalanobis2": maha, "spread": spread, "stat_penalty": penalty, "not_found": lost,
                "worst_stat_sd": float(td.max())}

    def __call__(self, x: np.ndarray, space: Space) -> float:
        p = self.parts(space.ranges(np.clip(x, -1, 1)))
        return self.mean_weight * p["mahalanobis2"] + self.spread_weight * p["spread"] + p["stat_penalty"] + p["not_found"]


def directions(ref_feats: np.ndarray, sim_feats: np.ndarray, names: list[str], top: int = 6) -> dict[str, Any]:
    """Where the Mahalanobis term of the loss sits: the simulated mean shift along each
    eigenvector of the reference's (standardised, Ledoit-Wolf) covariance, the `top` largest
    shares with their heaviest features and the sets' sd ratio along them. A tight real
    direction (small eigenvalue) that the simulator spreads wide is a coupling it lacks."""
    keep, mu, sd, cov = _reference_space(ref_feats)
    s = sim_feats[:, keep]
    s = s[np.isfinite(s).all(axis=1)]
    kept = [n for n, k in zip(names, keep) if k]
    zr, zs = (ref_feats[:, keep] - mu) / sd, (s - mu) / sd
    eig, vec = np.linalg.eigh(cov.covariance_)
    shift = vec.T @ zs.mean(0)
    part = shift**2 / eig
    rows = []
    for i in np.argsort(-part)[:top]:
        v = vec[:, i]
        heavy = np.argsort(-np.abs(v))[:5]
        rows.append({"eigenvalue": round(float(eig[i]), 3), "shift": round(float(shift[i]), 3),
                     "share": round(float(part[i] / part.sum()), 3),
                     "sd_ratio": round(float((zs @ v).std(ddof=1) / (zr @ v).std(ddof=1)), 2),
                     "features": {kept[j]: round(float(v[j]), 2) for j in heavy}})
    return {"mahalanobis2": float(part.sum()), "directions": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default", help="base preset (its classes and ranges)")
    ap.add_argument("--n", type=int, default=384, help="simulated crops per evaluation")
    ap.add_argument("--seed", type=int, default=11, help="the fit's draw (the check uses seed + 1000)")
    ap.add_argument("--maxfev", type=int, default=600)
    ap.add_argument("--fields", default=",".join(FIT_FIELDS))
    ap.add_argument("--start", type=Path, help="a previous fit's JSON: start from its fitted fields")
    ap.add_argument("--mean-weight", type=float, default=1.0, help="weight of the Mahalanobis term")
    ap.add_argument("--spread-weight", type=float, default=1.0, help="weight of the log sd-ratio term")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--explain", action="store_true",
                    help="no fit: where the Mahalanobis term of --preset (with --start's fields) sits, "
                         "on a fresh draw of 1,024 crops (seed + 1000), written to --out")
    a = ap.parse_args()
    base = get_preset(a.preset)
    assert isinstance(base.sessions, ReliefRanges), "the fit is for the relief (3.x) image model"
    names = tuple(f for f in a.fields.split(",") if f)
    known = {f.name for f in fields(ReliefRanges)}
    bad = [f for f in names if f not in known]
    if bad:
        raise SystemExit(f"unknown ReliefRanges fields {bad}")
    ref = load_image_set(str(REFERENCE), 64, 0)
    ref_feats, ref_table = _features(ref.images)
    if a.start:
        prior = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(a.start.read_text())["fitted"].items()}
        base = replace(base, sessions=replace(base.sessions, **prior))
    side = int(np.median([im.shape[0] for im in ref.images]))
    if a.explain:
        ims, _, _ = render_crops(1024, seed=a.seed + 1000, preset=base)
        sim_feats, _ = _features(resample_set(list(ims), side))
        res_dirs = directions(ref_feats, sim_feats, list(FEATURE_DOC))
        write_json_atomic(a.out, {"command": "python benchmarks/realism_fit.py --explain --preset " + a.preset
                                  + (f" --start {a.start}" if a.start else ""), **res_dirs})
        print(json.dumps(res_dirs, indent=1))
        return
    obj = Objective(ref_feats, ref_table, base, a.n, a.seed, side, a.mean_weight, a.spread_weight)
    space = Space(base.sessions, names)
    x0 = np.zeros(len(space.slots))
    t0 = time.time()
    start = obj.parts(space.ranges(x0))
    trace: list[float] = []

    def f(x: np.ndarray) -> float:
        v = obj(x, space)
        trace.append(v)
        if len(trace) % 25 == 0:
            print(f"{len(trace)} evals, best {min(trace):.3f}, {time.time() - t0:.0f} s", flush=True)
        return v

    res = optimize.minimize(f, x0, method="Powell", bounds=[(-1, 1)] * len(x0),
                            options={"maxfev": a.maxfev, "xtol": 1e-2, "ftol": 1e-3})
    best = space.ranges(res.x)
    fitted = obj.parts(best)
    # the check: a fresh draw, the real discriminator, 10 readings; base and fit alike
    check = {}
    for tag, ranges in (("base", base.sessions), ("fit", best)):
        pre = replace(base, sessions=ranges)
        ims, lab, _ = render_crops(512, seed=a.seed + 1000, preset=pre)
        with tempfile.TemporaryDirectory() as tmp:
            r = compare_sets(str(REFERENCE), ImageSet(list(ims), lab, f"{tag}"), tmp, n=512, seed=1, repeats=10)
        stats = r["statistics"]
        check[tag] = {"auc_mean": r["discriminator"]["repeats"]["mean"], "auc_sd": r["discriminator"]["repeats"]["sd"],
                      "within_1sd": sum(bool(s["b_within_1sd_of_a"]) for s in stats.values()),
                      "statistics": {k: [round(s["b"]["mean"], 3), round(s["b"]["sd"], 3)] for k, s in stats.items()}}
    out = {
        "command": "python benchmarks/realism_fit.py " + " ".join(f"--{k} {v}" for k, v in vars(a).items()),
        "base": a.preset, "n": a.n, "seed": a.seed, "evals": len(trace), "seconds": round(time.time() - t0),
        "loss_start": start, "loss_fit": fitted,
        "fitted": {k: (list(v) if isinstance(v, tuple) else v) for k, v in space.values(res.x).items()},
        "x": [round(float(v), 4) for v in res.x], "check_fresh_draw": check,
    }
    write_json_atomic(a.out, out)
    print(json.dumps({k: out[k] for k in ("loss_start", "loss_fit", "fitted", "check_fresh_draw")}, indent=1, default=str))


if __name__ == "__main__":
    main()
