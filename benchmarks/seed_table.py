"""Benchmark: settings over seeds, from finished run folders, with paired differences.

Each `--group LABEL=RUN[,RUN...]` is one setting trained with several seeds; every run
folder must hold `lymphosort evaluate`'s output for --task on the test split
(`RUN/eval/TASK-test/{metrics,predictions}.{json,npz}`, written at the end of training)
and its `history.json`. For every run the table lists test accuracy with its bootstrap
interval, the best validation value of the run's own monitor and its epoch, and the last
epoch trained; per group the means. Against `--baseline LABEL`, each other group gets the
difference of mean test accuracies with a paired bootstrap 95% interval (the same test-crop
resamples for every run, so crops that all runs get right or wrong cancel) and the
per-seed differences (runs paired by position).

    python benchmarks/seed_table.py --task t4-vs-b \\
        --group kd=runs/exp/kd/tiny-32c-e60,runs/exp/kd/tiny-32c-e60-s1 \\
        --group paper=runs/exp/kd/tiny-32c-paper-a1-e60-nostop-s0,runs/exp/kd/tiny-32c-paper-a1-e60-nostop-s1 \\
        --baseline paper --out benchmarks/results/seed_table.json

`--aim "AIM|A|B|>=X"` (repeatable) records for BENCHMARKS.md that group A's mean test
accuracy minus group B's is at least X points (paired bootstrap interval; X may be negative:
">=-1.5" reads "at most 1.5 points below B"). A one-run group (a teacher) is fine.
`--caption TEXT` also shows the groups as a small table in BENCHMARKS.md's Students section
(one row a group: runs, mean test accuracy, difference from the baseline with its interval),
for comparisons worth seeing that are not aims (a short proxy of the shipped recipe).

Nothing is trained or timed here: it only reads what the runs wrote.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from runs_table import data_label  # benchmarks/runs_table.py: the data column's label

from lymphosort.evaluate.metrics import paired_accuracy_difference
from lymphosort.train.config import load_config
from lymphosort.train.fit import best_row


def _run(run: Path, task: str) -> dict[str, Any]:
    ev = run / "eval" / f"{task}-test"
    try:
        metrics = json.loads((ev / "metrics.json").read_text())
        history = json.loads((run / "history.json").read_text())
        pred = np.load(ev / "predictions.npz")
    except OSError as exc:
        raise SystemExit(f"{run}: {exc.strerror or exc} ({exc.filename}); evaluate it with `lymphosort evaluate {run} --task {task}`")
    cfg = load_config(run / "config.yaml")
    best = best_row(history, cfg.monitor)
    if not best:
        raise SystemExit(f"{run}: history.json has no {cfg.monitor}")
    return {
        "run": str(run),
        "seed": cfg.seed,
        "accuracy": metrics["accuracy"],
        "interval": metrics["intervals"]["accuracy"],
        "roc_auc": metrics["roc_auc"],
        "monitor": cfg.monitor,
        "best_val": best[cfg.monitor],
        "best_epoch": best["epoch"],
        "last_epoch": history[-1]["epoch"],
        "data": metrics["data"],
        "_labels": pred["labels"],
        "_indices": pred["indices"],
        "_pred": pred["probs"].argmax(1),
    }


def seed_table(groups: dict[str, list[Path]], task: str, baseline: str | None = None,
               n_boot: int = 1000) -> dict[str, Any]:
    """Per-run and per-group results of `groups`; paired differences against `baseline`."""
    if baseline is not None and baseline not in groups:
        raise SystemExit(f"--baseline {baseline!r} is not a group ({', '.join(groups)})")
    runs = {label: [_run(r, task) for r in paths] for label, paths in groups.items()}
    first = next(iter(runs.values()))[0]
    for label, rs in runs.items():
        for r in rs:
            if not (np.array_equal(r["_indices"], first["_indices"]) and np.array_equal(r["_labels"], first["_labels"])):
                raise SystemExit(f"{r['run']} was tested on other crops than {first['run']}: not comparable")
            if r["data"].get("split_id") != first["data"].get("split_id"):
                raise SystemExit(f"{r['run']} has split {r['data'].get('split_id')}, {first['run']} {first['data'].get('split_id')}")
    out: dict[str, Any] = {"task": task, "data": first["data"], "baseline": baseline, "groups": {}}
    for label, rs in runs.items():
        g: dict[str, Any] = {
            "runs": [{k: v for k, v in r.items() if not k.startswith("_") and k != "data"} for r in rs],
            "mean_accuracy": float(np.mean([r["accuracy"] for r in rs])),
            "mean_best_val": float(np.mean([r["best_val"] for r in rs])),
        }
        if baseline is not None and label != baseline:
            base = runs[baseline]
            d = paired_accuracy_difference(
                first["_labels"], [r["_pred"] for r in rs], [r["_pred"] for r in base], n_boot=n_boot)
            g["vs_baseline"] = {**d, "per_seed": [a - b for a, b in zip(d["per_run_a"], d["per_run_b"])]}
        out["groups"][label] = g
    return out


def _data_text(data: dict[str, Any], task: str) -> str:
    return f"{data_label(data)}, {task} test"


def rows(table: dict[str, Any]) -> list[dict[str, Any]]:
    """One BENCHMARKS.md row a group: its runs, mean test accuracy, and its paired difference
    from the baseline group (points, 95% interval); the baseline's own cells stay empty."""
    out = []
    for label, g in table["groups"].items():
        d = g.get("vs_baseline")
        out.append({
            "setting": label, "runs": len(g["runs"]), "mean test accuracy (%)": round(100 * g["mean_accuracy"], 2),
            f"minus {table['baseline']} (points)": None if d is None else round(100 * d["difference"], 2),
            "95% interval": None if d is None else " to ".join(f"{100 * x:+.2f}" for x in d["interval"]),
        })
    return out


