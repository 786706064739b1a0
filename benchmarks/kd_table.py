"""Benchmark: teacher / students / distillation methods, one table.

Each row is one `lymphosort train|distill` command, run in this process through the CLI
(so the row's command is exactly what a user types) unless its run folder already holds
`metrics.json` (the script resumes). Then `evaluate.compare.compare_runs` measures every
model side by side in this one process (interleaved rounds, batch 1 and 256, one
intra-op thread) and takes ratios against the teacher.

    python benchmarks/kd_table.py --teacher runs/exp/teacher --data-root data/lymphosim \\
        --out runs/exp/kd --epochs 12 \\
        --row tiny-32:kd --row tiny-32:paper --row tiny-32:none --row compact-student:kd \\
        --row tiny-32:kd@q8 --row train:paper-student2

A row is `STUDENT:METHOD` (distilled from --teacher; `@qN` adds N-bit QAT, fine-tuned from
the `STUDENT:METHOD` row when that row is listed too) or `train:MODEL` (labels only, no teacher). Output: OUT/kd_table.json and a markdown table.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from lymphosort.cli import main as cli
from lymphosort.evaluate.compare import RunRow, compare_runs, markdown_table
from lymphosort.models.checkpoint import read_card
from lymphosort.train.config import load_config


def train_command(model: str, out: Path | str, *, task: str, data_root: Path | str, epochs: int, seed: int = 0,
                  max_train_samples: int | None = None, batch_size: int | None = None) -> list[str]:
    """`lymphosort train ...` arguments (labels only)."""
    cmd = ["train", "--model", model, "--task", task, "--out", str(out)]
    return cmd + _common(data_root, epochs, seed, max_train_samples, batch_size)


def distill_command(teacher: Path | str, student: str, method: str, out: Path | str, *, data_root: Path | str,
                    epochs: int, seed: int = 0, qat_bits: int | None = None, max_train_samples: int | None = None,
                    batch_size: int | None = None, init_from: Path | str | None = None,
                    lr: float | None = None) -> list[str]:
    """`lymphosort distill ...` arguments; `qat_bits` trains the Brevitas fixed-point twin,
    starting from the float student in run `init_from` when given."""
    cmd = ["distill", "--teacher", str(teacher), "--student", student, "--method", method]
    if qat_bits:
        cmd += ["--qat", str(qat_bits)]
    if init_from:
        cmd += ["--init-from", str(init_from)]
    if lr:
        cmd += ["--lr", f"{lr:g}"]
    return cmd + ["--out", str(out)] + _common(data_root, epochs, seed, max_train_samples, batch_size)


def _common(data_root: Path | str, epochs: int, seed: int, max_train_samples: int | None, batch_size: int | None) -> list[str]:
    cmd = ["--data-root", str(data_root), "--epochs", str(epochs), "--seed", str(seed), "--quiet"]
    if max_train_samples:
        cmd += ["--max-train-samples", str(max_train_samples)]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    return cmd


def _row(spec: str, args: argparse.Namespace) -> tuple[str, list[str], Path]:
    kind, _, name = spec.partition(":")
    if not name:
        raise SystemExit(f"bad --row {spec!r}: use STUDENT:METHOD or train:MODEL")
    common: dict = dict(data_root=args.data_root, epochs=args.epochs, seed=args.seed, max_train_samples=args.max_train_samples)
    if kind == "train":
        out = args.out / f"train-{name}"
        return f"{name} (labels only)", train_command(name, out, task=args.task, **_as_run(out, common)), out
    method, _, bits = name.partition("@q")
    qat = int(bits) if bits else None
    out = args.out / f"{kind}-{method}{f'-q{qat}' if qat else ''}"
    # A QAT row fine-tunes the float row of the same student and method when that row is listed.
    init = args.out / f"{kind}-{method}" if qat and f"{kind}:{method}" in args.row else None
    if init is not None:
        common.update(epochs=args.qat_epochs or args.epochs, lr=args.qat_lr)
    settings = _as_run(out, {**common, "init_from": init})  # a finished row keeps what it really used
    if settings["init_from"] is None:
        settings["lr"] = None  # only a fine-tuning row names its learning rate
    label = f"{kind} ({method}{f', {qat}-bit QAT' if qat else ''}{', from the float student' if settings['init_from'] else ''})"
    return label, distill_command(args.teacher, kind, method, out, qat_bits=qat, **settings), out


def _as_run(out: Path, settings: dict) -> dict:
    """`settings` with the values a finished run in `out` really used (so a resumed table
    lists the command that produced each row, not this invocation's flags)."""
    saved = out / "config.yaml"
    if not saved.is_file():
        return settings
    cfg = load_config(saved)
    return {k: (getattr(cfg, k) if k != "data_root" and hasattr(cfg, k) else v) for k, v in settings.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True, help="trained teacher run folder")
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--task", default="t4-vs-b")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-train-samples", type=int, default=None)
    ap.add_argument("--row", action="append", default=[], help="STUDENT:METHOD[@qN] or train:MODEL (repeatable)")
    ap.add_argument("--latency-repeats", type=int, default=30)
    ap.add_argument("--qat-epochs", type=int, default=None,
                    help="epochs of a QAT row that fine-tunes its float row (default: --epochs)")
    ap.add_argument("--qat-lr", type=float, default=None, help="learning rate of such a fine-tuning QAT row")
    ap.add_argument("--onnxruntime", action="store_true",
                    help="also time batch 1 in ONNX Runtime (one thread), side by side")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    card = read_card(args.teacher)
    cfg = card.config
    teacher_cmd = (
        f"lymphosort train --model {card.model} --task {card.task} --data-root {cfg.get('data_root')} "
        f"--out {args.teacher} --epochs {cfg.get('epochs')} --seed {cfg.get('seed')}"
    )
    rows = [RunRow("teacher", f"{card.model} (teacher)", args.teacher, teacher_cmd)]
    for spec in args.row:
        label, cmd, out = _row(spec, args)
        if not (out / "metrics.json").is_file():
            print(f"== {label}: lymphosort {' '.join(cmd)}", flush=True)
            if cli(cmd) != 0:
                raise SystemExit(f"row {spec} failed")
        rows.append(RunRow(spec, label, out, "lymphosort " + " ".join(cmd)))

    table = compare_runs(rows, latency_repeats=args.latency_repeats, onnxruntime=args.onnxruntime)
    table.update(task=args.task, epochs=args.epochs,
                 machine={"platform": platform.platform(), "torch": torch.__version__, "latency_threads": 1})
    from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
    write_text_atomic(args.out / "kd_table.json", json.dumps(table, indent=2, default=str))
    print(markdown_table(table["rows"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
