"""The open-RTL rows and aims of BENCHMARKS.md, built from `lymphosort export rtl` records.

Each design's rtl.json (copied to benchmarks/results/rtl/NAME.json) holds what the flow
measured: bit-exact crops, cycles, yosys resources, nextpnr's routed Fmax, and the test
accuracy of the QAT twin and of its float parent (`accuracy`). This script turns them into
one table (benchmarks/results/rtl.json) with the aims of issue 23:

    python benchmarks/rtl_table.py benchmarks/results/rtl/*.json --out benchmarks/results/rtl.json

benchmarks/results/rtl/ holds the records of the current LymphoSim version; a re-baseline moves
the earlier ones to benchmarks/results/v<VERSION>/rtl/ (history, as for every other table).

A record without `accuracy` (made before the flow wrote it) gets it from its run folder when
that folder is on this machine (`--runs-root` maps the recorded run path), and the record file
is updated so the number survives where the runs do not.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from runs_table import data_label, run_command

from lymphosort.atomic import write_json_atomic
from lymphosort.export.rtl.flow import twin_accuracy

ROOT = Path(__file__).resolve().parents[1]
MACHINE = "2-core build VM, CPU (one core); part {part}"
DEFAULT = ("tiny-32-whole", "tiny-32w")  # the default student (and its former name)
DEFAULT_CHANNELS = (8, 16, 24)  # its conv widths (records made before they were kept: these)


def _rel(p: str | None) -> str | None:
    if not p:
        return p
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return p


def command(rec: dict[str, Any]) -> str:
    """The `lymphosort export rtl` command that made a record (from its config)."""
    cfg = rec.get("config")
    if not cfg:
        return "lymphosort export rtl QAT_RUN --out DIR --synth --pnr (record made before the flow kept its config)"
    parts = ["lymphosort export rtl", _rel(rec["run"]), "--out DIR"]
    if cfg.get("data_root"):
        parts.append(f"--data-root {_rel(cfg['data_root'])}")
    parts += [f"--arch {cfg['arch']}", f"--pixels-per-cycle {cfg['pixels_per_cycle']}",
              f"--latency-cutoff {cfg['latency_cutoff']:g}", f"--n-check {cfg['n_check']}"]
    parts += [flag for flag, on in (("--synth", cfg.get("synth")), ("--pnr", cfg.get("pnr"))) if on]
    if cfg.get("pnr") and cfg.get("pnr_seed") is not None:
        parts.append(f"--pnr-seed {cfg['pnr_seed']}")
    return " ".join(str(p) for p in parts)


def _bits(rec: dict[str, Any]) -> int | None:
    tail = rec["model"].rsplit("-q", 1)
    return int(tail[1]) if len(tail) == 2 and tail[1].isdigit() else None


def _widths(rec: dict[str, Any]) -> str:
    """'4-bit', or the per-layer widths of a mixed-width twin (records from before they were kept: the name's)."""
    w = rec.get("widths") or {}
    weights, acts = w.get("weights") or [], w.get("activations") or []
    if weights and len(set(weights) | set(acts)) > 1:
        return f"mixed-width (weights {'/'.join(map(str, weights))}, activations {'/'.join(map(str, acts))} bits)"
    return f"{weights[0] if weights else _bits(rec)}-bit"


def _narrower(rec: dict[str, Any]) -> str | None:
    """'channels 8/8/16' for a default-student design built with other conv widths (None: the default's)."""
    ch = tuple(rec.get("channels") or DEFAULT_CHANNELS)
    return None if ch == DEFAULT_CHANNELS else "channels " + "/".join(map(str, ch))


def _design(rec: dict[str, Any]) -> str:
    view = "whole crop" if rec["model"].startswith(DEFAULT) else "centre window"
    model, widths = rec["model"], _widths(rec)
    if widths.startswith("mixed"):  # no "-q<bits>" model, whatever registered name it was built from
        model, view = f"{model.rsplit('-q', 1)[0]} twin", f"{view}, {widths}"
    if _narrower(rec):
        view = f"{view}, {_narrower(rec)}"
    return (f"{model} ({view}), --arch {rec.get('arch', 'stream')}, "
            f"da4ml latency cutoff {rec.get('latency_cutoff', 5):g}")


def _accuracy(rec: dict[str, Any], path: Path, runs_root: dict[str, str]) -> dict[str, Any] | None:
    run = rec.get("run", "")
    for old, new in runs_root.items():
        if run.startswith(old):
            run = new + run[len(old):]
    here = bool(run) and Path(run).is_dir()
    changed = False
    if rec.get("accuracy") is None and here and (acc := twin_accuracy(Path(run))) is not None:
        rec["accuracy"], changed = acc, True
    twin = (rec.get("accuracy") or {}).get("twin")
    if twin is not None and "command" not in twin and here and (cmd := run_command(Path(_rel(run) or run))):
        twin["command"], changed = cmd.replace(f"{ROOT}/", ""), True  # how the twin was trained: the accuracy aim's command
    if changed:
        write_json_atomic(path, rec)
    return rec.get("accuracy")


def _pct(acc: dict[str, Any] | None, key: str) -> float | None:
    side = (acc or {}).get(key) or {}
    return None if side.get("accuracy") is None else round(100 * side["accuracy"], 2)


def _logic_cells(pr: dict[str, Any]) -> dict[str, int] | None:
    """nextpnr's logic-cell use: routed when it ran, else as packed."""
    return (pr.get("utilisation") or pr.get("packed") or {}).get("TRELLIS_COMB")


def row(rec: dict[str, Any], acc: dict[str, Any] | None) -> dict[str, Any]:
    pr = rec.get("place_and_route") or {}
    packed = _logic_cells(pr)
    twin, flt = _pct(acc, "twin"), _pct(acc, "float")
    out = {
        "design": _design(rec),
        "pixels a cycle": rec.get("pixels_per_cycle") or 1,
        "bit-exact": f"{rec['n_checked'] - (rec['mismatches'] or 0)} of {rec['n_checked']}",
        "latency cycles": rec["latency_cycles"], "interval cycles": rec["initiation_interval"],
        "LUT4 (yosys)": rec["luts"], "FF": rec["ffs"], "DSP": rec["dsps"], "BRAM": rec.get("brams"),
        "logic cells (nextpnr)": (f"{packed['used']:,} of {packed['available']:,} "
                                  f"({100 * packed['used'] / packed['available']:.0f}%)") if packed else None,
        "routed Fmax MHz": rec["fmax_mhz"], "latency us": rec["latency_us"],
        "twin accuracy %": twin, "float accuracy %": flt, "data": _data(rec),
        "part": rec.get("part"), "command": command(rec),
    }
    notes = [_unrouted(pr, "")] if not pr.get("ran") and pr.get("reason") else []
    out["note"] = "; ".join(notes + ([rec["note"]] if rec.get("note") else [])) or None
    return out


def aims(recs: list[dict[str, Any]], accs: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Issue 23's aims on the default student's designs (the others are history rows)."""
    variants = [(r, a) for r, a in zip(recs, accs) if r["model"].startswith(DEFAULT)]
    mine = [(r, a) for r, a in variants if not _narrower(r)]  # the default student itself
    routed = sorted((r for r, _ in mine if r.get("latency_us")), key=lambda r: r["latency_us"])

    def loss(r: dict[str, Any]) -> float | None:
        """Twin minus float parent, points: comparable across data versions, unlike accuracies."""
        tw, fl = _pct(accs[recs.index(r)], "twin"), _pct(accs[recs.index(r)], "float")
        return None if tw is None or fl is None else round(tw - fl, 2)

    out: list[dict[str, Any]] = []

    def aim(text: str, target: str, value: Any, met: bool, rec: dict[str, Any], unit: str | None = None,
            cmd: str | None = None, data: str | None = None) -> None:
        a = {"area": "deployment", "aim": text, "target": target, "value": value, "met": met,
             "data": data or f"{_data(rec)}, test crops, {rec['n_checked']:,} checked bit for bit",
             "command": cmd or command(rec), "machine": MACHINE.format(part=rec.get("part"))}
        if unit:
            a["unit"] = unit
        out.append(a)

    if routed:
        # the deployable design: of those within 7 us on the newest data version that has one
        # (a re-baseline replaces the older rows' aims), the twin closest to its float parent,
        # then the fastest
        fit = _of_newest([r for r in routed if r["latency_us"] <= 7]) or routed[:1]
        best = max(fit, key=lambda r: (-abs(loss(r)) if loss(r) is not None else -1e9, -r["latency_us"]))
        # the latency table's best point: any routed design of the default student's family (a
        # narrower one named as such) on the newest data version that has a design within 7 us
        family = [r for r, _ in variants if r.get("latency_us")]
        top = max((_version(r) for r in family if r["latency_us"] <= 7), default=_version(best))
        fastest = min((r for r in family if _version(r) == top), key=lambda r: r["latency_us"])
        acc = accs[recs.index(best)]
        tw, fl = _pct(acc, "twin"), _pct(acc, "float")
        cost = f"; its {_widths(best)} twin {tw}% vs float {fl}%" if tw is not None and fl is not None else ""
        aim(f"streaming RTL of the default student placed and routed whole on an open-toolchain part, latency at "
            f"routed Fmax (the twin closest to its float parent within it: {best['model']} from {_rel(best['run'])}, "
            f"{best.get('pixels_per_cycle') or 1} pixels a cycle, the whole 64x64 crop in, shrunk in hardware{cost})", "<= 7 us", best["latency_us"], best["latency_us"] <= 7, best, "us")
        shape = f" with {_narrower(fastest)}" if _narrower(fastest) else ""
        # the fewest cycles measured (routed or not) at more pixels a cycle: what the next step
        # towards 1 us costs in area (a design at the same width is no next step)
        few = min((r for r, _ in variants if r.get("latency_cycles")), key=lambda r: r["latency_cycles"])
        cells = _logic_cells(few.get("place_and_route") or {})
        wider = (few.get("pixels_per_cycle") or 1) > (fastest.get("pixels_per_cycle") or 1)
        beyond = (f"; {few.get('pixels_per_cycle') or 1} pixels a cycle takes {few['latency_cycles']} cycles but packs "
                  f"into {100 * cells['used'] / cells['available']:.0f}% of the part's logic cells"
                  if wider and few["latency_cycles"] < fastest["latency_cycles"] and cells else "")
        aim(f"low-latency best point of the default student's RTL ({fastest['model']}{shape}, "
            f"{fastest.get('pixels_per_cycle') or 1} pixels a cycle, routed whole{beyond}; 1 us would need a 64-pixel "
            "row a clock at ~140 MHz: docs/fpga.md)", "<= 1 us",
            fastest["latency_us"], fastest["latency_us"] <= 1, fastest, "us")
        if tw is not None and fl is not None:
            aim(f"the {_widths(best)} twin of that design vs its float student (test accuracy {tw}% vs {fl}%)",
                "within 0.5 points", loss(best), abs(loss(best)) <= 0.5, best, "points",
                cmd=((acc or {}).get("twin") or {}).get("command"),
                data=f"{_data(best)}, test split ({acc['twin']['n']:,} crops)")
        # what a twin within 0.5 points costs in latency: routed, or placed with nextpnr's estimate;
        # a narrower student of the same design counts, named as such with its own float parent
        # (on the newest data version that has one, as above: an older version's faster design is history)
        close = [r for r, _ in variants if loss(r) is not None and abs(loss(r)) <= 0.5 and _latency(r)]
        close = sorted(_of_newest(close), key=lambda r: (not r.get("latency_us"), _latency(r)))
        if close and abs(loss(best)) > 0.5:
            r = close[0]
            a = accs[recs.index(r)]
            pr = r.get("place_and_route") or {}
            value: Any = r.get("latency_us")
            if value is None:
                value = (f"placed, not routed ({pr.get('reason', 'not run').split(' (see ')[0]}); "
                         f"{r['latency_cycles']:,} cycles at the post-placement estimate "
                         f"{pr['placed_fmax_mhz_estimate']} MHz = {_latency(r):.1f} us")
            shape = f"a narrower student, {r['model'].rsplit('-q', 1)[0]} with {_narrower(r)}: " if _narrower(r) else ""
            aim(f"the fastest design whose twin is within 0.5 points of its float parent ({shape}{_widths(r)}, "
                f"{_pct(a, 'twin')}% vs {_pct(a, 'float')}%, from {_rel(r['run'])}; "
                f"{r.get('pixels_per_cycle') or 1} pixels a cycle: docs/fpga.md)", "<= 7 us", value,
                bool(r.get("latency_us")) and r["latency_us"] <= 7, r, "us" if r.get("latency_us") else None)
    q8 = [r for r, _ in mine if _bits(r) == 8 and r.get("arch") == "mixed"]
    if q8:  # one aim: the place-and-route attempt, with the widest bit-exact check beside it
        r = max(q8, key=lambda x: (bool((x.get("place_and_route") or {}).get("ran")), "place_and_route" in x,
                                   _version(x)))  # routed first, then the newest data's attempt
        checked = max(q8, key=lambda x: (x["n_checked"] or 0, _version(x)))
        pr = r.get("place_and_route") or {}
        packed = _logic_cells(pr)
        if pr.get("ran"):
            value = f"routed at {r['fmax_mhz']} MHz: {r['latency_cycles']:,} cycles = {r['latency_us']} us"
        else:
            value = (f"{packed['used']:,} of {packed['available']:,} logic cells, {r['dsps']} DSP; "
                     + _unrouted(pr, "not placed")) if packed else pr.get("reason", "not run")
        aim("the default student's 8-bit twin placed and routed whole on the part (--arch mixed: the last conv and "
            "the dense layer on DSP multipliers; bit exact on "
            f"{checked['n_checked'] - (checked['mismatches'] or 0):,} of {checked['n_checked']:,} crops; at 1 pixel a "
            "cycle its latency is >= 4,096 cycles, so <= 7 us is out of reach by construction: docs/fpga.md)",
            "placed and routed", value, bool(pr.get("ran")), r)
    return out


def _unrouted(pr: dict[str, Any], default: str) -> str:
    """Why a design was not routed (its log's path left out), and how far the router got."""
    why = pr.get("reason", default).split(" (see ")[0]
    if not pr.get("router_iterations"):
        return why
    return f"{why} at router2 iteration {pr['router_iterations']} ({pr['router_overused_wires']:,} overused wires)"


def _latency(rec: dict[str, Any]) -> float | None:
    """Latency in us: routed, else at nextpnr's post-placement Fmax estimate (None: neither)."""
    if rec.get("latency_us"):
        return float(rec["latency_us"])
    est = (rec.get("place_and_route") or {}).get("placed_fmax_mhz_estimate")
    return rec["latency_cycles"] / est if est and rec.get("latency_cycles") else None


def _twin_data(rec: dict[str, Any]) -> dict[str, Any]:
    """The data card of the set the record's twin was scored on ({}: none kept)."""
    return (((rec.get("accuracy") or {}).get("twin") or {}).get("data")) or {}


def _version(rec: dict[str, Any]) -> tuple[int, ...]:
    """The LymphoSim version a record's twin was measured on, comparable ((0,): unknown)."""
    v = str(_twin_data(rec).get("version") or "0")
    return tuple(int(x) for x in v.split(".") if x.isdigit()) or (0,)


def _of_newest(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the newest data version among `recs` (a re-baseline replaces older aims)."""
    newest = max(map(_version, recs), default=None)
    return [r for r in recs if _version(r) == newest]


def _data(rec: dict[str, Any]) -> str:
    data = _twin_data(rec)
    if data.get("source") == "simulated":
        return data_label(data)
    return "LymphoSim (simulated)" if "lymphosim" in str(rec.get("checked_on", "")) else str(rec.get("checked_on"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("records", nargs="+", type=Path, help="rtl.json records of `lymphosort export rtl`")
    ap.add_argument("--runs-root", action="append", default=[], metavar="OLD=NEW",
                    help="read a record's run folder from NEW where it was recorded under OLD")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    runs_root = dict(s.split("=", 1) for s in a.runs_root)
    recs = [json.loads(p.read_text()) for p in a.records]
    accs = [_accuracy(r, p, runs_root) for r, p in zip(recs, a.records)]
    tools = {}
    for r in recs:
        tools.update({k: v for k, v in (r.get("tools") or {}).items() if v})
    doc = {
        "area": "deployment",
        "caption": ("Open RTL: Verilator-checked cycles, yosys resources, nextpnr-ecp5 routed Fmax, and the test "
                    "accuracy each design carries (QAT twin and its float parent); tools: "
                    + ", ".join(f"{k} {v}" for k, v in sorted(tools.items()))),
        "commands": sorted({command(r) for r in recs}),
        "rows": [row(r, acc) for r, acc in zip(recs, accs)],
        "tools": tools,
        "aims": aims(recs, accs),
    }
    write_json_atomic(a.out, doc)
    print(f"wrote {a.out}: {len(doc['rows'])} designs, {len(doc['aims'])} aims")


if __name__ == "__main__":
    main()
