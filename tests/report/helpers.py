"""A fake pipeline run folder shaped like the contract in docs/DESIGN.md (issue 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from PIL import Image

from lymphosort.report.build import STAGE_NAMES

CLASSES = ("B", "T4", "T8")


def png(path: Path, w: int = 12, h: int = 8, seed: int = 0) -> str:
    """A tiny valid PNG; returns its path as a string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path)
    return str(path)


def record(run: Path, name: str, outputs: dict[str, Any], status: str = "done") -> None:
    d = run / "stages" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "stage.json").write_text(json.dumps(
        {"stage": name, "key": f"key-{name}", "status": status, "seconds": 1.5, "outputs": outputs}, indent=2))


def _rel(run: Path, p: str) -> str:
    return str(Path(p).relative_to(run))


def make_run(run: Path, stages: Iterable[str] = STAGE_NAMES, classes: tuple[str, ...] = CLASSES,
             student_label: str = "tiny-32 (kd)") -> Path:
    """Write stage records (+ the PNG/JSON files they name) for `stages`; paths relative to RUN."""
    stages = set(stages)
    run.mkdir(parents=True, exist_ok=True)
    S = run / "stages"
    if "data" in stages:
        record(run, "data", {
            "root": "stages/data/lymphosim",
            "provenance": {"source": "simulated", "preset": "default", "seed": 7, "generator": "LymphoSim"},
            "splits": {
                "train": {"n": 900, "counts": dict(zip(classes, (300, 310, 290))), "split_id": "split-a1b2"},
                "val": {"n": 90, "counts": dict(zip(classes, (30, 31, 29))), "split_id": "split-a1b2"},
                "test": {"n": 333, "counts": dict(zip(classes, (111, 112, 110))), "split_id": "split-a1b2"},
            },
            "sample_grid": _rel(run, png(S / "data" / "samples.png", 24, 9, 1)),
        })
    if "teacher" in stages:
        metrics = {"n": 333, "accuracy": 0.932143, "balanced_accuracy": 0.9311, "f1": 0.9222, "roc_auc": 0.98765,
                   "ece": 0.0213, "confusion": [[100, 11], [12, 110]],
                   "intervals": {"accuracy": [0.921, 0.943], "roc_auc": [0.975, 0.995], "balanced_accuracy": [0.92, 0.94],
                                 "f1": [0.91, 0.93], "ece": [0.01, 0.03]}}
        record(run, "teacher", {
            "run": "stages/teacher/run", "model": "resnet18",
            "metrics": metrics,  # inline, as pipeline.stage_teacher stores it
            "curves": _rel(run, png(S / "teacher" / "curves.png", seed=2)),
            "plots": {k: _rel(run, png(S / "teacher" / f"{k}.png", seed=3 + i))
                      for i, k in enumerate(("roc", "confusion", "reliability"))},
        })
    if "students" in stages:
        rows = [
            {"key": "teacher", "label": "resnet18 (teacher)", "model": "resnet18", "method": "none", "command": "lymphosort train --model resnet18",
             "input_size": 64, "accuracy": 0.932143, "accuracy_ci": [0.921, 0.943], "roc_auc": 0.98765,
             "params": 11_170_000, "macs": 556_000_000, "latency_ms_b1": 4.321, "speedup_b1": 1.0, "speedup_b256": 1.0,
             "macs_vs_teacher": 1.0, "acc_vs_teacher_points": 0.0},
            {"key": "tiny-32-kd", "label": student_label, "model": "tiny-32", "method": "kd", "command": "lymphosort distill --student tiny-32",
             "input_size": 32, "accuracy": 0.915678, "accuracy_ci": [0.9012, 0.9288], "roc_auc": 0.9701,
             "params": 23_456, "macs": 1_234_567, "latency_ms_b1": 0.087, "speedup_b1": 49.7, "speedup_b256": 120.3,
             "macs_vs_teacher": 0.00222, "acc_vs_teacher_points": -1.6465},
        ]
        record(run, "students", {
            "rows": rows,
            "curves": {student_label: _rel(run, png(S / "students" / "tiny-kd-curves.png", seed=8)),
                       "resnet18 (teacher)": "stages/teacher/curves.png"},  # the teacher's, listed again
            "latency": {"threads": 1, "repeats": 30, "device": "cpu", "models": {}},
        })
    if "transfer" in stages:
        curve = {"run": "stages/teacher/run", "source_task": "t4-vs-b", "task": "t8-vs-b", "n_test": 200, "seeds": [0, 1],
                 "rows": [{"mode": "linear", "shots": "5", "accuracy": {"mean": 0.7123, "std": 0.0101, "interval": [0.66, 0.75]},
                           "roc_auc": {"mean": 0.80, "std": 0.01, "interval": [0.75, 0.85]}},
                          {"mode": "full", "shots": "all", "accuracy": {"mean": 0.8899, "std": 0.005, "interval": [0.86, 0.91]},
                           "roc_auc": {"mean": 0.95, "std": 0.01, "interval": [0.93, 0.97]}}]}
        (S / "transfer" / "few-shot").mkdir(parents=True, exist_ok=True)
        (S / "transfer" / "few-shot" / "curve.json").write_text(json.dumps(curve))
        (S / "transfer" / "few-shot" / "table.md").write_text("| mode |\n")
        record(run, "transfer", {
            "task": "t8-vs-b",
            "zero_shot": {  # one summary per source model, as pipeline.stage_transfer stores it
                "teacher": {"n": 200, "accuracy": 0.6543, "balanced_accuracy": 0.65, "roc_auc": 0.7111, "ece": 0.05,
                            "intervals": {"accuracy": [0.6001, 0.7002]},
                            "operating_point": {"threshold": 0.42, "test": {"balanced_accuracy": 0.7012,
                                                                            "intervals": {"balanced_accuracy": [0.65, 0.75]}}},
                            "calibration": {"temperature": 1.7, "test_ece": {"before": 0.05, "after": 0.0234}}},
                "student": {"n": 200, "accuracy": 0.6111, "roc_auc": 0.6999, "intervals": {}},
            },
            "few_shot": {"curve_json": "stages/transfer/few-shot/curve.json",
                         "curve_png": _rel(run, png(S / "transfer" / "few-shot" / "curve.png", seed=9)),
                         "table_md": "stages/transfer/few-shot/table.md"},
        })
    if "export" in stages:
        record(run, "export", {
            "onnx": {"format": "onnx", "checker": "ok", "n_checked": 500, "max_abs_diff": 2.5e-6,
                     "argmax_agreement": 1.0, "opset": 17, "checked_on": "test split", "dir": "stages/export/onnx"},
            "hls": {"format": "hls4ml", "agreement": 0.9995, "n_checked": 2000, "max_abs_diff": 0.0, "bit_exact": True,
                    "ir_vs_quant_model": {"agreement": 1.0, "max_abs_diff": 0.0}, "bits": 8, "part": "xczu7ev-ffvc1156-2-e",
                    "clock_ns": 5.0, "io_type": "io_stream", "latency_us_estimate": 7.89,
                    "estimate": {"model": "streaming dataflow: one pixel per cycle (stated model)", "latency_cycles": 1578,
                                 "initiation_interval_cycles": 1024, "throughput_per_s_estimate": 195312.5,
                                 "params": 23456, "weight_bits_total": 187648, "macs": 1234567,
                                 "multipliers_upper_bound": 4321, "reuse_factor": 1,
                                 "stages": [{"layer": "conv1", "in": 32, "out": 32, "weights": 72, "w_bits": 8,
                                             "act_bits": 8, "depth_cycles": 1100}]},
                    "synthesis": None, "dir": "stages/export/hls"},
            "quant": {"float_model": "tiny-32 (kd)", "float_accuracy": 0.915678,
                      "qat_model": "tiny-32 (kd, 8-bit QAT)", "qat_accuracy": 0.9089},
        })
    if "realtime" in stages:
        report = {"frames": 12000, "frames_processed": 11990, "dropped_frames": 10, "cells_seen": 4567, "decisions": 4500,
                  "sorted": 2100, "cells_per_s": 2345.6, "frames_per_s": 6250.0, "p50_latency_us": 45.0,
                  "p99_latency_us": 123.4, "max_latency_us": 987.0, "deadline_us": 500, "late_decisions": 3,
                  "detection_precision": 0.9912, "detection_recall": 0.9823, "accuracy": 0.9045, "purity": 0.9456,
                  "yield": 0.8765, "backend": "fixedpoint", "target_class": "T4", "threshold": 0.5}
        record(run, "realtime", {"report": report,
                                 "histogram": _rel(run, png(S / "realtime" / "latency.png", seed=10))})
    if "embedding" in stages:
        record(run, "embedding", {"png": _rel(run, png(S / "embedding" / "tsne.png", seed=11)), "method": "tsne", "n": 1500})
    return run


#: images a full fake run embeds: grid, teacher curves + 3 plots, student curves, few-shot,
#: latency histogram, embedding
N_IMAGES_FULL = 1 + 4 + 1 + 1 + 1 + 1
