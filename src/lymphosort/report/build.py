"""`build_report(RUN)`: RUN/report.html and RUN/report.md from the stored stage records.

Input contract (docs/DESIGN.md, "The main job's run folder"): `RUN/stages/NAME/stage.json`
= {"stage", "key", "status", "seconds", "outputs"}, paths in `outputs` relative to RUN.
Only those records and the files they name are read; nothing is recomputed, so the report
can be rebuilt anywhere the run folder is copied. A stage without a finished record shows
as "not run", and the report still builds.
"""

# over 400 lines by design: one report's sections in reading order, HTML and markdown side by side
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping

from lymphosort.errors import ConfigError
from lymphosort.report import format as f
from lymphosort.report.render import (
    NOT_RUN,
    Banner,
    Block,
    Document,
    Image,
    Para,
    Section,
    Table,
    to_html,
    to_markdown,
)

__all__ = ["SECTIONS", "STAGE_NAMES", "StageRecord", "build_document", "build_report", "read_stage"]

log = logging.getLogger(__name__)

#: The pipeline's stages, in data-flow order.
STAGE_NAMES: tuple[str, ...] = ("data", "teacher", "students", "transfer", "export", "realtime", "embedding")

#: Report sections: id -> (title, stages it reads). A section is "not run" when none of its
#: stages finished.
SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "data": ("Data card", ("data",)),
    "curves": ("Training curves", ("teacher", "students")),
    "models": ("Teacher, students and distillation methods", ("teacher", "students")),
    "transfer": ("Zero-shot and few-shot transfer", ("transfer",)),
    "quant": ("Quantisation and emulation agreement", ("export",)),
    "fpga": ("FPGA latency and resources (estimate)", ("export",)),
    "realtime": ("Real-time sorting", ("realtime",)),
    "embedding": ("Teacher embedding map", ("embedding",)),
    "stages": ("Stages", ()),
}

ESTIMATE_WARNING = (
    "These FPGA figures are an estimate from the model stated below, not a measurement: "
    "they stay an estimate until the design is synthesised (Vitis HLS) and run on the board."
)


# ------------------------------------------------------------------------------ records


@dataclass
class StageRecord:
    name: str
    done: bool
    outputs: dict[str, Any]
    seconds: float | None = None
    key: str | None = None
    #: why the stage counts as not run (empty when done)
    reason: str = ""


def read_stage(run_dir: Path, name: str) -> StageRecord:
    """The stage's record; never raises (an unreadable record reads as not run, with why)."""
    path = run_dir / "stages" / name / "stage.json"
    if not path.is_file():
        return StageRecord(name, False, {}, reason=f"no record at stages/{name}/stage.json")
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return StageRecord(name, False, {}, reason=f"stages/{name}/stage.json is unreadable ({exc})")
    if not isinstance(rec, dict):
        return StageRecord(name, False, {}, reason=f"stages/{name}/stage.json is not a JSON object")
    status = rec.get("status")
    outputs = rec.get("outputs") if isinstance(rec.get("outputs"), dict) else {}
    seconds = rec.get("seconds") if isinstance(rec.get("seconds"), (int, float)) else None
    key = str(rec["key"]) if rec.get("key") is not None else None
    if status != "done":
        return StageRecord(name, False, outputs, seconds, key, reason=f"status is {status!r}, not finished")
    return StageRecord(name, True, outputs, seconds, key)


