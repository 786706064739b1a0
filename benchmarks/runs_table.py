"""Collect the test metrics of finished run folders into one results JSON (rows for
BENCHMARKS.md), each row with the command that made the run (read from its config.yaml).

    .venv/bin/python benchmarks/runs_table.py --caption "..." --area students \\
        --row "compact teacher=runs/v3/teacher" --row "tiny-32-whole kd 8 ep=runs/v3/kd/tiny-32w-e8" \\
        --row "zero-shot T8 vs B=runs/v3/teacher/zero-shot/t8-vs-b" --out benchmarks/results/students_v3.json

A row's folder holds `metrics.json` (a run, or a `transfer`/`evaluate` output folder). The
gap column is against the first row of the same task. A run folder's command is rebuilt from
its config.yaml (the flags that differ from the command's defaults).

`--aim "AIM|ROW|TARGET"` (repeatable) adds an aim for BENCHMARKS.md on row ROW's test
accuracy; TARGET is ">=96" (percent), "96..99" (percent, inclusive), "loss<=1 vs REF"
(points below row REF) or "below 4..10 vs REF" (points below row REF, inclusive).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from lymphosort.atomic import write_json_atomic


def data_label(data: dict[str, Any]) -> str:
    """The data column of a row from a run's data provenance: "LymphoSim 3.3 default (simulated)"
    for simulated data, else its source."""
    if data.get("source") == "simulated":
        return f"LymphoSim {data.get('version', '?')} {data.get('preset', '?')} (simulated)"
    return str(data.get("source", "?"))


def _row(name: str, folder: Path) -> dict[str, Any]:
    path = folder / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{name}: no metrics.json in {folder}")
    m = json.loads(path.read_text())
    if "task" not in m and (folder / "transfer.json").is_file():  # a fine-tuning folder: task and data beside
        m["task"] = json.loads((folder / "transfer.json").read_text())["task"]
        m["data"] = json.loads((folder / "model.json").read_text()).get("data") or {}
    lo, hi = m["intervals"]["accuracy"]
    return {"row": name, "task": m["task"], "n test": m["n"], "accuracy %": round(100 * m["accuracy"], 2),
            "_interval": [round(100 * lo, 2), round(100 * hi, 2)],
            "95% interval": f"[{100 * lo:.2f}, {100 * hi:.2f}]", "params": m.get("params"), "MACs": m.get("macs"),
            "data": data_label(m.get("data") or {}), "folder": str(folder)}


def run_command(folder: Path) -> str | None:
    """The `lymphosort train|distill` command of a run folder, from its resolved config.yaml;
    for a `transfer zero-shot` or `transfer finetune` folder, that command from its record."""
    if (folder / "transfer.json").is_file():
        from lymphosort.models.checkpoint import read_card
        from lymphosort.transfer.finetune import DEFAULT_LR

        t = json.loads((folder / "transfer.json").read_text())
        root = t.get("data_root") or read_card(folder).data_root
        cfg = t.get("config") or {}
        # the knobs that differ from the command's defaults (an older record has no config)
        knobs = [*(["--epochs", str(cfg["epochs"])] if cfg.get("epochs") else []),
                 *(["--lr", f"{cfg['lr']:g}"] if cfg.get("lr") not in (None, DEFAULT_LR.get(t["mode"])) else [])]
        return " ".join(["lymphosort transfer finetune", t["source_run"], "--task", t["task"], "--mode", t["mode"],
                         "--shots", str(t["shots"]), *knobs, *(["--data-root", str(root)] if root else []),
                         "--out", str(folder)])
    metrics = folder / "metrics.json"
    m = json.loads(metrics.read_text()) if metrics.is_file() else {}
    zs = m.get("zero_shot")
    if zs:
        cfg = zs.get("config") or {}
        return " ".join(["lymphosort transfer zero-shot", zs["source_run"], "--task", m["task"],
                         *(["--data-root", str(cfg["data_root"])] if cfg.get("data_root") else []),
                         *([] if cfg.get("latency", True) else ["--no-latency"])])
    if not (folder / "config.yaml").is_file():
        return None
    from lymphosort.config import command_flags
    from lymphosort.train.config import DistillConfig, load_config

    cfg = load_config(folder / "config.yaml")
    if cfg.augment:  # recorded whole since 2026-12-07: print only what differs from today's default
        from lymphosort.data.transforms import AugmentConfig

        default = AugmentConfig().to_dict()
        cfg = cfg.replace(augment={k: v for k, v in cfg.augment.items() if default.get(k) != v})
    verb = "distill" if isinstance(cfg, DistillConfig) else "train"
    return " ".join(["lymphosort", verb, "--out", str(folder), *command_flags(cfg)])


def aim(spec: str, rows: dict[str, dict[str, Any]], machine: str, commands: list[str]) -> dict[str, Any]:
    """One BENCHMARKS.md aim from `--aim "AIM|ROW|TARGET"` (see the module docstring)."""
    import re

    try:
        text, row, target = spec.split("|")
        r = rows[row]
    except (ValueError, KeyError):
        raise SystemExit(f"bad --aim {spec!r}: use 'AIM|ROW|TARGET' with ROW one of {sorted(rows)}") from None
    acc, lo, hi = r["accuracy %"], *r["_interval"]
    num = r"(\d+(?:\.\d+)?)"
    vs = re.fullmatch(rf"(loss<=|below ){num}(?:\.\.{num})? vs (.+)", target)
    if vs:
        ref = rows[vs.group(4)]
        value, interval, unit = round(ref["accuracy %"] - acc, 2), None, "points"
        a, b = float(vs.group(2)), float(vs.group(3) or vs.group(2))
        met = value <= a if vs.group(1) == "loss<=" else a <= value <= b
        shown = f"<= {a:g} points below {vs.group(4)}" if vs.group(1) == "loss<=" else f"{a:g}-{b:g} points below {vs.group(4)}"
        text += f" ({acc:.2f}% vs {ref['accuracy %']:.2f}%)"
    elif target.startswith(">="):
        value, interval, unit, shown = acc, [lo, hi], "%", f">= {float(target[2:]):g}%"
        met = acc >= float(target[2:])
    elif ".." in target:
        a, b = map(float, target.split(".."))
        value, interval, unit, shown, met = acc, [lo, hi], "%", f"{a:g}-{b:g}%", a <= acc <= b
    else:
        raise SystemExit(f"bad --aim target {target!r}")
    out = {"area": None, "aim": text, "target": shown, "value": value, "unit": unit, "met": bool(met),
           "data": f"{r['data']}, {r['task']} test", "command": r["command"] or "; ".join(commands),
           "machine": machine}
    if interval:
        out["interval"] = interval
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", action="append", required=True, metavar="NAME=FOLDER")
    ap.add_argument("--caption", required=True)
    ap.add_argument("--area", required=True)
    ap.add_argument("--command", action="append", default=[], metavar="COMMAND",
                    help="the commands that produced the runs (recorded with the table)")
    ap.add_argument("--aim", action="append", default=[], metavar="AIM|ROW|TARGET")
    ap.add_argument("--machine", default=f"2-core build VM, CPU ({platform.machine()})")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    rows = []
    first: dict[str, float] = {}
    for spec in a.row:
        name, _, folder = spec.partition("=")
        r = _row(name, Path(folder))
        r["command"] = run_command(Path(folder))
        base = first.setdefault(r["task"], r["accuracy %"])
        r["gap to first row (points)"] = round(r["accuracy %"] - base, 2)
        rows.append(r)
    aims = [aim(spec, {r["row"]: r for r in rows}, a.machine, a.command) for spec in a.aim]
    for x in aims:
        x["area"] = a.area
    for r in rows:
        r.pop("folder")
        r.pop("_interval")
    doc = {"area": a.area, "caption": a.caption, "rows": rows, "commands": a.command, "machine": a.machine}
    if aims:
        doc["aims"] = aims
    write_json_atomic(a.out, doc)
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
