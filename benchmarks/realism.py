"""How close LymphoSim comes to the real LymphoMNIST crops: `data compare` against the 64
reference crops for the current default and, as the befores, the earlier relief models (3.3 to
3.0) and the 2.1 brightfield model.

Writes benchmarks/results/realism/reference-vs-PRESET.json (the full comparison) and
benchmarks/results/realism.json (the aims of issue 21 for BENCHMARKS.md):

    .venv/bin/python benchmarks/realism.py
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
from pathlib import Path

from lymphosort.atomic import write_json_atomic
from lymphosort.data.realism import compare_sets
from lymphosort.data.synth import get_preset

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "lymphomnist" / "crops"
COMMAND = "python benchmarks/realism.py"
#: discriminator readings per preset (other subsamples and CV splits): one reading of 64 vs 64
#: moves by ~0.03, more than the presets differ; the aim reads the first, as `data compare` does
REPEATS = 10


def _compare(preset: str, n: int, results: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        res = compare_sets(str(REFERENCE), f"sim:{preset}", tmp, n=n, repeats=REPEATS)
        results.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "montage.png", results / f"montage-{preset}.png")
    res.pop("files", None)
    res["a"]["spec"] = "../shared/reference/lymphomnist/crops"
    write_json_atomic(results / f"reference-vs-{preset}.json", res)
    return res


def _sim(preset: str) -> str:
    p = get_preset(preset)
    return f"LymphoSim {p.version} {preset} (simulated) vs 64 real crops"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="simulated crops per preset")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    a = ap.parse_args()
    if not REFERENCE.is_dir():
        raise SystemExit(f"needs the reference crops at {REFERENCE} (../shared)")
    machine = f"2-core build VM, CPU ({platform.machine()})"
    aims, rows = [], []
    for preset in ("default", "relief-3.3", "relief-3.2", "relief-3.1", "relief-3.0", "brightfield"):
        res = _compare(preset, a.n, a.results / "realism")
        stats = res["statistics"]
        within = sum(bool(s["b_within_1sd_of_a"]) for s in stats.values())
        auc = res["discriminator"]
        rows.append({"preset": f"{preset} ({get_preset(preset).version})", "statistics within 1 reference sd":
                     f"{within} of {len(stats)}", "discriminator ROC-AUC": round(auc["auc"], 3),
                     "interval": "[{:.3f}, {:.3f}]".format(*auc["ci95"]),
                     f"mean +- sd of {REPEATS} readings": "{:.3f} +- {:.3f}".format(auc["repeats"]["mean"], auc["repeats"]["sd"])})
        if preset == "default":
            aims.append({"area": "data", "aim": "every reference statistic's mean within 1 reference sd",
                         "target": f"{len(stats)} of {len(stats)}", "value": f"{within} of {len(stats)}",
                         "met": within == len(stats), "data": _sim(preset), "command": COMMAND, "machine": machine})
            aims.append({"area": "data", "aim": "real-vs-simulated discriminator ROC-AUC (upper end)",
                         "target": "<= 0.75", "value": round(auc["auc"], 3),
                         "interval": [round(v, 3) for v in auc["ci95"]], "met": auc["ci95"][1] <= 0.75,
                         "data": _sim(preset), "command": COMMAND, "machine": machine})
    write_json_atomic(a.results / "realism.json", {
        "command": COMMAND, "machine": machine, "aims": aims,
        "area": "data", "caption": "Realism: LymphoSim against 64 real LymphoMNIST crops (before: 3.3, 3.2, 3.1, 3.0 and 2.1)", "rows": rows})
    print(json.dumps({"aims": aims, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
