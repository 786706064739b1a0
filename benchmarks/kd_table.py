"""Benchmark: teacher / students / distillation methods, one table.

Each row is one `lymphosort train|distill` command, run in this process through the CLI
(so the row's command is exactly what a user types) unless its run folder already holds
`metrics.json` (the script resumes). Then every model's latency is measured side by side
in this one process (interleaved rounds, batch 1 and 256, one intra-op thread: one core,
as a sorter would pin it) and ratios are taken against the teacher.

    python benchmarks/kd_table.py --teacher runs/exp/teacher --data-root data/lymphosim \
        --out runs/exp/kd --epochs 12 \
        --row tiny-32:kd --row tiny-32:paper --row tiny-32:none --row compact-student:kd \
        --row train:paper-student2 --row train:resnet18

A row is `STUDENT:METHOD` (distilled from --teacher) or `train:MODEL` (labels only, no
teacher). Output: OUT/kd_table.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch


def _row_command(row: str, args: argparse.Namespace) -> tuple[str, list[str], Path]:
    kind, _, name = row.partition(":")
    if not name:
        raise SystemExit(f"bad --row {row!r}: use STUDENT:METHOD or train:MODEL")
    common = ["--data-root", str(args.data_root), "--epochs", str(args.epochs), "--seed", str(args.seed), "--quiet"]
    if args.max_train_samples:
        common += ["--max-train-samples", str(args.max_train_samples)]
    if kind == "train":
        out = args.out / f"train-{name}"
        return f"{name} (labels only)", ["train", "--model", name, "--task", args.task, "--out", str(out), *common], out
    student, method = kind, name
    qat: list[str] = []
    if "@q" in method:  # tiny-32:kd@q8 -> QAT student
        method, bits = method.split("@q")
        qat = ["--qat", bits]
    out = args.out / f"{student}-{method}{'-q' + qat[1] if qat else ''}"
    cmd = ["distill", "--teacher", str(args.teacher), "--student", student, "--method", method, *qat, "--out", str(out), *common]
    return f"{student} ({method}{', ' + qat[1] + '-bit QAT' if qat else ''})", cmd, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True, help="trained teacher run folder")
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--task", default="t4-vs-b")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-train-samples", type=int, default=None)
    ap.add_argument("--row", action="append", default=[], help="STUDENT:METHOD or train:MODEL (repeatable)")
    ap.add_argument("--latency-repeats", type=int, default=30)
    args = ap.parse_args()

    from lymphosort.cli import main as cli
    from lymphosort.evaluate.efficiency import count_macs, count_params, measure_latency
    from lymphosort.train.checkpoint import load_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    runs = {"teacher": ("teacher", None, args.teacher)}
    for spec in args.row:
        label, cmd, out = _row_command(spec, args)
        if not (out / "metrics.json").is_file():
            print(f"== {label}: lymphosort {' '.join(cmd)}", flush=True)
            if cli(cmd) != 0:
                raise SystemExit(f"row {spec} failed")
        runs[spec] = (label, cmd, out)

    models = {}
    for key, (label, cmd, out) in runs.items():
        model, card = load_checkpoint(out)
        m = json.loads((out / "metrics.json").read_text())
        models[key] = model
        rows.append(
            {
                "row": key,
                "label": label if key != "teacher" else f"{card.model} (teacher)",
                "model": card.model,
                "method": card.config.get("method", "none"),
                "command": "lymphosort " + " ".join(cmd) if cmd else _teacher_command(card, out),
                "data": card.data,
                "split_id": card.split_id,
                "input_size": card.spec["input_size"] if isinstance(card.spec, dict) else card.spec.input_size,
                "accuracy": m["accuracy"],
                "accuracy_ci": m["intervals"]["accuracy"],
                "roc_auc": m.get("roc_auc"),
                "n_test": m["n"],
                "params": count_params(model),
                "macs": count_macs(model),
            }
        )

    lat = measure_latency(models, (1, 256), threads=1, repeats=args.latency_repeats)
    t = lat["models"]["teacher"]
    for r in rows:
        ms = lat["models"][r["row"]]
        r["latency_ms_b1"] = ms[1]["median_ms"]
        r["latency_ms_b256_per_image"] = ms[256]["ms_per_image"]
        r["speedup_b1"] = t[1]["median_ms"] / ms[1]["median_ms"]
        r["speedup_b256"] = t[256]["median_ms"] / ms[256]["median_ms"]
        r["macs_vs_teacher"] = r["macs"] / rows[0]["macs"]
        r["acc_vs_teacher_points"] = 100 * (r["accuracy"] - rows[0]["accuracy"])

    report = {
        "task": args.task,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "latency_threads": 1},
        "epochs": args.epochs,
        "rows": rows,
        "latency": lat,
    }
    (args.out / "kd_table.json").write_text(json.dumps(report, indent=2, default=str))
    print(markdown(rows))
    return 0


def _teacher_command(card: Any, out: Path) -> str:
    cfg = card.config
    return (
        f"lymphosort train --model {card.model} --task {card.task} --data-root {cfg.get('data_root')} "
        f"--out {out} --epochs {cfg.get('epochs')} --seed {cfg.get('seed')}"
    )


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model (method) | input | test acc [95% CI] | ROC-AUC | params | MACs | vs teacher: MACs | batch-1 latency | speed-up b1 / b256 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["accuracy_ci"]
        lines.append(
            f"| {r['label']} | {r['input_size']} | {100 * r['accuracy']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] "
            f"| {r['roc_auc']:.4f} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | {100 * r['macs_vs_teacher']:.1f}% "
            f"| {r['latency_ms_b1']:.3f} ms | {r['speedup_b1']:.1f}x / {r['speedup_b256']:.1f}x |"
        )
    lines.append("")
    lines.append("Commands:")
    for r in rows:
        lines.append(f"- {r['label']}: `{r['command']}`")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
