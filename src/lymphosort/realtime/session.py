"""What `lymphosort realtime` does, as a function of its config object: open a model and a
source, run the sorter path (or classify stills), and return the JSON report."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal

from lymphosort.realtime.sources import SimConfig

__all__ = ["RUN_ONNX_CACHE", "RealtimeConfig", "onnx_model_folder", "run_realtime"]

#: Where `--backend onnx --model RUN` keeps the export of a trained run.
RUN_ONNX_CACHE = Path("export") / "onnx"


@dataclass(frozen=True)
class RealtimeConfig:
    """`lymphosort realtime`: a model, a frame source and the sorter's operating point."""

    #: run folder (torch or onnx: exported once to RUN/export/onnx and reused), an `export
    #: onnx` folder (onnx) or an hls bundle (hls)
    model: str = ""
    #: 'sim' (LymphoSim), a folder of frames, an image or a video file
    source: str = "sim"
    #: torch (a run folder), onnx, hls (the integer network of an hls or rtl export), rtl (the
    #: Verilog of an rtl export in its Verilator simulator: slow, a check)
    backend: Literal["torch", "onnx", "hls", "rtl"] = "onnx"
    #: intra-op threads of the backend
    threads: int = 1
    #: seconds of stream
    duration: float = 10.0
    max_frames: int | None = None
    #: write the JSON report here
    report: str | None = None
    #: write one JSON trigger event per line here
    events: str | None = None
    #: choose the threshold reaching this purity on LymphoSim calibration crops
    target_purity: float | None = None
    #: sort when p(target) >= this (none: 0.5, or from target_purity)
    threshold: float | None = None
    #: class name to sort (none: the last class)
    sort_class: str | None = None
    #: pace the source at its frame rate (off: as fast as possible, for throughput runs)
    paced: bool = True
    #: frames buffered (~deadline x fps); with a worker on every core, ~16 absorbs the host's
    #: stalls of a few ms (docs/realtime.md, Benchmarks)
    queue_size: int = 4
    drop: Literal["oldest", "newest", "block"] = "oldest"
    #: a decision later than this counts as late (reported)
    deadline_us: float = 1000.0
    #: trigger line, px from the left (none: 40% of the width)
    trigger_x: float | None = None
    #: frame rate of a file source (none: the file's own or unpaced); a LymphoSim source uses sim.fps
    fps: float | None = None
    #: images are independent stills (crops): detect with a background from each image
    still: bool = False
    #: decision worker processes, one per core: with N > 1 the simulated camera images N
    #: parallel channels (lanes), each decided by its own worker (source 'sim' only)
    workers: int = 1
    #: the LymphoSim flow stream (source 'sim')
    sim: SimConfig = field(default_factory=SimConfig)

    @property
    def sim_stream(self) -> SimConfig:
        """The LymphoSim stream run: `sim`, at `fps` when that is given."""
        return self.sim if self.fps is None else replace(self.sim, fps=self.fps)

    def validate(self) -> "RealtimeConfig":
        from lymphosort.errors import ConfigError

        if not self.model:
            raise ConfigError("realtime needs a model (--model RUN)")
        if self.threshold is not None and self.target_purity is not None:
            raise ConfigError("give a threshold or a target purity, not both")
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.workers > 1 and (self.source != "sim" or self.still):
            raise ConfigError("several workers need the simulated multi-channel camera (source 'sim', no --still)")
        return self


def onnx_model_folder(model: Path, say: Callable[[str], None]) -> Path:
    """The ONNX folder for `model`: itself when it holds model.onnx; for a trained run
    folder, its export in RUN/export/onnx, made and checked as `export onnx` does when
    missing or made from other weights, else reused. `say` tells the user which."""
    from lymphosort.export.run import export_onnx_run, reusable_onnx_export
    from lymphosort.models.checkpoint import WEIGHTS_FILE

    if (model / "model.onnx").is_file() or not (model / WEIGHTS_FILE).is_file():
        return model  # an export folder (or something the backend will explain it cannot load)
    cache = model / RUN_ONNX_CACHE
    record = reusable_onnx_export(model, cache)
    if record is not None:
        say(f"reusing the ONNX export {cache} (made from these weights; checked on {record['n_checked']} crops, "
            f"max |diff| {record['max_abs_diff']:.2e})")
        return cache
    say(f"exporting {model} to ONNX in {cache} (once; checked like `lymphosort export onnx`) ...")
    record = export_onnx_run(model, cache)
    say(f"  checked on {record['n_checked']} crops ({record['checked_on']}): max |diff| {record['max_abs_diff']:.2e}, "
        f"argmax agreement {record['argmax_agreement']:.4f}")
    return cache


def _still(cfg: RealtimeConfig, model: Path) -> dict[str, Any]:
    from lymphosort.realtime.backends import load_backend
    from lymphosort.realtime.crop import crop_cells
    from lymphosort.realtime.detect import detect_still
    from lymphosort.realtime.sources import IMAGE_SUFFIXES, SourceError, load_grey

    src = Path(cfg.source)
    files = sorted(q for q in src.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES) if src.is_dir() else [src]
    if not files or not files[0].exists():
        raise SourceError(f"no images at {src}")
    backend = load_backend(cfg.backend, model, threads=cfg.threads)
    rows = []
    for f in files:
        img = load_grey(f)
        dets = detect_still(img)
        probs = backend.predict_proba(crop_cells(img, [(d.x, d.y) for d in dets])) if dets else []
        rows.append({"file": f.name, "detections": [
            {"x": d.x, "y": d.y, "box": list(d.box), "area": d.area, "doublet": d.doublet,
             "probs": [float(v) for v in pr]} for d, pr in zip(dets, probs)]})
    return {"mode": "still", "images": len(rows), "with_one_detection": sum(len(r["detections"]) == 1 for r in rows),
            "results": rows}


