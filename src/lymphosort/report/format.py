"""Number formatting shared by the HTML and Markdown reports, so both show the same strings.

Rates (accuracy, agreement, purity...) are percentages with two decimals; an interval
follows its value in brackets in the same unit. Missing values read "n/a", never "None".
"""

from __future__ import annotations

import math
from typing import Any, Sequence

NA = "n/a"


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def pct(x: Any, digits: int = 2) -> str:
    """0.93214 -> '93.21%'."""
    v = _num(x)
    return NA if v is None else f"{100 * v:.{digits}f}%"


def interval(iv: Any, fmt: str = "pct", digits: int = 2) -> str:
    """[lo, hi] -> '[92.10%, 94.30%]' (or numbers with `fmt="num"`); '' when absent."""
    if not isinstance(iv, Sequence) or isinstance(iv, str) or len(iv) != 2:
        return ""
    lo, hi = _num(iv[0]), _num(iv[1])
    if lo is None or hi is None:
        return ""
    f = (lambda v: pct(v, digits)) if fmt == "pct" else (lambda v: num(v, digits))
    return f"[{f(lo)}, {f(hi)}]"


def pct_ci(x: Any, iv: Any = None, digits: int = 2) -> str:
    """'93.21% [92.10%, 94.30%]'; the bracket is left out when there is no interval."""
    s = pct(x, digits)
    b = interval(iv, "pct", digits) if s != NA else ""
    return f"{s} {b}" if b else s


def num(x: Any, digits: int = 4) -> str:
    v = _num(x)
    return NA if v is None else f"{v:.{digits}f}"


def num_ci(x: Any, iv: Any = None, digits: int = 4) -> str:
    s = num(x, digits)
    b = interval(iv, "num", digits) if s != NA else ""
    return f"{s} {b}" if b else s


def count(x: Any) -> str:
    """Integer with thousands separators: 12345 -> '12,345'."""
    v = _num(x)
    return NA if v is None else f"{round(v):,}"


def si(x: Any, digits: int = 2) -> str:
    """12_345_678 -> '12.35 M' (k, M, G)."""
    v = _num(x)
    if v is None:
        return NA
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.{digits}f} {unit}"
    return f"{v:.0f}"


def unit(x: Any, name: str, digits: int = 2) -> str:
    """12.3456, 'ms' -> '12.35 ms'."""
    v = _num(x)
    return NA if v is None else f"{v:,.{digits}f} {name}"


def ratio(x: Any, digits: int = 1) -> str:
    """Speed-up factors: 12.34 -> '12.3x'."""
    v = _num(x)
    return NA if v is None else f"{v:.{digits}f}x"


def points(x: Any, digits: int = 2) -> str:
    """Differences in percentage points, signed: -1.234 -> '-1.23 pp'."""
    v = _num(x)
    return NA if v is None else f"{v:+.{digits}f} pp"


def text(x: Any) -> str:
    """Any value as plain text (escaping happens in the renderer)."""
    if x is None:
        return NA
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return num(x)
    return str(x)
