"""The confound audit on two LymphoSim presets: `default` (classes share sessions: must not
be flagged) and `confounded` (each class recorded in sessions of its own, with its own lamp
level: must be flagged). For each: render a set, train the same small model on T4 vs B,
audit it (`lymphosort audit`). Writes benchmarks/results/audit_presets.json:

    .venv/bin/python benchmarks/audit_presets.py            # ~10 min on one core
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

from lymphosort.atomic import write_json_atomic
from lymphosort.data.synth import get_preset, write_lymphomnist
from lymphosort.evaluate.audit import audit_run
from lymphosort.train.config import TrainConfig
from lymphosort.train.fit import fit

def audit_preset(preset: str, root: Path, args: argparse.Namespace) -> dict:
    write_lymphomnist(root / preset, n_train=args.n_train, n_test=args.n_test, seed=args.seed,
                      preset=preset, progress=False)
    run = root / f"run-{preset}"
    cfg = TrainConfig(model=args.model, task="t4-vs-b", data_root=str(root / preset), epochs=args.epochs,
                      seed=args.seed, patience=0)
    fit(cfg, run, quiet=True)
    res = audit_run(run, root / preset, out=root / f"audit-{preset}", n_max=args.n_audit, seed=args.seed)
    res.pop("out", None)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-32-whole")
    ap.add_argument("--n-train", type=int, default=12000)
    ap.add_argument("--n-test", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--n-audit", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/audit_presets.json"))
    a = ap.parse_args()
    command = " ".join(["python benchmarks/audit_presets.py", *sys.argv[1:]])
    machine = f"2-core build VM, CPU ({platform.machine()})"
    results, aims, rows = {}, [], []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("default", "confounded"):
            r = audit_preset(preset, Path(tmp), a)
            results[preset] = r
            data = f"LymphoSim {get_preset(preset).version} {preset} (simulated), T4 vs B, {a.model} {a.epochs} epochs"
            want = preset == "confounded"
            aims.append({"area": "data", "aim": f"audit {'flags' if want else 'does not flag'} the {preset} preset",
                         "target": "flagged" if want else "not flagged",
                         "value": "flagged" if r["flagged"] else "not flagged", "met": bool(r["flagged"]) == want,
                         "data": data, "command": command, "machine": machine})
            rows.append({"preset": preset, "flagged": bool(r["flagged"]), "reasons": "; ".join(r.get("reasons", [])) or "-",
                         "accuracy": round(r["accuracy"]["as_is"]["accuracy"], 4),
                         "drop, ring blanked (points)": round(r["accuracy"]["drop_points"], 1),
                         # the lamp level also lives in the cell (intensity = level x relief): blank
                         # the ring AND bring the cell to the set's level to see a level shortcut
                         "drop, ring blanked and level matched (points)": round(100 * (
                             r["accuracy"]["as_is"]["accuracy"]
                             - r["accuracy"]["blanked_variants"]["level-matched"]["accuracy"]), 1),
                         "ring-only balanced accuracy": round(r["ring_only"]["balanced_accuracy"], 4)})
    write_json_atomic(a.out, {"command": command, "machine": machine, "config": vars(a) | {"out": str(a.out)},
                              "area": "data", "caption": "Confound audit (`lymphosort audit`) on two presets",
                              "aims": aims, "rows": rows, "results": results})
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
