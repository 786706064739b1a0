"""Compare trained runs side by side: accuracy with intervals, cost, and latency ratios.

One table for teacher / students / distillation methods, used by the pipeline's students
stage and by `benchmarks/kd_table.py`. Latency is measured in this one process with
interleaved rounds (`measure_latency`), so ratios against the teacher are fair even on a
busy machine; one intra-op thread by default (a sorter pins one core).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

__all__ = ["RunRow", "compare_runs", "markdown_table"]


@dataclass(frozen=True)
class RunRow:
    """One row: a finished run folder, how to name it, and the command that made it."""

    key: str
    label: str
    run_dir: Path
    command: str


def compare_runs(rows: Sequence[RunRow], *, reference: str | None = None, threads: int = 1,
                 latency_repeats: int = 30, onnxruntime: bool = False) -> dict[str, Any]:
    """Table rows for finished runs (each holds model.json + metrics.json), with params,
    MACs, batch-1 and batch-256 latency, and ratios against `reference` (default: first row).
    With `onnxruntime`, also batch-1 latency and speed-up in ONNX Runtime (the float models'
    deployment runtime, where per-layer Python overhead no longer hides a tiny model's cost)."""
    import json

    from lymphosort.evaluate.efficiency import count_macs, count_params, measure_latency
    from lymphosort.models.checkpoint import load_checkpoint

    if not rows:
        return {"rows": [], "latency": None}
    ref = reference or rows[0].key
    models, table = {}, []
    for r in rows:
        model, card = load_checkpoint(r.run_dir)
        m = json.loads((Path(r.run_dir) / "metrics.json").read_text())
        models[r.key] = model
        table.append(
            {
                "key": r.key,
                "label": r.label,
                "run": str(r.run_dir),
                "model": card.model,
                "method": card.config.get("method", "none"),
                "command": r.command,
                "data": card.data,
                "split_id": card.split_id,
                "input_size": int(card.spec["input_size"]),
                "accuracy": m["accuracy"],
                "accuracy_ci": m["intervals"]["accuracy"],
                "balanced_accuracy": m.get("balanced_accuracy"),
                "roc_auc": m.get("roc_auc"),
                "n_test": m["n"],
                "params": count_params(model),
                "macs": count_macs(model),
            }
        )
    lat = measure_latency(models, (1, 256), threads=threads, repeats=latency_repeats)
    base = lat["models"][ref]
    ref_row = next(t for t in table if t["key"] == ref)
    for t in table:
        ms = lat["models"][t["key"]]
        t["latency_ms_b1"] = ms[1]["median_ms"]
        t["latency_ms_b256_per_image"] = ms[256]["ms_per_image"]
        t["speedup_b1"] = base[1]["median_ms"] / ms[1]["median_ms"]
        t["speedup_b256"] = base[256]["median_ms"] / ms[256]["median_ms"]
        t["macs_vs_teacher"] = t["macs"] / ref_row["macs"]
        t["acc_vs_teacher_points"] = 100 * (t["accuracy"] - ref_row["accuracy"])
    out = {"rows": table, "reference": ref, "latency": lat}
    if onnxruntime:
        ort = measure_latency(models, (1,), threads=threads, repeats=latency_repeats, runtime="onnxruntime")
        ort_base = ort["models"][ref][1]["median_ms"] if ort["models"][ref] else None
        for t in table:
            ms = ort["models"][t["key"]]
            t["latency_ms_b1_ort"] = ms[1]["median_ms"] if ms else None
            t["speedup_b1_ort"] = ort_base / ms[1]["median_ms"] if ms and ort_base else None
        out["latency_onnxruntime"] = ort
    return out


def markdown_table(rows: Sequence[dict[str, Any]], *, commands: bool = True) -> str:
    """The comparison as a markdown table (and the commands underneath)."""
    ort = any("latency_ms_b1_ort" in r for r in rows)
    lines = [
        "| model (method) | input | test acc [95% CI] | ROC-AUC | params | MACs | MACs vs teacher | batch-1 latency | speed-up b1 / b256 |"
        + (" ONNX Runtime b1 latency / speed-up |" if ort else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if ort else ""),
    ]
    for r in rows:
        lo, hi = r["accuracy_ci"]
        auc = f"{r['roc_auc']:.4f}" if r.get("roc_auc") is not None else "n/a"
        ort_cell = ""
        if ort:
            ms, x = r.get("latency_ms_b1_ort"), r.get("speedup_b1_ort")
            ort_cell = f" {1000 * ms:.1f} us / {x:.1f}x |" if ms and x else " n/a (no plain ONNX) |"
        lines.append(
            f"| {r['label']} | {r['input_size']} | {100 * r['accuracy']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}] "
            f"| {auc} | {r['params']:,} | {r['macs'] / 1e6:.2f} M | {100 * r['macs_vs_teacher']:.1f}% "
            f"| {r['latency_ms_b1']:.3f} ms | {r['speedup_b1']:.1f}x / {r['speedup_b256']:.1f}x |{ort_cell}"
        )
    if commands:
        lines += ["", "Commands:"] + [f"- {r['label']}: `{r['command']}`" for r in rows]
    return "\n".join(lines)
