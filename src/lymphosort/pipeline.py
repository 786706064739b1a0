"""The main job: `lymphosort pipeline`, the whole chain as stages with content-hash caching.

Each stage is a function of (its config slice, the outputs of the stages it depends on).
Its key is a hash of both plus the package version; a stage whose key matches the one
stored in `RUN/stages/NAME/stage.json` is skipped, so a rerun with nothing changed takes
seconds and a killed run resumes at the first unfinished stage. Stages only call the
public functions of the other folders: nothing here re-implements them.
"""

# over 400 lines by design: the presets and every stage in data-flow order, read top to bottom
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from lymphosort.atomic import write_json_atomic
from lymphosort.errors import ConfigError
from lymphosort.train.config import DEFAULT_TEACHER

if TYPE_CHECKING:
    from lymphosort.train.config import DistillConfig

log = logging.getLogger(__name__)

#: Presets: the config every stage reads its slice from. `quick` fits `make demo` on
#: 2 CPU cores (small subsets, few epochs: a demonstration, not the benchmark numbers);
#: `paper` reproduces the reference project's settings (ResNet-50 @120 teacher, its
#: students, its recipe as a baseline) for users with a GPU and the real data.
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "quick": {
        "data": {"preset": "default", "n_train": 24_000, "n_test": 8_000, "seed": 0},
        "teacher": {"model": DEFAULT_TEACHER, "epochs": 3, "max_train_samples": 12_000, "batch_size": 128, "seed": 0},
        "students": {
            "epochs": 3,
            "max_train_samples": 8_000,
            "batch_size": 128,
            "seed": 0,
            "rows": [["tiny-32-whole", "kd", None], ["compact-student", "kd", None], ["tiny-32-whole", "kd", 8]],
            "latency_repeats": 15,
        },
        "transfer": {"task": "t8-vs-b", "shots": [5, 25, None], "modes": ["linear"], "seeds": [0, 1], "n_boot": 200},
        "export": {"n_check": 2000, "clock_ns": 5.0},
        "realtime": {"duration": 5.0, "pool_frames": 300, "backend": "onnx"},
        "embedding": {"n": 1000, "method": "tsne"},
    },
    # A minute-long end-to-end check of an install (and the pipeline's own test): every
    # stage on a few hundred images; its numbers mean nothing.
    "smoke": {
        "data": {"preset": "default", "n_train": 900, "n_test": 600, "seed": 0},
        "teacher": {"model": DEFAULT_TEACHER, "epochs": 1, "max_train_samples": 256, "batch_size": 64, "seed": 0},
        "students": {
            "epochs": 1,
            "max_train_samples": 256,
            "batch_size": 64,
            "seed": 0,
            "rows": [["tiny-32-whole", "kd", None], ["tiny-32-whole", "kd", 8]],
            "latency_repeats": 3,
        },
        "transfer": {"task": "t8-vs-b", "shots": [5], "modes": ["linear"], "seeds": [0], "n_boot": 50},
        "export": {"n_check": 100, "clock_ns": 5.0},
        "realtime": {"duration": 1.0, "pool_frames": 60, "backend": "onnx"},
        "embedding": {"n": 150, "method": "tsne"},
    },
    "paper": {
        "data": {"preset": "default", "n_train": 64_000, "n_test": 16_000, "seed": 0},
        "teacher": {"model": "paper-teacher", "epochs": 30, "max_train_samples": None, "batch_size": 64, "seed": 0},
        "students": {
            "epochs": 30,
            "max_train_samples": None,
            "batch_size": 128,
            "seed": 0,
            "rows": [
                ["paper-student1", "kd", None],
                ["paper-student2", "paper", None],
                ["paper-student2", "kd", None],
                ["tiny-32-whole", "kd", None],
                ["tiny-32-whole", "kd", 8],
            ],
            "latency_repeats": 30,
        },
        "transfer": {
            "task": "t8-vs-b",
            "shots": [5, 10, 25, 100, None],
            "modes": ["linear", "partial", "full"],
            "seeds": [0, 1, 2],
            "n_boot": 1000,
        },
        "export": {"n_check": 2000, "clock_ns": 5.0},
        "realtime": {"duration": 30.0, "pool_frames": 1500, "backend": "onnx"},
        "embedding": {"n": 2000, "method": "tsne"},
    },
}


@dataclass
class StageContext:
    """What a stage gets: the run folder, its own output folder, config, and upstream outputs."""

    run_dir: Path
    out_dir: Path
    config: Mapping[str, Any]
    upstream: Mapping[str, Mapping[str, Any]]
    options: Mapping[str, Any] = field(default_factory=dict)