class RunFiles:
    """Resolves the paths a record names. The contract says relative to RUN; a path that was
    written relative to the working directory (`runs/x/stages/...`) or absolute on another
    machine is found again through its `stages/...` tail, so a moved run folder still reports."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def path(self, value: Any) -> Path | None:
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            return None
        p = Path(value)
        candidates = [p] if p.is_absolute() else [self.run_dir / p, p]
        parts = p.parts
        if "stages" in parts:
            candidates.append(self.run_dir.joinpath(*parts[parts.index("stages"):]))
        for c in candidates:
            if c.exists():
                return c
        return None

    def image(self, value: Any, caption: str) -> Image:
        return Image(self.path(value), caption, ref=str(value) if value else "no file recorded")

    def json(self, value: Any) -> dict[str, Any] | None:
        """A dict given inline, or the JSON file a path names; None when neither."""
        if isinstance(value, dict):
            return value
        p = self.path(value)
        if p is None or not p.is_file():
            return None
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("cannot read %s: %s", p, exc)
            return None
        return data if isinstance(data, dict) else None


@dataclass
class ReportContext:
    run_dir: Path
    files: RunFiles
    stages: dict[str, StageRecord]
    data_label: str

    def out(self, stage: str) -> dict[str, Any]:
        rec = self.stages[stage]
        return rec.outputs if rec.done else {}


# ------------------------------------------------------------------------------ provenance


def describe_data(data: StageRecord) -> tuple[str, Banner]:
    """The data label every section carries, and the banner at the top of the report."""
    if not data.done:
        label = "Data: unknown (the data stage has not run)"
        return label, Banner("Data provenance unknown: the data stage has not run, so no number "
                             "here can be tied to real or simulated cells.", "unknown")
    prov = data.outputs.get("provenance") if isinstance(data.outputs.get("provenance"), dict) else {}
    source = str(prov.get("source", "unknown"))
    ids = _split_ids(data.outputs)
    split = f", split id {ids}" if ids else ""
    if source == "simulated":
        preset = prov.get("preset", "unknown")
        seed = prov.get("seed")
        seed_s = f", seed {seed}" if seed is not None else ""
        label = f"Data: simulated (LymphoSim, preset {preset}{seed_s}){split}"
        banner = Banner(
            f"SIMULATED DATA. Every number and image in this report comes from LymphoSim "
            f"(preset {preset}{seed_s}), a simulator of bright-field lymphocyte crops, not from "
            f"real cells. Do not read it as performance on real LymphoMNIST images.",
            "simulated",
        )
    elif source == "real":
        label = f"Data: real (LymphoMNIST){split}"
        banner = Banner("Real data: LymphoMNIST images" + (f" ({split.lstrip(', ')})." if split else "."), "real")
    else:
        label = f"Data: unknown source {source!r}{split}"
        banner = Banner(f"Data provenance unclear: the data stage recorded source {source!r}.", "unknown")
    return label, banner


def _split_ids(outputs: Mapping[str, Any]) -> str:
    splits = outputs.get("splits") if isinstance(outputs.get("splits"), dict) else {}
    ids = []
    for s in splits.values():
        sid = s.get("split_id") if isinstance(s, dict) else None
        if sid is not None and str(sid) not in ids:
            ids.append(str(sid))
    return ", ".join(ids)


# ------------------------------------------------------------------------------ sections


def _section_data(ctx: ReportContext) -> list[Block]:
    o = ctx.out("data")
    prov = o.get("provenance") if isinstance(o.get("provenance"), dict) else {}
    blocks: list[Block] = []
    rows = [[str(k), f.text(v)] for k, v in prov.items() if not isinstance(v, (dict, list))]
    if rows:
        blocks.append(Table(["provenance", "value"], rows, "Provenance (LymphoMNIST/provenance.json)"))
    splits = o.get("splits") if isinstance(o.get("splits"), dict) else {}
    classes: list[str] = []
    for s in splits.values():
        for c in (s.get("counts") or {}) if isinstance(s, dict) else {}:
            if c not in classes:
                classes.append(str(c))
    if splits:
        rows = []
        for name, s in splits.items():
            s = s if isinstance(s, dict) else {}
            counts = s.get("counts") if isinstance(s.get("counts"), dict) else {}
            rows.append([str(name), f.count(s.get("n")), *(f.count(counts.get(c)) for c in classes), f.text(s.get("split_id"))])
        blocks.append(Table(["split", "images", *classes, "split id"], rows, "Images per split and class"))
    blocks.append(ctx.files.image(o.get("sample_grid"), "Sample crops: one row per class (test split)"))
    return blocks


def _section_curves(ctx: ReportContext) -> list[Block]:
    blocks: list[Block] = []
    if ctx.stages["teacher"].done:
        blocks.append(ctx.files.image(ctx.out("teacher").get("curves"), "Teacher: loss and validation metrics per epoch"))
    else:
        blocks.append(Para(f"Teacher: {NOT_RUN}.", "note"))
    curves = ctx.out("students").get("curves")
    if ctx.stages["students"].done and isinstance(curves, dict):
        teacher_png = ctx.files.path(ctx.out("teacher").get("curves"))
        for label, png in curves.items():
            p = ctx.files.path(png)
            if p is not None and teacher_png is not None and p.resolve() == teacher_png.resolve():
                continue  # the teacher's row in the students table points at the same file
            blocks.append(ctx.files.image(png, f"{label}: loss and validation metrics per epoch"))
    else:
        blocks.append(Para(f"Students: {NOT_RUN}.", "note"))
    return blocks


def _section_models(ctx: ReportContext) -> list[Block]:
    blocks: list[Block] = []
    t = ctx.out("teacher")
    m = ctx.files.json(t.get("metrics")) if ctx.stages["teacher"].done else None
    if m is not None:
        iv = m.get("intervals") or {}
        rows = [[name, fn(m.get(key), iv.get(key))] for name, key, fn in (
            ("accuracy", "accuracy", f.pct_ci),
            ("balanced accuracy", "balanced_accuracy", f.pct_ci),
            ("F1", "f1", f.pct_ci),
            ("ROC-AUC", "roc_auc", f.num_ci),
            ("ECE (15 bins)", "ece", f.pct_ci),
        )]
        rows.append(["test images", f.count(m.get("n"))])
        blocks.append(Table(["teacher metric (test split)", "value [95% CI]"], rows,
                            "Teacher on the test split; intervals: bootstrap 95%"))
    elif ctx.stages["teacher"].done:
        blocks.append(Para(f"Teacher metrics missing ({t.get('metrics')}).", "warn"))
    else:
        blocks.append(Para(f"Teacher: {NOT_RUN}.", "note"))
    plots = t.get("plots") if isinstance(t.get("plots"), dict) else {}
    for key, cap in (("roc", "Teacher ROC (test)"), ("confusion", "Teacher confusion matrix (test)"),
                     ("reliability", "Teacher reliability diagram (test)")):
        if key in plots:
            blocks.append(ctx.files.image(plots[key], cap))
    s = ctx.out("students")
    rows_in = s.get("rows") if isinstance(s.get("rows"), list) else []
    if rows_in:
        rows = []
        for r in rows_in:
            r = r if isinstance(r, dict) else {}
            rows.append([
                f.text(r.get("label") or r.get("model")),
                f.text(r.get("method")),
                f.text(r.get("input_size")),
                f.pct_ci(r.get("accuracy"), r.get("accuracy_ci")),
                f.num(r.get("roc_auc")),
                f.count(r.get("params")),
                f.si(r.get("macs")),
                f.pct(r.get("macs_vs_teacher")),
                f.unit(r.get("latency_ms_b1"), "ms", 3),
                f"{f.ratio(r.get('speedup_b1'))} / {f.ratio(r.get('speedup_b256'))}",
                f.points(r.get("acc_vs_teacher_points")),
            ])
        lat = s.get("latency") if isinstance(s.get("latency"), dict) else {}
        how = f"CPU latency: median of {lat.get('repeats', '?')} rounds, {lat.get('threads', '?')} thread(s), side by side in one process"
        blocks.append(Table(
            ["model", "method", "input", "test accuracy [95% CI]", "ROC-AUC", "params", "MACs", "MACs vs teacher",
             "CPU latency (batch 1)", "speed-up b1 / b256", "accuracy vs teacher"],
            rows, f"Teacher, students and distillation methods on the test split. {how}."))
        cmds = [f"{r.get('label')}: {r.get('command')}" for r in rows_in if isinstance(r, dict) and r.get("command")]
        if cmds:
            blocks.append(Para("Commands: " + "; ".join(cmds), "note"))
    elif ctx.stages["students"].done:
        blocks.append(Para("The students stage recorded no rows.", "warn"))
    else:
        blocks.append(Para(f"Students and distillation methods: {NOT_RUN}.", "note"))
    return blocks


def _section_transfer(ctx: ReportContext) -> list[Block]:
    o = ctx.out("transfer")
    blocks: list[Block] = []
    zs = ctx.files.json(o.get("zero_shot"))
    if zs is not None:
        # one metrics dict, or one per source model ({"teacher": {...}, "student": {...}})
        per_model = {"model": zs} if "accuracy" in zs else {k: v for k, v in zs.items() if isinstance(v, dict)}
        rows = [_zero_shot_row(name, m) for name, m in per_model.items()]
        task = o.get("task")
        blocks.append(Table(
            ["source model", "accuracy [95% CI]", "ROC-AUC [95% CI]", "threshold (chosen on val)",
             "balanced accuracy at threshold [95% CI]", "temperature (fit on val)", "ECE before / after", "test images"],
            rows, f"Zero-shot{' on ' + str(task) if task else ''}: the models as trained, no target labels used "
                  f"for training; threshold and temperature chosen on the validation split"))
    else:
        blocks.append(Para("Zero-shot: no result recorded.", "note"))
    fs = o.get("few_shot") if isinstance(o.get("few_shot"), dict) else {}
    curve = ctx.files.json(fs.get("curve_json"))
    if curve is not None and isinstance(curve.get("rows"), list):
        rows = []
        for r in curve["rows"]:
            acc, auc = r.get("accuracy") or {}, r.get("roc_auc") or {}
            rows.append([f.text(r.get("mode")), f.text(r.get("shots")), f.pct_ci(acc.get("mean"), acc.get("interval")),
                         f.pct(acc.get("std")), f.num_ci(auc.get("mean"), auc.get("interval"))])
        seeds = ", ".join(str(s) for s in curve.get("seeds", []))
        blocks.append(Table(["mode", "labelled cells per class (K)", "accuracy (mean) [envelope]", "std over seeds", "ROC-AUC"],
                            rows, f"Few-shot {curve.get('source_task')} -> {curve.get('task')}: mean over seeds {seeds}; "
                                  f"interval: bootstrap 95% envelope over seeds; test n={curve.get('n_test')}"))
    elif fs:
        blocks.append(Para(f"Few-shot curve data missing ({fs.get('curve_json')}).", "warn"))
    if fs:
        blocks.append(ctx.files.image(fs.get("curve_png"), "Few-shot curve: accuracy and ROC-AUC vs labelled cells per class"))
    else:
        blocks.append(Para("Few-shot: no result recorded.", "note"))
    return blocks


def _zero_shot_row(name: str, m: Mapping[str, Any]) -> list[str]:
    iv = m.get("intervals") or {}
    op = m.get("operating_point") if isinstance(m.get("operating_point"), dict) else {}
    cal = m.get("calibration") if isinstance(m.get("calibration"), dict) else {}
    op_test = op.get("test") if isinstance(op.get("test"), dict) else {}
    ece = cal.get("test_ece") if isinstance(cal.get("test_ece"), dict) else {}
    return [
        name,
        f.pct_ci(m.get("accuracy"), iv.get("accuracy")),
        f.num_ci(m.get("roc_auc"), iv.get("roc_auc")),
        f.num(m.get("threshold", op.get("threshold"))),
        f.pct_ci(op_test.get("balanced_accuracy"), (op_test.get("intervals") or {}).get("balanced_accuracy")),
        f.num(m.get("temperature", cal.get("temperature"))),
        f"{f.pct(ece.get('before', m.get('ece')))} / {f.pct(ece.get('after'))}",
        f.count(m.get("n")),
    ]


def _section_quant(ctx: ReportContext) -> list[Block]:
    o = ctx.out("export")
    blocks: list[Block] = []
    q = ctx.files.json(o.get("quant"))
    if q is not None:
        fa, qa = q.get("float_accuracy"), q.get("qat_accuracy")
        drop = 100 * (qa - fa) if isinstance(fa, (int, float)) and isinstance(qa, (int, float)) else None
        hls_rec = o.get("hls") if isinstance(o.get("hls"), dict) else {}
        bits = q.get("bits") or hls_rec.get("bits")
        blocks.append(Table(["model", "test accuracy [95% CI]"], [
            [f"float: {q.get('float_model') or 'student'}", f.pct_ci(fa, q.get("float_accuracy_ci"))],
            [f"quantisation-aware: {q.get('qat_model') or 'student'}" + (f" ({bits} bits)" if bits else ""),
             f.pct_ci(qa, q.get("qat_accuracy_ci"))],
            ["change", f.points(drop)],
        ], "Quantisation: float vs quantisation-aware trained student"))
    else:
        blocks.append(Para("Quantisation: no result recorded.", "note"))
    onnx = ctx.files.json(o.get("onnx"))
    if onnx is not None:
        blocks.append(Table(["ONNX check", "value"], [
            ["onnx.checker", f.text(onnx.get("checker"))],
            ["argmax agreement, ONNX Runtime vs torch", f.pct(onnx.get("argmax_agreement"))],
            ["max |logit difference|", _sci(onnx.get("max_abs_diff"))],
            ["crops checked", f.count(onnx.get("n_checked"))],
            ["opset", f.text(onnx.get("opset"))],
            ["checked on", f.text(onnx.get("checked_on"))],
        ], "ONNX export check"))
    hls = ctx.files.json(o.get("hls"))
    if hls is not None:
        ir = hls.get("ir_vs_quant_model") if isinstance(hls.get("ir_vs_quant_model"), dict) else {}
        blocks.append(Table(["emulation check", "value"], [
            ["argmax agreement, hls4ml emulation vs quantised model", f.pct(hls.get("agreement"))],
            ["max |logit difference|", _sci(hls.get("max_abs_diff"))],
            ["bit exact", f.text(hls.get("bit_exact"))],
            ["argmax agreement, fixed-point model vs Brevitas", f.pct(ir.get("agreement"))],
            ["crops checked", f.count(hls.get("n_checked"))],
            ["checked on", f.text(hls.get("checked_on"))],
        ], "FPGA emulation (hls4ml C++) agreement"))
    if onnx is None and hls is None:
        blocks.append(Para("No ONNX or hls4ml export recorded.", "note"))
    return blocks


def _sci(x: Any) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else f.NA


def _section_fpga(ctx: ReportContext) -> list[Block]:
    hls = ctx.files.json(ctx.out("export").get("hls"))
    if hls is None:
        return [Para("No hls4ml bundle recorded: no FPGA estimate.", "note")]
    est = hls.get("estimate") if isinstance(hls.get("estimate"), dict) else {}
    synth = hls.get("synthesis") if isinstance(hls.get("synthesis"), dict) else {}
    blocks: list[Block] = []
    if not synth.get("ran"):
        blocks.append(Para(ESTIMATE_WARNING, "warn"))
    clock = hls.get("clock_ns", est.get("clock_ns"))
    mhz = 1000.0 / clock if isinstance(clock, (int, float)) and clock else None
    blocks.append(Table(["FPGA", "value"], [
        ["part", f.text(hls.get("part"))],
        ["clock", f"{f.unit(clock, 'ns')} ({f.unit(mhz, 'MHz', 0)})"],
        ["latency (estimate)", f"{f.unit(hls.get('latency_us_estimate', est.get('latency_us_estimate')), 'us')}"
                               f" ({f.count(est.get('latency_cycles'))} cycles)"],
        ["initiation interval (estimate)", f"{f.count(est.get('initiation_interval_cycles'))} cycles"],
        ["throughput (estimate)", f.unit(est.get("throughput_per_s_estimate"), "images/s", 0)],
        ["bits (weights, activations)", f.text(hls.get("bits"))],
        ["IO", f.text(hls.get("io_type"))],
        ["synthesised", "yes" if synth.get("ran") else "no (estimate only)"],
    ], "FPGA latency"))
    res = hls.get("resources") if isinstance(hls.get("resources"), dict) else {}
    res_rows = [[str(k), f.count(v) if isinstance(v, (int, float)) else f.text(v)] for k, v in res.items()
                if not isinstance(v, (dict, list))]
    for key, name in (("params", "parameters"), ("weight_bits_total", "weight + bias bits"), ("macs", "MACs"),
                      ("multipliers_upper_bound", "multipliers (upper bound)"), ("reuse_factor", "reuse factor")):
        if key in est and key not in res:
            res_rows.append([name, f.count(est[key])])
    if res_rows:
        blocks.append(Table(["resource (estimate)", "value"], res_rows, "FPGA resources (estimate)"))
    stages = est.get("stages") if isinstance(est.get("stages"), list) else []
    if stages:
        blocks.append(Table(["stage", "in", "out", "weights", "w bits", "act bits", "depth (cycles)"], [
            [f.text(s.get("layer")), f.text(s.get("in", "")), f.text(s.get("out", "")), f.text(s.get("weights", "")),
             f.text(s.get("w_bits", "")), f.text(s.get("act_bits", "") or ""), f.count(s.get("depth_cycles"))]
            for s in stages if isinstance(s, dict)
        ], "Pipeline stages of the estimate"))
    model = hls.get("estimate_model") or est.get("model")
    blocks.append(Para(f"Estimate model: {model}" if model else "Estimate model: not recorded.", "note"))
    if synth and not synth.get("ran") and synth.get("reason"):
        blocks.append(Para(f"Synthesis: {synth['reason']}", "note"))
    return blocks


#: realtime report keys shown, in order: (key, label, formatter)
_RT_RATES: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("frames", "frames", f.count),
    ("frames_processed", "frames processed", f.count),
    ("dropped_frames", "dropped frames", f.count),
    ("frames_per_s", "frames per second", lambda v: f.unit(v, "/s", 1)),
    ("cells_seen", "cells seen (tracks)", f.count),
    ("decisions", "decisions", f.count),
    ("sorted", "sorted", f.count),
    ("cells_per_s", "cells per second", lambda v: f.unit(v, "/s", 1)),
    ("p50_latency_us", "latency p50", lambda v: f.unit(v, "us", 1)),
    ("p99_latency_us", "latency p99", lambda v: f.unit(v, "us", 1)),
    ("max_latency_us", "latency max", lambda v: f.unit(v, "us", 1)),
    ("deadline_us", "deadline", lambda v: f.unit(v, "us", 0)),
    ("late_decisions", "late decisions", f.count),
)
_RT_QUALITY: tuple[tuple[str, str], ...] = (
    ("detection_precision", "detection precision"),
    ("detection_recall", "detection recall"),
    ("accuracy", "classification accuracy (detected cells)"),
    ("purity", "sort purity"),
    ("yield", "sort yield"),
)


def _section_realtime(ctx: ReportContext) -> list[Block]:
    o = ctx.out("realtime")
    rep = ctx.files.json(o.get("report"))
    blocks: list[Block] = []
    if rep is None:
        blocks.append(Para(f"Real-time report missing ({o.get('report')}).", "warn"))
    else:
        setup = ", ".join(f"{k} {rep[k]}" for k in ("backend", "target_class", "threshold", "source_fps", "realtime")
                          if rep.get(k) is not None)
        blocks.append(Table(["rate / latency", "value"], [[lab, fn(rep.get(k))] for k, lab, fn in _RT_RATES if k in rep],
                            f"Throughput and decision latency (frame arrival to decision; {setup})"))
        blocks.append(Table(["quality (vs LymphoSim ground truth)", "value"],
                            [[lab, f.pct(rep.get(k))] for k, lab in _RT_QUALITY], "Detection and sorting quality"))
    blocks.append(ctx.files.image(o.get("histogram"), "Decision latency histogram"))
    return blocks


def _section_embedding(ctx: ReportContext) -> list[Block]:
    o = ctx.out("embedding")
    method = str(o.get("method", "tsne"))
    name = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}.get(method, method)
    return [
        Para(f"{name} map of {f.count(o.get('n'))} teacher features (forward_features, test split), coloured by class.", "p"),
        ctx.files.image(o.get("png"), f"Teacher embedding ({name})"),
    ]


def _section_stages(ctx: ReportContext) -> list[Block]:
    rows = [[r.name, "done" if r.done else NOT_RUN, f.unit(r.seconds, "s", 1), f.text(r.key) if r.key else "",
             r.reason] for r in ctx.stages.values()]
    return [Table(["stage", "status", "time", "key", "note"], rows, "Stage records (RUN/stages/NAME/stage.json)")]


_BUILDERS: dict[str, Callable[[ReportContext], list[Block]]] = {
    "data": _section_data,
    "curves": _section_curves,
    "models": _section_models,
    "transfer": _section_transfer,
    "quant": _section_quant,
    "fpga": _section_fpga,
    "realtime": _section_realtime,
    "embedding": _section_embedding,
    "stages": _section_stages,
}


# ------------------------------------------------------------------------------ entry points


def build_document(run_dir: str | os.PathLike[str]) -> Document:
    """Read RUN's stage records into the report's sections (no file is written)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ConfigError(f"{run} is not a run folder (no such directory)")
    stages = {name: read_stage(run, name) for name in STAGE_NAMES}
    label, banner = describe_data(stages["data"])
    ctx = ReportContext(run, RunFiles(run), stages, label)
    sections = []
    for sid, (title, deps) in SECTIONS.items():
        done = [d for d in deps if stages[d].done]
        if deps and not done:
            reasons = "; ".join(f"{d}: {stages[d].reason}" for d in deps)
            sections.append(Section(sid, title, NOT_RUN, label, reason=reasons))
            continue
        try:
            blocks = _BUILDERS[sid](ctx)
        except Exception as exc:  # a malformed record costs its section, never the report
            log.warning("report section %s failed: %s", sid, exc, exc_info=True)
            blocks = [Para(f"This section could not be built from the stored records: {type(exc).__name__}: {exc}", "warn")]
        sections.append(Section(sid, title, "done", label if deps else "", blocks))
    from lymphosort import __version__

    n_done = sum(r.done for r in stages.values())
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return Document(
        title=f"lymphosort report: {run.resolve().name}",
        subtitle=f"{label}. {n_done} of {len(stages)} stages finished.",
        banner=banner,
        sections=sections,
        footer=f"Built by lymphosort {__version__} on {when} from the stage records in {run.resolve().name}/stages "
               f"(rebuild: lymphosort report {run.resolve().name}).",
    )


def build_report(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write RUN/report.html (self-contained) and RUN/report.md; return both paths."""
    run = Path(run_dir)
    doc = build_document(run)
    html_path, md_path = run / "report.html", run / "report.md"
    _write(html_path, to_html(doc))
    _write(md_path, to_markdown(doc, run))
    return html_path, md_path


def _write(path: Path, text: str) -> None:
    from lymphosort.atomic import write_text_atomic

    # Atomic: a reader (or a browser refresh) never sees half a report.
    write_text_atomic(path, text)
