"""Generate BENCHMARKS.md from the `aims` in benchmarks/results/**/*.json.

    python benchmarks/make_tables.py           # rewrite BENCHMARKS.md
    python benchmarks/make_tables.py --check   # exit 1 with a diff when it is out of date

A results file feeds the tables if it has a top-level `"aims"` list (each aim a dict with
the keys in `AIM_KEYS`, see `validate_aim`) or a `"rows"` table with its `"caption"` and
`"area"` (a result with no aim of its own). A file with aims may also carry
`"rows"` (flat dicts, shown as one small table in its area's section) with a `"caption"`,
and `"area"` when its aims span several areas. Files under v1/, v2.0/, v2.1/ or any history/
folder are older simulator versions and are skipped.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUTPUT = ROOT / "BENCHMARKS.md"

#: Areas in data-flow order; the headline table and the sections follow it.
AREAS: tuple[str, ...] = ("data", "training", "teacher", "students", "transfer", "deployment", "real time")
#: Results of earlier simulator versions: kept for git archaeology, never tabulated.
HISTORY_TOP = frozenset({"v1", "v2.0", "v2.1"})
HISTORY_ANY = "history"

REQUIRED = ("area", "aim", "target", "value", "met", "data", "command", "machine")
OPTIONAL = ("interval", "unit")
AIM_KEYS = frozenset(REQUIRED + OPTIONAL)
NOT_MEASURED = "not measured yet"

Scalar = str | int | float | bool | None


class SchemaError(ValueError):
    """A results file that does not follow the schema; the message names file and key."""


@dataclass(frozen=True)
class Aim:
    area: str
    aim: str
    target: str
    value: float | int | str | None
    met: bool | None
    data: str
    command: str
    machine: str
    source: str  # results file, relative to the results folder
    interval: tuple[float, float] | None = None
    unit: str = ""


@dataclass(frozen=True)
class RowTable:
    area: str
    caption: str
    rows: tuple[dict[str, Scalar], ...]
    source: str
    #: the commands that produced the rows (optional top-level "command" or "commands")
    commands: tuple[str, ...] = ()


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _text(where: str, key: str, x: Any) -> str:
    if not isinstance(x, str) or not x.strip():
        raise SchemaError(f"{where}: {key!r} must be non-empty text, got {x!r}")
    if "\n" in x:
        raise SchemaError(f"{where}: {key!r} must be one line (it becomes a table cell)")
    return x.strip()


def validate_aim(raw: Any, where: str, source: str) -> Aim:
    """One entry of `aims`; `where` ("file: aims[i]") starts every error message."""
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: each aim must be an object, got {type(raw).__name__}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise SchemaError(f"{where}: missing key(s) {', '.join(map(repr, missing))}")
    unknown = sorted(set(raw) - AIM_KEYS)
    if unknown:
        raise SchemaError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {sorted(AIM_KEYS)}")
    area = _text(where, "area", raw["area"])
    if area not in AREAS:
        raise SchemaError(f"{where}: 'area' {area!r} is not one of {list(AREAS)} (add new areas to AREAS)")
    met, value = raw["met"], raw["value"]
    if met is not None and not isinstance(met, bool):
        raise SchemaError(f"{where}: 'met' must be true, false or null (not measured), got {met!r}")
    # A verdict needs a measurement, and a measurement without a verdict is ambiguous:
    # `met: null` means "not measured", so it must not carry a number that looks measured.
    if met is None and value is not None:
        raise SchemaError(f"{where}: 'value' is set but 'met' is null; set 'met' to true/false or 'value' to null")
    if met is not None and not (_is_number(value) or (isinstance(value, str) and value.strip())):
        raise SchemaError(f"{where}: 'value' must be a number or text when 'met' is {met}, got {value!r}")
    interval = raw.get("interval")
    if interval is not None:
        if not (isinstance(interval, list) and len(interval) == 2 and all(map(_is_number, interval))):
            raise SchemaError(f"{where}: 'interval' must be [lo, hi] numbers, got {interval!r}")
        if interval[0] > interval[1]:
            raise SchemaError(f"{where}: 'interval' lo > hi: {interval!r}")
        if met is None:
            raise SchemaError(f"{where}: 'interval' is set but 'met' is null (not measured)")
    unit = raw.get("unit") or ""
    if not isinstance(unit, str):
        raise SchemaError(f"{where}: 'unit' must be text, got {unit!r}")
    return Aim(
        area=area,
        aim=_text(where, "aim", raw["aim"]),
        target=_text(where, "target", raw["target"]),
        value=value.strip() if isinstance(value, str) else value,
        met=met,
        data=_text(where, "data", raw["data"]),
        command=_text(where, "command", raw["command"]),
        machine=_text(where, "machine", raw["machine"]),
        source=source,
        interval=(interval[0], interval[1]) if interval is not None else None,
        unit=unit,
    )


def _row_table(doc: dict[str, Any], aims: list[Aim], rel: str) -> RowTable | None:
    if "rows" not in doc:
        return None
    rows = doc["rows"]
    if not isinstance(rows, list) or not rows:
        raise SchemaError(f"{rel}: 'rows' must be a non-empty list of objects")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row:
            raise SchemaError(f"{rel}: rows[{i}] must be a non-empty object")
        for key, cell in row.items():
            if not (cell is None or isinstance(cell, (str, int, float, bool))):
                raise SchemaError(f"{rel}: rows[{i}][{key!r}] must be a number, text, bool or null "
                                  f"(it becomes one table cell), got {type(cell).__name__}")
    caption = _text(rel, "caption", doc.get("caption"))
    areas = {a.area for a in aims}
    area = doc.get("area")
    if area is None:
        if len(areas) != 1:
            raise SchemaError(f"{rel}: 'rows' needs a top-level 'area' because the aims span {sorted(areas)}")
        area = areas.pop()
    elif area not in AREAS:
        raise SchemaError(f"{rel}: 'area' {area!r} is not one of {list(AREAS)}")
    commands = doc.get("commands") or ([doc["command"]] if isinstance(doc.get("command"), str) else [])
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise SchemaError(f"{rel}: 'commands' must be a list of command strings")
    return RowTable(area=area, caption=caption, rows=tuple(rows), source=rel, commands=tuple(commands))


def is_history(rel: Path) -> bool:
    return (len(rel.parts) > 1 and rel.parts[0] in HISTORY_TOP) or HISTORY_ANY in rel.parts[:-1]


def collect(results: Path) -> tuple[list[Aim], list[RowTable]]:
    """Every aim and row table under `results`, in area order, then file, then file order."""
    aims: list[Aim] = []
    tables: list[RowTable] = []
    for path in sorted(results.rglob("*.json")):
        rel_path = path.relative_to(results)
        if is_history(rel_path):
            continue
        rel = rel_path.as_posix()
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SchemaError(f"{rel}: not valid JSON ({exc})") from exc
        if not isinstance(doc, dict) or ("aims" not in doc and not ("rows" in doc and "caption" in doc)):
            continue  # supporting data, not a result for the tables
        if "aims" in doc and (not isinstance(doc["aims"], list) or not doc["aims"]):
            raise SchemaError(f"{rel}: 'aims' must be a non-empty list")
        file_aims = [validate_aim(raw, f"{rel}: aims[{i}]", rel) for i, raw in enumerate(doc.get("aims", []))]
        aims += file_aims
        table = _row_table(doc, file_aims, rel)
        if table is not None:
            tables.append(table)
    # sorted() is stable, so aims keep their order within a file.
    aims.sort(key=lambda a: (AREAS.index(a.area), a.source))
    tables.sort(key=lambda t: (AREAS.index(t.area), t.source))
    return aims, tables


def _cell(x: Scalar) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return format(x, "g")
    return str(x).replace("|", "\\|")


def _code(x: str) -> str:
    return "`" + x.replace("|", "\\|") + "`"


def _with_unit(x: float | int | str, unit: str) -> str:
    text = _cell(x)
    if not unit:
        return text
    return f"{text}{unit}" if unit in ("%", "x") else f"{text} {unit}"


def measured(aim: Aim) -> str:
    if aim.met is None:
        return NOT_MEASURED
    assert aim.value is not None  # validate_aim guarantees it
    text = _with_unit(aim.value, aim.unit)
    if aim.interval is not None:
        text += f" ({_with_unit(aim.interval[0], aim.unit)} to {_with_unit(aim.interval[1], aim.unit)})"
    return text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


INTRO = """\
Numbers marked *simulated* come from LymphoSim, the project's simulator of the
LymphoMNIST microscope (version in the data column), not from real cells; *real* rows
name the real data set. Each row gives the command that produced it and the machine it
ran on. This file is generated from `benchmarks/results/**/*.json` (their `aims` and
`rows`): edit those and run `python benchmarks/make_tables.py`; CI fails when the two
disagree."""

HISTORY = """\
## History

