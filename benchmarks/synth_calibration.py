"""LymphoSim vs real bright-field crops: the same appearance statistics on both, and a montage.

Real: the 20 reference crops (100x100, T4) centre-cropped to 64x64, which keeps the pixel
scale. Sim: render_crops on the preset. Writes a JSON, prints a markdown table (pasted
into docs/lymphosim.md) and saves docs/img/lymphosim_montage.png.

    .venv/bin/python benchmarks/synth_calibration.py --preset default --n 400
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from lymphosort.data.synth import render_crops
from lymphosort.data.synth.stats import STAT_DOC, summarize

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT.parent / "shared" / "reference" / "brightfield"


def load_real(ref: Path) -> np.ndarray:
    ims = [np.asarray(Image.open(p).convert("L")) for p in sorted(ref.glob("*.png"))]
    if not ims:
        raise SystemExit(f"no reference crops in {ref}")
    out = []
    for a in ims:
        h, w = a.shape
        y0, x0 = (h - 64) // 2, (w - 64) // 2
        out.append(a[y0:y0 + 64, x0:x0 + 64])
    return np.stack(out)


def montage(real: np.ndarray, sim: np.ndarray, lab: np.ndarray, path: Path, per_row: int = 8) -> None:
    """Rows: real T4 (two rows), then simulated B, T4, T8; 2 px white gutters."""
    rows = [real[:per_row], real[per_row:2 * per_row]] + [sim[lab == c][:per_row] for c in range(3)]
    g = 2
    canvas = np.full((len(rows) * (64 + g) + g, per_row * (64 + g) + g), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            canvas[g + r * (64 + g):g + r * (64 + g) + 64, g + c * (64 + g):g + c * (64 + g) + 64] = im
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).resize((canvas.shape[1] * 2, canvas.shape[0] * 2), Image.NEAREST).save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ref", type=Path, default=REF)
    ap.add_argument("--out", default="runs/synth_calibration.json")
    ap.add_argument("--montage", type=Path, default=ROOT / "docs" / "img" / "lymphosim_montage.png")
    a = ap.parse_args()
    real = load_real(a.ref)
    sim, lab, _ = render_crops(a.n, seed=a.seed, preset=a.preset)
    rs, ss = summarize(real), summarize(sim)
    res = {"preset": a.preset, "n_sim": a.n, "n_real": len(real), "seed": a.seed, "real": rs, "sim": ss}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    montage(real, sim, lab, a.montage)
    f = lambda d: f"{d['mean']:.2f} ± {d['std']:.2f} [{d['min']:.1f}, {d['max']:.1f}]"  # noqa: E731
    print(f"| statistic | real (n={len(real)}) mean ± sd [min, max] | sim {a.preset} (n={a.n}) | meaning |")
    print("|---|---|---|---|")
    for k, doc in STAT_DOC.items():
        print(f"| {k} | {f(rs[k])} | {f(ss[k])} | {doc} |")


if __name__ == "__main__":
    main()