def aim(spec: str, groups: dict[str, list[Path]], task: str, n_boot: int, command: str) -> dict[str, Any]:
    """One BENCHMARKS.md aim: group A's mean accuracy minus group B's, paired over the test crops."""
    try:
        text, a, b, target = spec.split("|")
        least = float(target.removeprefix(">="))
        ra, rb = [_run(r, task) for r in groups[a]], [_run(r, task) for r in groups[b]]
    except (ValueError, KeyError):
        raise SystemExit(f"bad --aim {spec!r}: use 'AIM|A|B|>=X' with groups {sorted(groups)}") from None
    d = paired_accuracy_difference(ra[0]["_labels"], [r["_pred"] for r in ra], [r["_pred"] for r in rb], n_boot=n_boot)
    return {"aim": f"{text} ({len(ra)} vs {len(rb)} run(s): {100 * d['mean_a']:.2f}% vs {100 * d['mean_b']:.2f}%)",
            "target": f">= {least:+g} points", "value": round(100 * d["difference"], 2),
            "interval": [round(100 * x, 2) for x in d["interval"]], "unit": "points",
            "met": bool(100 * d["difference"] >= least), "data": _data_text(ra[0]["data"], task), "command": command,
            "machine": "2-core build VM, CPU", "area": "students"}


def markdown(table: dict[str, Any]) -> str:
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    lines = [
        "| setting | seed | test accuracy [95% CI] | ROC-AUC | best val (epoch) | last epoch |",
        "|---|---|---|---|---|---|",
    ]
    for label, g in table["groups"].items():
        for r in g["runs"]:
            lo, hi = r["interval"]
            lines.append(f"| {label} | {r['seed']} | {pct(r['accuracy'])} [{100 * lo:.2f}, {100 * hi:.2f}] | "
                         f"{r['roc_auc']:.4f} | {pct(r['best_val'])} ({r['best_epoch']}) | {r['last_epoch']} |")
        lines.append(f"| {label} | **mean** | **{pct(g['mean_accuracy'])}** | | {pct(g['mean_best_val'])} | |")
    base = table["baseline"]
    for label, g in table["groups"].items():
        d = g.get("vs_baseline")
        if d:
            lo, hi = d["interval"]
            seeds = " / ".join(f"{100 * x:+.2f}" for x in d["per_seed"])
            lines.append(f"\n{label} - {base}: mean **{100 * d['difference']:+.2f}** points, paired bootstrap 95% "
                         f"[{100 * lo:+.2f}, {100 * hi:+.2f}] (per seed {seeds})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", action="append", required=True, metavar="LABEL=RUN[,RUN...]",
                    help="one setting and its run folders, one per seed (repeatable)")
    ap.add_argument("--baseline", default=None, help="group label the others are compared with")
    ap.add_argument("--task", default="t4-vs-b")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=None, help="write the table as JSON here")
    ap.add_argument("--aim", action="append", default=[], metavar="AIM|A|B|>=X")
    ap.add_argument("--caption", default=None, help="show the groups as a table in BENCHMARKS.md (needs --baseline)")
    args = ap.parse_args(argv)
    if args.caption is not None and args.baseline is None:
        ap.error("--caption needs --baseline (the table's differences are read against it)")
    groups: dict[str, list[Path]] = {}
    for spec in args.group:
        label, sep, paths = spec.partition("=")
        if not sep or not label or not paths:
            raise SystemExit(f"bad --group {spec!r}: use LABEL=RUN[,RUN...]")
        if label in groups:
            raise SystemExit(f"group {label!r} given twice")
        groups[label] = [Path(p) for p in paths.split(",") if p]
    table = seed_table(groups, args.task, args.baseline, args.n_boot)
    command = "python benchmarks/seed_table.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    aims = [aim(spec, groups, args.task, args.n_boot, command) for spec in args.aim]
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
        doc = {**table, "command": command, **({"aims": aims} if aims else {})}
        if args.caption is not None:
            doc |= {"area": "students", "caption": f"{args.caption} ({_data_text(table['data'], args.task)})",
                    "rows": rows(table)}
        write_text_atomic(args.out, json.dumps(doc, indent=2) + "\n")
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