Results on LymphoSim 1.0 and 2.x live in git history and in `benchmarks/results/v1/`,
`v2.0/` and `v2.1/`. LymphoSim 1.0-2.x imitated another microscope (low-magnification
bright field, a ~20 px cell), where LymphoMNIST is high-magnification relief (DIC-like),
so their numbers do not carry over to 3.0."""


def render(aims: Sequence[Aim], tables: Sequence[RowTable]) -> str:
    lines = ["# Benchmarks", "", INTRO, ""]
    header = ("area", "aim", "target", "measured (interval)", "met", "data", "command", "machine")
    lines += _table(header, [
        (a.area, _cell(a.aim), _cell(a.target), measured(a),
         "—" if a.met is None else _cell(a.met), _cell(a.data), _code(a.command), _cell(a.machine))
        for a in aims
    ]) if aims else ["No aims recorded yet."]
    for area in AREAS:
        area_tables = [t for t in tables if t.area == area]
        if not area_tables:
            continue
        lines += ["", f"## {area[0].upper()}{area[1:]}"]
        for t in area_tables:
            keys = list(dict.fromkeys(k for row in t.rows for k in row))
            lines += ["", f"{t.caption} ([source](benchmarks/results/{t.source}))", ""]
            lines += _table(keys, [[_cell(row.get(k)) for k in keys] for row in t.rows])
            if t.commands:
                lines += ["", "Commands: " + "; ".join(_code(c) for c in t.commands)]
    lines += ["", HISTORY, ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff if OUTPUT is out of date")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="markdown file (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        text = render(*collect(args.results))
    except SchemaError as exc:
        print(f"make_tables: {exc}", file=sys.stderr)
        return 2
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            fromfile=f"{args.out} (committed)", tofile=f"{args.out} (generated)"))
        print(f"\n{args.out} is out of date: run `python benchmarks/make_tables.py`", file=sys.stderr)
        return 1
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