StageFn = Callable[[StageContext], Mapping[str, Any]]


@dataclass(frozen=True)
class Stage:
    name: str
    fn: StageFn
    #: config section(s) the stage reads; only these enter its hash.
    config_keys: tuple[str, ...]
    deps: tuple[str, ...] = ()


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stage_key(stage: Stage, config: Mapping[str, Any], dep_keys: Mapping[str, str], extra: Any = None) -> str:
    from lymphosort import __version__
    from lymphosort.data.synth.presets import SIM_VERSION

    return _hash(
        {
            "stage": stage.name,
            "config": {k: config.get(k) for k in stage.config_keys},
            "deps": {d: dep_keys[d] for d in stage.deps},
            "extra": extra,
            "version": __version__,
            "sim_version": SIM_VERSION,  # a new simulator renders new data: nothing cached survives it
        }
    )


def run_stages(
    stages: list[Stage],
    run_dir: Path,
    config: Mapping[str, Any],
    *,
    options: Mapping[str, Any] | None = None,
    force: bool = False,
    console: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Run stages in order, skipping those whose key matches a finished record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for i, stage in enumerate(stages, 1):
        missing = [d for d in stage.deps if d not in keys]
        if missing:
            raise ConfigError(f"stage {stage.name!r} depends on {missing}, which run later or not at all")
        # `extra` lets options that change results (e.g. an explicit data root) enter the key.
        key = stage_key(stage, config, keys, extra=(options or {}).get(f"{stage.name}.key"))
        keys[stage.name] = key
        out_dir = run_dir / "stages" / stage.name
        record_path = out_dir / "stage.json"
        header = f"[{i}/{len(stages)}] {stage.name}"
        if not force and record_path.exists():
            record = json.loads(record_path.read_text())
            if record.get("key") == key and record.get("status") == "done":
                console(f"{header}: up to date (key {key}), skipped")
                outputs[stage.name] = record["outputs"]
                continue
        console(f"{header}: running")
        # Outputs of a different configuration are stale; those of the same key are a killed
        # run's partial work, kept so the stage can resume (e.g. training from last.ckpt).
        key_file = out_dir / ".key"
        if out_dir.exists() and (force or not key_file.exists() or key_file.read_text() != key):
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        key_file.write_text(key)
        t0 = time.perf_counter()
        ctx = StageContext(run_dir, out_dir, config, {d: outputs[d] for d in stage.deps}, options or {})
        result = dict(stage.fn(ctx))
        elapsed = time.perf_counter() - t0
        # Written last and atomically: a stage killed mid-way leaves no "done" record.
        write_json_atomic(record_path, {"stage": stage.name, "key": key, "status": "done", "seconds": elapsed,
                                        "outputs": result}, default=str)
        console(f"{header}: done in {elapsed:.1f} s")
        outputs[stage.name] = result
    return outputs


# --------------------------------------------------------------------------- stages


def stage_data(ctx: StageContext) -> dict[str, Any]:
    """Real LymphoMNIST when present or downloadable; otherwise LymphoSim (the default)."""
    from lymphosort.data import lymphomnist

    cfg = ctx.config["data"]
    explicit_root = ctx.options.get("data_root")
    root: Path
    if explicit_root is not None:
        root = Path(explicit_root)
        if not all(p.is_file() for p in lymphomnist.raw_files(root).values()):
            log.info("no LymphoMNIST files under %s; trying to download", root)
            lymphomnist.download(root)
    else:
        from lymphosort.data.synth import write_lymphomnist

        root = ctx.out_dir / "lymphosim"
        write_lymphomnist(root, n_train=cfg["n_train"], n_test=cfg["n_test"], seed=cfg["seed"], preset=cfg["preset"])
    return _data_card(ctx, root)


def _data_card(ctx: StageContext, root: Path) -> dict[str, Any]:
    from lymphosort.data import lymphomnist
    from lymphosort.data.grid import write_sample_grid

    out_dir = ctx.out_dir
    card: dict[str, Any] = {"root": _rel(ctx, root), "provenance": lymphomnist.read_provenance(root), "splits": {}}
    for split in ("train", "val", "test"):
        data = lymphomnist.load_split(root, split, "3-class")
        counts = data.labels.bincount(minlength=len(data.classes)).tolist()
        card["splits"][split] = {"n": len(data.labels), "counts": dict(zip(data.classes, counts)), "split_id": data.split_id}
    grid = out_dir / "samples.png"
    write_sample_grid(root, grid, split="test", n=8)
    card["sample_grid"] = _rel(ctx, grid)
    write_json_atomic(out_dir / "data_card.json", card)
    return card


def _rel(ctx: StageContext, path: Path | str) -> str:
    """Paths in stage records are relative to the run folder, so a moved run still reports."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(ctx.run_dir.resolve()))
    except ValueError:
        return str(p.resolve())


def _abs(ctx: StageContext, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else ctx.run_dir / p


_METRIC_KEYS = ("n", "accuracy", "balanced_accuracy", "f1", "roc_auc", "ece", "confusion", "intervals", "class_names")


def _metrics_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in _METRIC_KEYS if k in metrics}


def stage_teacher(ctx: StageContext) -> dict[str, Any]:
    """The T4-vs-B teacher, through `train.fit` (resumes from last.ckpt after a kill)."""
    from lymphosort.train.config import TrainConfig
    from lymphosort.train.fit import LAST_CKPT, fit

    c = ctx.config["teacher"]
    run = ctx.out_dir / "run"
    cfg = TrainConfig(
        model=c["model"], task="t4-vs-b", data_root=str(_abs(ctx, ctx.upstream["data"]["root"])),
        epochs=c["epochs"], batch_size=c["batch_size"], max_train_samples=c["max_train_samples"], seed=c["seed"],
    )
    result = fit(cfg, run, resume=(run / LAST_CKPT).is_file(), quiet=True)
    eval_dir = run / "eval" / "t4-vs-b-test"
    return {
        "run": _rel(ctx, run),
        "model": c["model"],
        "metrics": _metrics_summary(result.test_metrics or {}),
        "curves": _rel(ctx, run / "curves.png"),
        "plots": {k: _rel(ctx, eval_dir / f"{k}.png") for k in ("roc", "confusion", "reliability")},
    }


def _student_configs(ctx: StageContext) -> list[tuple[str, str, DistillConfig, Path]]:
    """(key, label, config, run folder) of each configured student row."""
    from lymphosort.models.quant import qat_twin
    from lymphosort.train.config import DistillConfig

    c = ctx.config["students"]
    teacher = _abs(ctx, ctx.upstream["teacher"]["run"])
    root = _abs(ctx, ctx.upstream["data"]["root"])
    rows = []
    floats = {(student, method) for student, method, bits in c["rows"] if not bits}
    for student, method, bits in c["rows"]:
        key = f"{student}-{method}" + (f"-q{bits}" if bits else "")
        label = f"{student} ({method}" + (f", {bits}-bit QAT)" if bits else ")")
        model, kwargs = qat_twin(student, bits) if bits else (student, {})
        # A QAT row fine-tunes its float row's student (listed, so distilled, before it).
        init = ctx.out_dir / f"{student}-{method}" if bits and (student, method) in floats else None
        cfg = DistillConfig.for_teacher(
            teacher, model=model, model_kwargs=kwargs, method=method, data_root=str(root), epochs=c["epochs"],
            seed=c["seed"], max_train_samples=c["max_train_samples"], batch_size=c["batch_size"],
            init_from=str(init) if init else None)
        rows.append((key, label, cfg, ctx.out_dir / key))
    return rows


def stage_students(ctx: StageContext) -> dict[str, Any]:
    """Distil each configured student (as `lymphosort distill`), then compare side by side."""
    from lymphosort.config import command_flags
    from lymphosort.evaluate.compare import RunRow, compare_runs
    from lymphosort.train.fit import LAST_CKPT, fit

    runs = [RunRow("teacher", f"{ctx.upstream['teacher']['model']} (teacher)", _abs(ctx, ctx.upstream["teacher"]["run"]),
                   "lymphosort pipeline (teacher stage)")]
    for key, label, cfg, out in _student_configs(ctx):
        if not (out / "metrics.json").is_file():
            if out.exists() and not (out / LAST_CKPT).is_file():
                shutil.rmtree(out)  # a run killed before its first checkpoint: start it again
            fit(cfg, out, resume=(out / LAST_CKPT).is_file(), quiet=True)
        runs.append(RunRow(key, label, out, " ".join(["lymphosort distill --out", str(out), *command_flags(cfg)])))
    table = compare_runs(runs, latency_repeats=ctx.config["students"]["latency_repeats"])
    for row in table["rows"]:
        row["run"] = _rel(ctx, row["run"])
    write_json_atomic(ctx.out_dir / "compare.json", table, default=str)
    return {
        "rows": table["rows"],
        "curves": {r["label"]: _rel(ctx, _abs(ctx, r["run"]) / "curves.png") for r in table["rows"]},
        "latency": table["latency"],
    }


def _student_row(ctx: StageContext, quantised: bool) -> dict[str, Any]:
    """The first tiny student row (float or QAT): what goes to ONNX, the FPGA and the sorter."""
    for row in ctx.upstream["students"]["rows"]:
        if row["key"] == "teacher":
            continue
        if ("-q" in row["key"]) == quantised and row["model"].startswith(("tiny", "paper-student2")):
            return row
    raise ConfigError(f"no {'QAT' if quantised else 'float'} tiny student among the pipeline's student rows")


def stage_transfer(ctx: StageContext) -> dict[str, Any]:
    """Zero-shot T8 vs B (teacher and tiny student) and the few-shot curve of the teacher."""
    from lymphosort.transfer.fewshot import few_shot
    from lymphosort.transfer.finetune import FinetuneConfig
    from lymphosort.transfer.shots import lymphomnist_data
    from lymphosort.transfer.zeroshot import ZeroShotConfig, zero_shot

    c = ctx.config["transfer"]
    root = _abs(ctx, ctx.upstream["data"]["root"])
    teacher = _abs(ctx, ctx.upstream["teacher"]["run"])
    zs = {}
    for name, run in (("teacher", teacher), ("student", _abs(ctx, _student_row(ctx, quantised=False)["run"]))):
        m = zero_shot(run, ZeroShotConfig(task=c["task"], data_root=str(root), n_boot=c["n_boot"], latency=False),
                      ctx.out_dir / "zero-shot" / name)
        zs[name] = {**_metrics_summary(m), **{k: m["zero_shot"].get(k) for k in ("operating_point", "calibration")}}
    fs_dir = ctx.out_dir / "few-shot"
    few_shot(teacher, lymphomnist_data(root, c["task"]), fs_dir, shots=c["shots"], modes=c["modes"],
             seeds=c["seeds"], base=FinetuneConfig(n_boot=c["n_boot"]))
    return {
        "task": c["task"],
        "zero_shot": zs,
        "few_shot": {k: _rel(ctx, fs_dir / f) for k, f in
                     (("curve_json", "curve.json"), ("curve_png", "curve.png"), ("table_md", "table.md"))},
    }


def stage_export(ctx: StageContext) -> dict[str, Any]:
    """ONNX of the float tiny student; hls4ml bundle of its QAT twin, checked bit for bit."""
    from lymphosort.export.bundle import export_hls_run
    from lymphosort.export.config import HlsExportConfig, OnnxExportConfig
    from lymphosort.export.run import export_onnx_run

    c = ctx.config["export"]
    root = str(_abs(ctx, ctx.upstream["data"]["root"]))
    float_row, qat_row = _student_row(ctx, quantised=False), _student_row(ctx, quantised=True)
    onnx = export_onnx_run(_abs(ctx, float_row["run"]), ctx.out_dir / "onnx",
                           OnnxExportConfig(data_root=root, n_check=c["n_check"]))
    hls = export_hls_run(_abs(ctx, qat_row["run"]), ctx.out_dir / "hls",
                         HlsExportConfig(data_root=root, n_check=c["n_check"], clock_ns=c["clock_ns"]))
    for rec, d in ((onnx, "onnx"), (hls, "hls")):
        rec.pop("out", None)
        rec["dir"] = _rel(ctx, ctx.out_dir / d)
    return {
        "onnx": onnx,
        "hls": hls,
        "quant": {"float_model": float_row["label"], "float_accuracy": float_row["accuracy"],
                  "float_accuracy_ci": float_row["accuracy_ci"], "qat_model": qat_row["label"],
                  "qat_accuracy": qat_row["accuracy"], "qat_accuracy_ci": qat_row["accuracy_ci"]},
    }


def stage_realtime(ctx: StageContext) -> dict[str, Any]:
    """The sorter path on simulated flow, driving the exported ONNX student."""
    from dataclasses import replace

    from lymphosort.realtime.session import RealtimeConfig, run_realtime
    from lymphosort.report.plots import plot_latency_histogram

    c = ctx.config["realtime"]
    report = ctx.out_dir / "realtime.json"
    base = RealtimeConfig()
    cfg = RealtimeConfig(model=str(_abs(ctx, ctx.upstream["export"]["onnx"]["dir"])), backend=c["backend"],
                         duration=c["duration"], report=str(report), sim=replace(base.sim, pool_frames=c["pool_frames"]))
    rep = run_realtime(cfg)  # writes realtime.json (cfg.report)
    hist = ctx.out_dir / "latency.png"
    plot_latency_histogram(rep, hist)
    return {"report": {k: v for k, v in rep.items() if not isinstance(v, (list, dict)) or k in ("latency_histogram",)},
            "histogram": _rel(ctx, hist)}


def stage_embedding(ctx: StageContext) -> dict[str, Any]:
    """t-SNE of the teacher's features on test crops, coloured by class (B, T4, T8)."""
    import numpy as np

    from lymphosort.data.lymphomnist import load_split
    from lymphosort.report.embedding import embedding_map
    from lymphosort.models.checkpoint import load_checkpoint
    from lymphosort.transfer.heads import FeatureCache

    c = ctx.config["embedding"]
    model, _ = load_checkpoint(_abs(ctx, ctx.upstream["teacher"]["run"]))
    data = load_split(_abs(ctx, ctx.upstream["data"]["root"]), "test", "3-class")
    idx = np.random.default_rng(0).permutation(len(data.labels))[: c["n"]]
    feats = FeatureCache(model).get(data, idx)
    png = embedding_map(feats.numpy(), data.labels[idx].numpy(), list(data.classes), ctx.out_dir / "embedding.png",
                        method=c["method"], seed=0)
    return {"png": _rel(ctx, png), "method": c["method"], "n": int(len(idx))}


#: The stages of the main job, in data-flow order.
STAGES: list[Stage] = [
    Stage("data", stage_data, ("data",)),
    Stage("teacher", stage_teacher, ("teacher",), deps=("data",)),
    Stage("students", stage_students, ("students",), deps=("data", "teacher")),
    Stage("transfer", stage_transfer, ("transfer",), deps=("data", "teacher", "students")),
    Stage("export", stage_export, ("export",), deps=("data", "students")),
    Stage("realtime", stage_realtime, ("realtime",), deps=("export",)),
    Stage("embedding", stage_embedding, ("embedding",), deps=("data", "teacher")),
]


def preset_config(preset: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stages' config: a preset, with `overrides` (section -> key -> value, e.g. from a
    YAML file) on top; an unknown section or key is refused."""
    try:
        config = json.loads(json.dumps(PRESETS[preset]))  # deep copy, JSON-clean
    except KeyError:
        raise ConfigError(f"unknown pipeline preset {preset!r}; choose one of {', '.join(PRESETS)}") from None
    for section, values in (overrides or {}).items():
        if section not in config or not isinstance(values, Mapping):
            raise ConfigError(f"pipeline config: {section!r} is not a stage section with keys; sections: "
                              f"{', '.join(config)}")
        unknown = sorted(set(values) - set(config[section]))
        if unknown:
            raise ConfigError(f"pipeline config: unknown key(s) {', '.join(unknown)} in {section!r}; known: "
                              f"{', '.join(config[section])}")
        config[section].update(json.loads(json.dumps(dict(values))))
    return config


def run_pipeline(out: Path, preset: str = "quick", data_root: Path | None = None, force: bool = False,
                 overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    config = preset_config(preset, overrides)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "config.json", {"preset": preset, **config})  # the resolved config, as run
    options: dict[str, Any] = {}
    if data_root is not None:
        options["data_root"] = str(data_root)
        options["data.key"] = str(Path(data_root).resolve())
    outputs = run_stages(STAGES, out, config, options=options, force=force)
    from lymphosort.report.build import build_report

    html, md = build_report(out)
    print(f"report: {html} and {md}")
    return outputs


def _run_from_args(a: argparse.Namespace) -> int:
    from lymphosort.config import load_mapping

    run_pipeline(a.out, a.preset, a.data_root, a.force, load_mapping(a.config) if a.config else None)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run the whole chain on the embedded default and write a report")
    p.add_argument("--out", type=Path, required=True, help="run folder (RUNS/NAME)")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML/JSON of preset sections to change (data only), e.g. {teacher: {epochs: 5}}; "
                   "the resolved config is written to RUN/config.json")
    p.add_argument("--data-root", type=Path, default=None, help="real LymphoMNIST root (default: LymphoSim)")
    p.add_argument("--force", action="store_true", help="rerun every stage even when up to date")
    p.set_defaults(func=_run_from_args)
