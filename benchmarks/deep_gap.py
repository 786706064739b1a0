"""What a trained model reads on LymphoSim, against the class traits the simulator drew.

The test split is re-rendered with its per-crop traits (`data.synth.writer.split_meta`,
checked byte for byte against the files on disk) and set beside the model's test
predictions (`RUN/eval/TASK-test/predictions.npz`, written by `lymphosort train`):

  * trait ceilings: logistic regression on the true traits (5-fold CV), with all of them and
    without each one: how much of the class signal each trait carries;
  * what the model reads: its logit regressed on the standardised traits within each class
    (a trait the model ignores gets a coefficient near 0 even where the ceiling leans on it);
  * what its errors follow: correlation of "wrong" with each trait and nuisance on the
    cells whose traits are clear (trait posterior < 0.1 or > 0.9).

    python benchmarks/deep_gap.py runs/v3.1/probe/r18-e20 --data-root data/lymphosim-v3.1 \\
        --out benchmarks/results/deep_gap_r18_v3.1.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lymphosort.data.idx import read_idx
from lymphosort.data.info import INFO
from lymphosort.data.synth.presets import CLASS_TRAITS
from lymphosort.data.synth.writer import split_meta

NUISANCES = ("background", "noise_std", "relief", "psf_sigma", "defocus", "shear_deg", "neighbour", "n_debris",
             "diam_frac", "crop_side")


def analyse(run: Path, data_root: Path, task: str = "t4-vs-b") -> dict[str, object]:
    base = data_root / "LymphoMNIST"
    prov = json.loads((base / "provenance.json").read_text())
    images, _, meta = split_meta(prov, "test")
    on_disk = read_idx(base / "raw" / INFO["files"]["test_images"])
    if not np.array_equal(images, on_disk):
        raise SystemExit(f"re-rendered test split differs from {base}: another LymphoSim version wrote it")
    pred = np.load(run / "eval" / f"{task}-test" / "predictions.npz")
    idx, y, p = pred["indices"], pred["labels"], pred["probs"][:, 1].astype(np.float64)
    traits = [t for t in CLASS_TRAITS if t in meta]
    x = np.stack([meta[t][idx] for t in traits], 1)
    lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))

    def ceiling(cols: list[int]) -> tuple[float, np.ndarray]:
        q = cross_val_predict(lr, x[:, cols], y, cv=5, method="predict_proba")[:, 1]
        return float(((q > 0.5) == y).mean()), q

    every = list(range(len(traits)))
    acc_all, q = ceiling(every)
    ceilings = {"all traits": round(acc_all, 4)}
    for i, t in enumerate(traits):
        ceilings[f"without {t}"] = round(ceiling([j for j in every if j != i])[0], 4)
        ceilings[f"{t} alone"] = round(ceiling([i])[0], 4)
    logit = np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1))
    xs = StandardScaler().fit_transform(x)
    reads = {}
    for c in (0, 1):
        m = y == c
        reg = LinearRegression().fit(xs[m], logit[m])
        reads[f"class {c}"] = {"r2": round(float(reg.score(xs[m], logit[m])), 3),
                               **{t: round(float(b), 2) for t, b in zip(traits, reg.coef_)}}
    trait_lr = LogisticRegression(max_iter=2000).fit(xs, y)
    reads["trait classifier (reference)"] = {t: round(float(b), 2) for t, b in zip(traits, trait_lr.coef_[0])}
    ok = (p > 0.5) == y
    clear = np.abs(q - 0.5) > 0.4
    follows = {}
    for k in [*traits, *NUISANCES]:
        if k in meta:
            v = meta[k][idx][clear].astype(np.float64)
            if v.std() > 0:
                follows[k] = round(float(np.corrcoef(v, ~ok[clear])[0, 1]), 3)
    return {"run": str(run), "data_root": str(data_root), "data": f"LymphoSim {prov['version']} {prov['preset']} "
            f"(simulated), {task} test", "n": int(len(y)), "model_accuracy": round(float(ok.mean()), 4),
            "trait_ceilings": ceilings, "model_logit_on_traits": reads,
            "trait_clear_share": round(float(clear.mean()), 4),
            "model_accuracy_on_trait_clear_cells": round(float(ok[clear].mean()), 4),
            "error_correlation_on_trait_clear_cells": follows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--task", default="t4-vs-b")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    res = analyse(a.run, a.data_root, a.task)
    res["command"] = (f"python benchmarks/deep_gap.py {a.run} --data-root {a.data_root}"
                      + (f" --task {a.task}" if a.task != "t4-vs-b" else "") + (f" --out {a.out}" if a.out else ""))
    text = json.dumps(res, indent=2)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
