"""Collect the test metrics of finished run folders into one results JSON (rows for
BENCHMARKS.md), each row with the command that made the run (read from its config.yaml).

    .venv/bin/python benchmarks/runs_table.py --caption "..." --area students \\
        --row "compact teacher=runs/v3/teacher" --row "tiny-32w kd 8 ep=runs/v3/kd/tiny-32w-e8" \\
        --row "zero-shot T8 vs B=runs/v3/teacher/zero-shot/t8-vs-b" --out benchmarks/results/students_v3.json

A row's folder holds `metrics.json` (a run, or a `transfer`/`evaluate` output folder). The
gap column is against the first row of the same task.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from lymphosort.atomic import write_json_atomic


def _row(name: str, folder: Path) -> dict[str, Any]:
    path = folder / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{name}: no metrics.json in {folder}")
    m = json.loads(path.read_text())
    lo, hi = m["intervals"]["accuracy"]
    data = m.get("data") or {}
    sim = f"LymphoSim {data.get('version', '?')} {data.get('preset', '?')} (simulated)" \
        if data.get("source") == "simulated" else str(data.get("source", "?"))
    return {"row": name, "task": m["task"], "n test": m["n"], "accuracy %": round(100 * m["accuracy"], 2),
            "95% interval": f"[{100 * lo:.2f}, {100 * hi:.2f}]", "params": m.get("params"), "MACs": m.get("macs"),
            "data": sim, "folder": str(folder)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", action="append", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--caption", required=True)
    ap.add_argument("--area", required=True)
    ap.add_argument("--command", action="append", default=[], metavar="COMMAND",
                    help="the commands that produced the runs (recorded with the table)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rows = []
    first: dict[str, float] = {}
    for spec in a.row:
        name, _, folder = spec.partition("=")
        r = _row(name, Path(folder))
        base = first.setdefault(r["task"], r["accuracy %"])
        r["gap to first row (points)"] = round(r["accuracy %"] - base, 2)
        rows.append(r)
    for r in rows:
        r.pop("folder")
    write_json_atomic(a.out, {"area": a.area, "caption": a.caption, "rows": rows, "commands": a.command,
                              "machine": f"2-core build VM, CPU ({platform.machine()})"})
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