def _run_workers(cfg: RealtimeConfig, model: Path, target: int, threshold: float, run_cfg: Any,
                 say: Callable[[str], None]) -> dict[str, Any]:
    """`cfg.workers` processes, one lane of the simulated camera each (`realtime.workers`)."""
    import json

    from lymphosort.realtime.workers import EVENT_FIELDS, LanePool, run_workers

    sim = cfg.sim_stream
    say(f"rendering {sim.pool_frames} LymphoSim frames for each of {cfg.workers} channels ...")
    pool = LanePool(sim, cfg.workers)
    log = None
    if cfg.events:  # the merged log is written as it becomes final: a stopped run keeps its prefix
        Path(cfg.events).parent.mkdir(parents=True, exist_ok=True)
        log = open(cfg.events, "w", encoding="utf-8")

    def write(events: list[tuple[Any, ...]]) -> None:
        assert log is not None
        log.write("".join(json.dumps(dict(zip(EVENT_FIELDS, e))) + "\n" for e in events))
        log.flush()

    try:
        rep = run_workers(pool, str(model), cfg.backend, workers=cfg.workers, target=target, threshold=threshold,
                          run=run_cfg, threads=cfg.threads, on_events=write if log is not None else None)
    finally:
        pool.close()
        if log is not None:
            log.close()
    rep.pop("events")
    rep.update(threshold=threshold, sim={**vars(sim), "render_s": rep.pop("render_s")})
    return rep


def run_realtime(cfg: RealtimeConfig, say: Callable[[str], None] = lambda msg: None,
                 live: bool = False) -> dict[str, Any]:
    """Run the sorter path (or the still mode) and return its report; `live` shows a live view."""
    from lymphosort.config import to_mapping
    from lymphosort.errors import ConfigError
    from lymphosort.realtime.backends import load_backend
    from lymphosort.realtime.gate import calibrate_threshold
    from lymphosort.realtime.runner import RunConfig, task_label_map
    from lymphosort.realtime.track import TrackerConfig

    cfg.validate()
    model = Path(cfg.model)
    if cfg.backend == "onnx":
        model = onnx_model_folder(model, say)
    if cfg.still:
        rep = {**_still(cfg, model), "config": to_mapping(cfg)}
        return _write_report(cfg, rep)
    backend = load_backend(cfg.backend, model, threads=cfg.threads)
    classes = list(backend.classes)
    if cfg.sort_class is None:
        target = len(classes) - 1
    elif cfg.sort_class in classes:
        target = classes.index(cfg.sort_class)
    else:
        raise ConfigError(f"sort class {cfg.sort_class!r} is not one of {classes}")
    label_map = task_label_map(backend.card)
    calib = None
    if cfg.target_purity is not None:
        threshold, calib = calibrate_threshold(backend, target, cfg.target_purity, label_map, preset=cfg.sim.preset)
    else:
        threshold = 0.5 if cfg.threshold is None else cfg.threshold
    run_cfg = RunConfig(duration_s=cfg.duration, max_frames=cfg.max_frames, realtime=cfg.paced,
                        queue_size=cfg.queue_size, drop=cfg.drop, deadline_us=cfg.deadline_us,
                        tracker=TrackerConfig(trigger_x=cfg.trigger_x))
    if cfg.workers > 1:
        rep = _run_workers(cfg, model, target, threshold, run_cfg, say)
    else:
        rep = _run_one(cfg, backend, target, threshold, run_cfg, label_map, say, live)
    rep.update({"model": cfg.model, "model_folder": str(model), "source": cfg.source, "threshold_from":
                f"target purity {cfg.target_purity} on calibration crops" if calib else "given",
                "config": to_mapping(cfg)})
    if calib is not None:
        rep["calibration_curve"] = calib[::5]
    return _write_report(cfg, rep)


def _write_report(cfg: RealtimeConfig, rep: dict[str, Any]) -> dict[str, Any]:
    """`rep` written to `cfg.report` (JSON, atomically) when one is named; returns it."""
    if cfg.report:
        import json

        from lymphosort.atomic import write_text_atomic

        write_text_atomic(cfg.report, json.dumps(rep, indent=2, default=str) + "\n")
    return rep


def _run_one(cfg: RealtimeConfig, backend: Any, target: int, threshold: float, run_cfg: Any,
             label_map: Any, say: Callable[[str], None], live: bool) -> dict[str, Any]:
    """One stream in this process (`RealtimeRunner`), from the simulated camera or a file source."""
    from lymphosort.realtime.gate import Gate, JsonlSink
    from lymphosort.realtime.report import LiveView
    from lymphosort.realtime.runner import RealtimeRunner
    from lymphosort.realtime.sources import SimSource, open_source

    if cfg.source == "sim":
        sim = cfg.sim_stream
        say(f"rendering {sim.pool_frames} LymphoSim frames ...")
        source: Any = SimSource(sim)
    else:
        source = open_source(cfg.source, fps=cfg.fps)
    sink = JsonlSink(Path(cfg.events)) if cfg.events else None
    runner = RealtimeRunner(source, backend, Gate(target, threshold), sink, run_cfg, label_map)
    if live:
        with LiveView(runner.snapshot):
            rep = runner.run()
    else:
        rep = runner.run()
    if isinstance(source, SimSource):
        rep["sim"] = {**vars(source.config), "render_s": source.render_s,
                      "render_frames_per_s": source.config.pool_frames / source.render_s if source.render_s else None}
    return rep
