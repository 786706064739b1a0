"""Benchmark: training on a busy machine, torch's default thread count vs lymphosort's choice.

A short fixed training run (`train.fit` on random 64x64 crops: `--model`, one epoch of
`--steps` optimiser steps of `--batch-size`, validation on 256 crops) is timed in a fresh
process for every setting, alone and next to one competing CPU-bound process (a Python busy
loop pinned to one core, started before the busy runs), for three thread settings:

- `old`: torch's default intra-op threads (what training used before `lymphosort.threads`);
- `new`: `lymphosort.threads.configure_threads()` (torch's default capped by the CPUs this
  process may use, affinity mask and cgroup quota, less those other jobs keep busy, sampled
  at start), what `train`/`distill` now do by default;
- `1`: `--threads 1`, the override.

OMP_NUM_THREADS/MKL_NUM_THREADS are removed from the workers' environment, so `old` is the
true default. Each cell is the median of `--repeats` interleaved runs. Writes JSON: seconds
per cell, slowdown (busy / alone) per setting, the machine and the command.

Run on an otherwise idle machine (other jobs on the cores distort every cell):

    .venv/bin/python benchmarks/busy_machine.py --out benchmarks/results/busy_machine.json

Check that the script works (tiny model, a few steps; the numbers mean nothing):

    .venv/bin/python benchmarks/busy_machine.py --quick --out /tmp/busy_machine_quick.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SETTINGS = ("old", "new", "1")
BUSY_LOOP = "while True: pass"


def _worker(setting: str, model: str, steps: int, batch_size: int) -> dict[str, Any]:
    """One timed training run in this process; returns seconds and the thread count used."""
    import torch

    from lymphosort.data.lymphomnist import SplitData
    from lymphosort.threads import configure_threads
    from lymphosort.train.config import TrainConfig
    from lymphosort.train.fit import fit

    default = torch.get_num_threads()
    # "old" keeps torch's default; configuring it stops fit() from applying the new choice.
    threads = configure_threads(default if setting == "old" else None if setting == "new" else int(setting))

    def split(n: int, seed: int, name: str) -> SplitData:
        g = torch.Generator().manual_seed(seed)
        return SplitData(images=torch.randint(0, 256, (n, 64, 64), dtype=torch.uint8, generator=g),
                         labels=torch.randint(0, 2, (n,), generator=g), classes=("B", "T"), task="t4-vs-b",
                         split=name, split_id="busy-machine", provenance={"source": "random"})

    cfg = TrainConfig(model=model, epochs=1, batch_size=batch_size, patience=0, seed=0)
    train, val = split(steps * batch_size, 0, "train"), split(256, 1, "val")
    with tempfile.TemporaryDirectory(prefix="busy-machine-") as tmp:
        t0 = time.perf_counter()
        fit(cfg, Path(tmp) / "run", quiet=True, train=train, val=val, evaluate=False)
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "threads": threads, "torch_default_threads": default}


def _run_cell(setting: str, busy: bool, args: argparse.Namespace) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                      env.get("PYTHONPATH")]))
    cmd = [sys.executable, __file__, "--worker", setting, "--model", args.model, "--steps", str(args.steps),
           "--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {setting} (busy={busy}) failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _start_competitor() -> subprocess.Popen:
    """One busy loop pinned to the last CPU, running before the timed job starts (as on an
    already busy machine)."""
    competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(competitor.pid, {max(os.sched_getaffinity(0))})
    return competitor


def _machine() -> dict[str, Any]:
    from lymphosort.threads import cpu_budget

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else None
    budget = cpu_budget()
    import torch

    return {"cpu": model, "cpu_count": os.cpu_count(), "affinity": budget.affinity, "cgroup_quota_cpus": budget.quota,
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="registered model (default compact-teacher; --quick: tiny-32)")
    ap.add_argument("--steps", type=int, default=None, help="optimiser steps per run (default 40; --quick: 6)")
    ap.add_argument("--batch-size", type=int, default=None, help="default 128 (--quick: 32)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per cell, interleaved (default 3; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="check the script: tiny model, few steps, one repeat")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds one run may take")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/busy_machine.json"))
    ap.add_argument("--worker", choices=SETTINGS, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    quick = args.quick
    args.model = args.model or ("tiny-32" if quick else "compact-teacher")
    args.steps = args.steps or (6 if quick else 40)
    args.batch_size = args.batch_size or (32 if quick else 128)
    args.repeats = args.repeats or (1 if quick else 3)
    if args.worker is not None:
        print(json.dumps(_worker(args.worker, args.model, args.steps, args.batch_size)))
        return 0

    machine = _machine()
    if (machine["load_average_at_start"] or [0])[0] > 0.5:
        print(f"warning: load average {machine['load_average_at_start'][0]:.2f}: the machine is not idle, "
              "timings will be distorted", file=sys.stderr)
    runs: dict[str, dict[str, list[float]]] = {s: {"alone": [], "busy": []} for s in SETTINGS}
    threads: dict[str, dict[str, int]] = {s: {} for s in SETTINGS}
    # all alone cells, then all busy cells next to one competitor that has been running long
    # enough for the load average to show it (the settings interleaved within each phase)
    for where in ("alone", "busy"):
        competitor = _start_competitor() if where == "busy" else None
        try:
            for r in range(args.repeats):
                for setting in SETTINGS:
                    res = _run_cell(setting, where == "busy", args)
                    runs[setting][where].append(res["seconds"])
                    threads[setting][where] = res["threads"]
                    machine["torch_default_threads"] = res["torch_default_threads"]
                    print(f"[{r + 1}/{args.repeats}] {setting:>3} threads={res['threads']} {where:5}: "
                          f"{res['seconds']:.2f} s", file=sys.stderr)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    cells = {
        s: {
            "threads": threads[s],
            "alone_s": statistics.median(runs[s]["alone"]),
            "busy_s": statistics.median(runs[s]["busy"]),
            "runs_s": runs[s],
        }
        for s in SETTINGS
    }
    for c in cells.values():
        c["slowdown"] = c["busy_s"] / c["alone_s"]
    result = {
        "benchmark": "busy_machine",
        "quick": quick,
        "what": f"train.fit, {args.model}, 1 epoch of {args.steps} steps x batch {args.batch_size} on random crops "
                "(+ validation on 256); busy = one Python busy loop pinned to the last CPU of the affinity mask",
        "settings": {"old": "torch default threads", "new": "lymphosort.threads.configure_threads() (default)",
                     "1": "--threads 1"},
        "cells": cells,
        "busy_old_over_busy_new": cells["old"]["busy_s"] / cells["new"]["busy_s"],
        "machine": machine,
        "command": "python benchmarks/busy_machine.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if not quick:
        old, new = cells["old"], cells["new"]
        result["aims"] = [{
            "area": "training", "aim": "training next to one CPU-bound job: slowdown with the thread choice "
            f"(torch default: {old['slowdown']:.2f}x)", "target": f"< {old['slowdown']:.2f}x",
            "value": round(new["slowdown"], 2), "unit": "x", "met": new["busy_s"] < old["busy_s"],
            "data": f"random 64x64 crops, {args.model}, {args.steps} steps", "command": result["command"],
            "machine": f"{machine['cpu_count']}-core build VM, CPU"}]
    from lymphosort.atomic import write_json_atomic

    write_json_atomic(args.out, result)
    for s, c in cells.items():
        print(f"{s:>3} ({c['threads']} threads): alone {c['alone_s']:.2f} s, busy {c['busy_s']:.2f} s, "
              f"slowdown {c['slowdown']:.2f}x")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
