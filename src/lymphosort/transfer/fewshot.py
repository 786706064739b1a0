"""The few-shot grid: K shots x modes x seeds, zero-shot as reference, curve + table.

Each cell is one `finetune` run folder under `OUT/runs/MODE-kK-sSEED`; a cell whose
`transfer.json` already exists is read back instead of re-run, so a long grid can be
stopped and continued. Linear cells share one feature cache (one pass per image).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lymphosort.transfer.finetune import FinetuneConfig, finetune
from lymphosort.transfer.heads import FeatureCache, prepare_model
from lymphosort.transfer.shots import TransferData, shots_name

__all__ = ["few_shot", "plot_curve", "summarise", "table_markdown"]

log = logging.getLogger(__name__)

METRICS = ("accuracy", "roc_auc")


def summarise(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (mode, K): mean and std over seeds, and an interval that covers both
    sources of spread: from the lowest seed's bootstrap low to the highest seed's high."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cells:
        groups.setdefault((c["mode"], c["shots"]), []).append(c)
    rows = []
    for (mode, k), cs in groups.items():
        row: dict[str, Any] = {"mode": mode, "shots": k, "seeds": [c["seed"] for c in cs]}
        for m in METRICS:
            vals = [c["test"][m] for c in cs if c["test"].get(m) is not None]
            ivs = [c["test"].get("intervals", {}).get(m) for c in cs]
            ivs = [iv for iv in ivs if iv]
            row[m] = {
                "mean": float(np.mean(vals)) if vals else None,
                "std": float(np.std(vals)) if vals else None,
                "per_seed": vals,
                "interval": [float(min(iv[0] for iv in ivs)), float(max(iv[1] for iv in ivs))] if ivs else None,
            }
        rows.append(row)
    order = {"linear": 0, "partial": 1, "full": 2}
    rows.sort(key=lambda r: (order.get(r["mode"], 9), _k_value(r["shots"])))
    return rows


def _k_value(k: str) -> float:
    return float("inf") if k == "all" else float(k)


def plot_curve(curve: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Accuracy and ROC-AUC vs K (log axis; 'all' at the right), one line per mode with its
    interval band, zero-shot as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = curve["rows"]
    ks = sorted({r["shots"] for r in rows}, key=_k_value)
    numeric = [float(k) for k in ks if k != "all"]
    x_all = (max(numeric) * 4) if numeric else 1.0
    xpos = {k: (x_all if k == "all" else float(k)) for k in ks}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, m in zip(axes, METRICS):
        for mode in sorted({r["mode"] for r in rows}, key=lambda s: ("linear", "partial", "full").index(s) if s in ("linear", "partial", "full") else 9):
            rs = sorted((r for r in rows if r["mode"] == mode and r[m]["mean"] is not None), key=lambda r: _k_value(r["shots"]))
            if not rs:
                continue
            x = [xpos[r["shots"]] for r in rs]
            line = ax.plot(x, [r[m]["mean"] for r in rs], marker="o", label=mode)[0]
            lo = [r[m]["interval"][0] if r[m]["interval"] else r[m]["mean"] for r in rs]
            hi = [r[m]["interval"][1] if r[m]["interval"] else r[m]["mean"] for r in rs]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        zs = (curve.get("zero_shot") or {}).get(m)
        if zs is not None:
            ax.axhline(zs, color="k", ls="--", lw=1, label="zero-shot")
        ax.set_xscale("log")
        ax.set_xticks([xpos[k] for k in ks])
        ax.set_xticklabels(ks)
        ax.minorticks_off()
        ax.set_xlabel("labelled cells per class (K)")
        ax.set_ylabel(m.replace("_", "-"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{curve.get('source_task')} -> {curve['task']}: fine-tuning from {Path(curve['run']).name}")
    fig.tight_layout()
    from lymphosort.atomic import atomic_write

    out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return out


def table_markdown(curve: dict[str, Any]) -> str:
    """A short markdown table (mean over seeds, interval) for BENCHMARKS.md."""

    def fmt(d: dict[str, Any]) -> str:
        if d["mean"] is None:
            return "n/a"
        iv = d["interval"]
        return f"{d['mean']:.3f} [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else f"{d['mean']:.3f}"

    lines = [
        f"Transfer {curve.get('source_task')} -> {curve['task']} from `{curve['run']}` "
        f"(test n={curve.get('n_test')}, seeds {curve['seeds']}; interval: bootstrap 95% envelope over seeds).",
        "",
        "| mode | K per class | accuracy | ROC-AUC |",
        "|---|---|---|---|",
    ]
    zs = curve.get("zero_shot") or {}
    if zs:
        ziv = zs.get("intervals", {})
        acc = f"{zs['accuracy']:.3f}" + (f" [{ziv['accuracy'][0]:.3f}, {ziv['accuracy'][1]:.3f}]" if ziv.get("accuracy") else "")
        auc = "n/a" if zs.get("roc_auc") is None else f"{zs['roc_auc']:.3f}" + (
            f" [{ziv['roc_auc'][0]:.3f}, {ziv['roc_auc'][1]:.3f}]" if ziv.get("roc_auc") else "")
        lines.append(f"| zero-shot | 0 | {acc} | {auc} |")
    for r in curve["rows"]:
        lines.append(f"| {r['mode']} | {r['shots']} | {fmt(r['accuracy'])} | {fmt(r['roc_auc'])} |")
    return "\n".join(lines) + "\n"


def few_shot(
    run_dir: str | os.PathLike[str],
    data: TransferData,
    out: str | os.PathLike[str],
    *,
    shots: Sequence[int | None] = (5, 10, 25, 100, None),
    modes: Sequence[str] = ("linear", "partial", "full"),
    seeds: Sequence[int] = (0, 1, 2),
    base: FinetuneConfig | None = None,
    zero_shot: bool = True,
    quiet: bool = True,
) -> dict[str, Any]:
    """Run (or resume) the grid; write `OUT/curve.json`, `OUT/curve.png`, `OUT/table.md`."""
    import dataclasses

    from lymphosort.models.checkpoint import jsonable, read_card

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = base or FinetuneConfig()
    card = read_card(run_dir)
    zs: dict[str, Any] | None = None
    if zero_shot and data.source == "lymphomnist" and tuple(card.classes) == tuple(data.classes):
        zpath = out_dir / "zero-shot" / "metrics.json"
        if zpath.is_file():
            zs = json.loads(zpath.read_text())
        else:
            from lymphosort.transfer.zeroshot import ZeroShotConfig
            from lymphosort.transfer.zeroshot import zero_shot as run_zero_shot

            zs = run_zero_shot(run_dir, ZeroShotConfig(task=data.task, data_root=str(data.data_root), n_boot=base.n_boot,
                                                         latency=False), out_dir / "zero-shot")
    cache: FeatureCache | None = None
    cells: list[dict[str, Any]] = []
    for mode in modes:
        for k in shots:
            for seed in seeds:
                cell_dir = out_dir / "runs" / f"{mode}-k{shots_name(k)}-s{seed}"
                done = cell_dir / "transfer.json"
                if done.is_file():
                    cells.append(json.loads(done.read_text()))
                    continue
                cfg = dataclasses.replace(base, mode=mode, shots=k, seed=seed)
                if mode == "linear" and cache is None:
                    cache = FeatureCache(prepare_model(run_dir, data.classes, "linear", base.reset_head)[0])
                log.info("few-shot cell %s", cell_dir.name)
                # resume: a cell killed mid-training continues from its last finished epoch.
                cells.append(finetune(run_dir, data, cfg, cell_dir, cache=cache if mode == "linear" else None, quiet=quiet,
                                      resume=True))
    curve: dict[str, Any] = {
        "run": str(run_dir),
        "source_task": card.task,
        "task": data.task,
        "classes": list(data.classes),
        "validation": data.validation,
        "n_test": len(data.test),
        "seeds": list(seeds),
        "modes": list(modes),
        "shots": [shots_name(k) for k in shots],
        "zero_shot": None if zs is None else {
            k: zs.get(k) for k in ("accuracy", "balanced_accuracy", "roc_auc", "ece", "intervals", "n")
        },
        "rows": summarise([{"mode": c["mode"], "shots": c["shots"], "seed": c["seed"], "test": c["test"]} for c in cells]),
        "config": base.to_dict(),
    }
    from lymphosort.atomic import write_json_atomic, write_text_atomic

    write_json_atomic(out_dir / "curve.json", jsonable(curve), allow_nan=False)
    plot_curve(curve, out_dir / "curve.png")
    write_text_atomic(out_dir / "table.md", table_markdown(curve))
    return curve
