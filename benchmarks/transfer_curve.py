"""Transfer benchmark: T4-vs-B teacher and student, zero-shot and few-shot on T8 vs B.

Writes OUT/transfer_curve.json (and each grid's curve.png / table.md) with:
  * zero-shot T8 vs B of the teacher and of the distilled student (intervals, threshold
    from val, temperature scaling);
  * the few-shot grid (K x mode x seed) of the teacher and of the student (route A:
    fine-tune the student directly);
  * route B: fine-tune the teacher (partial) and re-distil into the student on the same
    shots, for the K values given by --redistill-shots;
  * the "done when" checks of the transfer issue, computed from the above.

Long: run it where the lead runs trainings, e.g.
  .venv/bin/python benchmarks/transfer_curve.py --teacher runs/exp/teacher \
      --student runs/exp/student --data-root data/lymphosim --out runs/transfer
Every grid cell is its own run folder and is skipped when already done, so an interrupted
run continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from lymphosort.models.checkpoint import jsonable
from lymphosort.transfer.fewshot import few_shot
from lymphosort.transfer.finetune import FinetuneConfig, finetune, redistill
from lymphosort.transfer.shots import lymphomnist_data, parse_shots


def _acc(m: dict[str, Any] | None) -> float | None:
    return None if m is None else m.get("accuracy")


def _row(curve: dict[str, Any], mode: str, k: str) -> dict[str, Any] | None:
    return next((r for r in curve["rows"] if r["mode"] == mode and r["shots"] == k), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", type=Path, required=True, help="T4-vs-B teacher run folder")
    ap.add_argument("--student", type=Path, default=None, help="distilled T4-vs-B student run folder")
    ap.add_argument("--data-root", default="data/lymphosim")
    ap.add_argument("--task", default="t8-vs-b")
    ap.add_argument("--out", type=Path, default=Path("runs/transfer"))
    ap.add_argument("--shots", nargs="+", default=["5", "10", "25", "100", "all"])
    ap.add_argument("--modes", nargs="+", default=["linear", "partial", "full"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--redistill-shots", nargs="*", default=["25"], help="K values for route B (none: skip)")
    ap.add_argument("--epochs", type=int, default=None, help="partial/full epochs (default: finetune's)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    data = lymphomnist_data(args.data_root, args.task)
    base = FinetuneConfig(epochs=args.epochs)
    shots = [parse_shots(s) for s in args.shots]
    result: dict[str, Any] = {"task": args.task, "data_root": args.data_root, "seeds": args.seeds}
    t0 = time.perf_counter()
    curves = {"teacher": few_shot(args.teacher, data, args.out / "teacher", shots=shots, modes=args.modes,
                                  seeds=args.seeds, base=base)}
    if args.student is not None:
        curves["student"] = few_shot(args.student, data, args.out / "student", shots=shots, modes=args.modes,
                                     seeds=args.seeds, base=base)
        route_b = []
        for k in [parse_shots(s) for s in args.redistill_shots]:
            for seed in args.seeds:
                cfg = FinetuneConfig(mode="partial", shots=k, seed=seed, epochs=args.epochs)
                cell = args.out / "redistill" / f"k{k or 'all'}-s{seed}"
                if (cell / "transfer.json").is_file():
                    route_b.append(json.loads((cell / "transfer.json").read_text()))
                    continue
                teacher_cell = args.out / "teacher" / "runs" / f"partial-k{k or 'all'}-s{seed}"
                if not (teacher_cell / "transfer.json").is_file():
                    finetune(args.teacher, data, cfg, teacher_cell, resume=True)
                route_b.append(redistill(teacher_cell, args.student, data, cfg, cell, resume=True))
        result["redistill"] = route_b
    result["curves"] = {k: {kk: v for kk, v in c.items() if kk != "config"} for k, c in curves.items()}
    result["seconds"] = time.perf_counter() - t0

    zt = curves["teacher"].get("zero_shot")
    checks: dict[str, Any] = {"teacher_zero_shot_acc": _acc(zt), "teacher_zero_shot_ge_0.85": (_acc(zt) or 0) >= 0.85}
    if "student" in curves:
        zs = curves["student"].get("zero_shot")
        checks["student_zero_shot_acc"] = _acc(zs)
        if zt and zs:
            checks["student_within_2_points"] = abs(zt["accuracy"] - zs["accuracy"]) <= 0.02
    best25 = max((r["accuracy"]["mean"] for r in curves["teacher"]["rows"] if r["shots"] == "25"), default=None)
    best_all = max((r["accuracy"]["mean"] for r in curves["teacher"]["rows"] if r["shots"] == "all"), default=None)
    if best25 is not None and zt:
        checks["k25_best_acc"] = best25
        checks["k25_beats_zero_shot_by_3_points"] = best25 - zt["accuracy"] >= 0.03
    if best_all is not None:
        checks["all_best_acc"] = best_all
        checks["all_ge_0.96"] = best_all >= 0.96
    if "student" in curves and result.get("redistill"):
        a = [_row(curves["student"], "partial", c["shots"]) for c in result["redistill"]]
        checks["student_route_a_partial_acc"] = {c["shots"]: r["accuracy"]["mean"] for c, r in zip(result["redistill"], a) if r}
        by_k: dict[str, list[float]] = {}
        for c in result["redistill"]:
            by_k.setdefault(c["shots"], []).append(c["test"]["accuracy"])
        checks["student_route_b_redistill_acc"] = {k: sum(v) / len(v) for k, v in by_k.items()}
    result["checks"] = checks
    args.out.mkdir(parents=True, exist_ok=True)
    from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
    write_text_atomic(args.out / "transfer_curve.json", json.dumps(jsonable(result), indent=2) + "\n")
    print(json.dumps(jsonable(checks), indent=2))
    for name in curves:
        print((args.out / name / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
