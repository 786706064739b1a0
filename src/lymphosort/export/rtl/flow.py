"""The `export rtl` flow: IR -> plan -> Verilog -> Verilator check (-> yosys -> nextpnr)."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lymphosort.export.config import RtlExportConfig
from lymphosort.export.fixedpoint import FixedPointModel
from lymphosort.export.rtl.arith import DA4ML_VERSION, CmvmCircuit, build_cmvm, write_static_sources
from lymphosort.export.rtl.plan import ARCHS, ConvStage, DenseStage, StreamPlan, lower
from lymphosort.export.rtl.sim import build, simulate, verilator_version, write_testbench
from lymphosort.export.rtl.verilog import LOGIT_BITS, write_design

__all__ = ["ARCHS", "RtlDesign", "RtlExportConfig", "RtlMismatchError", "generate", "check", "frames_of", "export_rtl_run",
           "RTL_JSON"]

RTL_JSON = "rtl.json"
TOP = "lymphosort_top"

log = logging.getLogger(__name__)


class RtlMismatchError(RuntimeError):
    """The simulated RTL disagrees with the integer evaluator (first differing crop saved)."""


@dataclass
class RtlDesign:
    plan: StreamPlan
    circuits: dict[str, CmvmCircuit]
    src_dir: Path
    sources: list[Path]
    top: str = TOP


def generate(fp: FixedPointModel, out: Path, *, arch: str = "stream", latency_cutoff: float = 5.0,
             pixels_per_cycle: int = 1) -> RtlDesign:
    """Write the Verilog of `fp` under OUT/src (da4ml circuits, static primitives, glue)."""
    plan = lower(fp, pixels_per_cycle, arch)
    src = Path(out).resolve() / "src"  # absolute: Verilator and yosys run in other folders
    circuits: dict[str, CmvmCircuit] = {}
    sources = write_static_sources(src / "static")
    for st in plan.stages:
        if isinstance(st, (ConvStage, DenseStage)) and st.share is None:
            in_bits = st.in_bits
            signed = st.in_signed if isinstance(st, ConvStage) else False
            t0 = time.perf_counter()
            cm = build_cmvm(f"{st.name}_mac", st.matrix, st.bias, in_bits, signed, src / "mac", latency_cutoff)
            log.info("%s: da4ml %dx%d, cost %.0f, latency %d (%.1f s)", st.name, cm.n_in, cm.n_out, cm.cost,
                     cm.latency, time.perf_counter() - t0)
            circuits[st.name] = cm
    sources += sorted((src / "mac").glob("*.v"))
    sources += write_design(plan, circuits, src, TOP)
    return RtlDesign(plan, circuits, src, sources)


def frames_of(fp: FixedPointModel, images_uint8: Any) -> np.ndarray:
    """What the camera streams: the model's native-resolution window of each 64x64 crop."""
    from lymphosort.data.transforms import center_window

    imgs = np.asarray(images_uint8, dtype=np.uint8)
    return np.ascontiguousarray(center_window(imgs, fp.fov) if fp.fov is not None else imgs)


def expected_logits(fp: FixedPointModel, images_uint8: Any) -> np.ndarray:
    """The integer evaluator's logits in accumulator units (what the RTL outputs)."""
    z = fp.predict_logits(images_uint8) * 2.0 ** (-fp.layers[-1].acc_exp)
    zi = np.rint(z).astype(np.int64)
    assert np.array_equal(zi, z), "integer evaluator logits are not integers in accumulator units"
    return zi


def _stats(v: np.ndarray) -> dict[str, Any]:
    if len(v) == 0:
        return {}
    return {"min": int(v.min()), "median": float(np.median(v)), "max": int(v.max()), "n": int(len(v))}


def check(design: RtlDesign, fp: FixedPointModel, images_uint8: Any, work: Path, *, gap_pct: int = 0,
          jobs: int | None = None) -> dict[str, Any]:
    """Build the simulator, stream the crops, compare bit for bit; measure latency and II.

    Back to back (``gap_pct=0``): latency = cycles from accepting an image's first pixel to
    taking its logits; initiation interval = cycles between consecutive first pixels.
    With gaps, the source and sink idle at random (`gap_pct` % of cycles): checks the
    handshakes only. Raises `RtlMismatchError` on the first differing crop.
    """
    work = Path(work).resolve()  # the build runs inside it: relative paths would point elsewhere
    work.mkdir(parents=True, exist_ok=True)
    n_out = design.plan.dense.matrix.shape[1]
    tb = write_testbench(work / "tb.cpp", design.top, n_out, LOGIT_BITS, design.plan.pixels_per_cycle)
    t0 = time.perf_counter()
    exe = build(work, design.sources, tb, design.top, jobs)
    build_s = time.perf_counter() - t0
    frames = frames_of(fp, images_uint8)
    want = expected_logits(fp, images_uint8)
    t0 = time.perf_counter()
    res = simulate(exe, frames, n_out, work, gap_pct=gap_pct)
    sim_s = time.perf_counter() - t0
    bad = np.flatnonzero((res.logits != want).any(1))
    record = {
        "n_checked": int(len(want)),
        "mismatches": int(len(bad)),
        "design_err": bool(res.err),
        "gap_pct": gap_pct,
        "latency": _stats(res.t_out - res.t_first),
        "after_last_pixel": _stats(res.t_out - res.t_last),
        "interval": _stats(np.diff(res.t_first)),
        "build_s": round(build_s, 1),
        "sim_s": round(sim_s, 2),
        "sim_cycles": res.cycles,
    }
    if len(bad) or res.err:
        i = int(bad[0]) if len(bad) else 0
        np.save(work / "first_mismatch_crop.npy", np.asarray(images_uint8)[i])
        (work / "first_mismatch.json").write_text(json.dumps(
            {"index": i, "rtl": res.logits[i].tolist(), "integer_evaluator": want[i].tolist(),
             "design_err": bool(res.err)}, indent=2) + "\n")
        raise RtlMismatchError(
            f"RTL differs from the integer evaluator on {len(bad)} of {len(want)} crops (design err={res.err}); "
            f"first crop saved to {work / 'first_mismatch_crop.npy'}")
    return record


def export_rtl_run(run: str | Path, out: str | Path, cfg: RtlExportConfig = RtlExportConfig()) -> dict[str, Any]:
    """Verilog of a QAT run, checked bit for bit in Verilator; writes OUT/rtl.json.

    Raises `RtlMismatchError` (after writing rtl.json) when any crop differs.
    """
    import shutil

    from lymphosort.config import to_mapping
    from lymphosort.errors import ConfigError
    from lymphosort.export.run import check_images, write_record
    from lymphosort.export.fixedpoint import from_quant_model
    from lymphosort.export.rtl.synth import ECP5_PARTS, pnr_ecp5, synth_ecp5
    from lymphosort.models.quant import QuantConvStudent
    from lymphosort.models.checkpoint import CARD_FILE, load_checkpoint

    run, out = Path(run), Path(out)
    model, card = load_checkpoint(run)
    if not isinstance(model, QuantConvStudent):
        raise ConfigError(f"{run} holds the float model {card.model!r}; the RTL path takes a QAT student "
                          "(train one with `lymphosort distill ... --qat 8`)")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / CARD_FILE, out / CARD_FILE)
    fp = from_quant_model(model, classes=card.classes)
    fp.save(out)
    t0 = time.perf_counter()
    arch, clock_ns, device = cfg.arch, cfg.clock_ns, cfg.device
    design = generate(fp, out, arch=arch, latency_cutoff=cfg.latency_cutoff, pixels_per_cycle=cfg.pixels_per_cycle)
    gen_s = time.perf_counter() - t0
    copies = circuit_copies(design)
    stages = [{"name": n, "da4ml_cost": c.cost, "copies": copies[n], "mac_latency": c.latency, "n_in": c.n_in,
               "n_out": c.n_out} for n, c in design.circuits.items()]
    record: dict[str, Any] = {
        "arch": arch, "pixels_per_cycle": cfg.pixels_per_cycle, "model": card.model, "run": str(run), "classes": list(card.classes), "checked_on": None,
        "n_checked": None, "mismatches": None, "latency_cycles": None, "initiation_interval": None,
        "fmax_mhz": None, "latency_us": None, "part": None, "luts": None, "ffs": None, "dsps": None, "brams": None,
        "clock_ns_target": clock_ns,
        "interface": {"input": f"AXI-Stream, {design.plan.pixels_per_cycle} uint8 pixel(s) a beat (pixel j in byte j), "
                               f"{design.plan.size}x{design.plan.size} pixels a frame in raster order "
                               + (f"(the centred {fp.fov}-pixel window)" if fp.fov else "(the whole crop)")
                               + ("" if design.plan.table is None else ", no resize")
                               + (f", shrunk to {fp.input_size}x{fp.input_size} in hardware"
                                  if design.plan.table is None else "") + ", tlast on the last",
                      "output": f"one beat, {len(card.classes)} x {LOGIT_BITS}-bit signed logits, lane j = class j, "
                                f"logit = value * 2**{fp.layers[-1].acc_exp}"},
        "latency_definition": "clock edges from accepting a frame's first pixel to taking its logits, frames back to back",
        "stages": stages,
        # da4ml's LUT-equivalent cost of all the arithmetic: it tracks the logic cells a design packs
        # into (docs/fpga.md), so it ranks designs in seconds
        "da4ml_cost_total": round(sum(st["da4ml_cost"] * st["copies"] for st in stages), 1),
        "lanes": {st.name: st.lanes for st in design.plan.stages},
        "channels": [int(layer.weight.shape[0]) for layer in fp.layers if layer.kind == "conv"],
        "widths": {"input": int(fp.input_bits), "weights": [int(layer.w_bits) for layer in fp.layers],
                   "activations": [int(layer.out_bits) for layer in fp.layers if layer.out_bits is not None]},
        "time_shared": [{"name": st.name, "n_in": int(st.matrix.shape[0]), "n_out": int(st.matrix.shape[1]),
                         "multipliers": st.share.dsps(int(st.matrix.shape[1])), "steps": st.share.steps,
                         "fifo_depth": st.share.depth}
                        for st in design.plan.stages if isinstance(st, (ConvStage, DenseStage)) and st.share],
        "tools": {"da4ml": DA4ML_VERSION, "verilator": verilator_version()},
        "latency_cutoff": cfg.latency_cutoff,
        "config": to_mapping(cfg),
        "generate_s": round(gen_s, 1),
        "accuracy": twin_accuracy(run),
    }
    if cfg.plan_only:
        record["plan_only"] = True
        write_record(out / RTL_JSON, record)
        record["out"] = str(out)
        return record
    images, record["checked_on"] = check_images(card, Path(cfg.data_root) if cfg.data_root else None, cfg.n_check)
    images = np.asarray(images)
    try:
        sim = check(design, fp, images, out / "sim")
        gaps = check(design, fp, images[:cfg.n_gap_check], out / "sim", gap_pct=25) if cfg.n_gap_check else None
    except RtlMismatchError:
        record["mismatches"] = "see sim/first_mismatch.json"
        write_record(out / RTL_JSON, record)
        raise
    record.update(n_checked=sim["n_checked"], mismatches=0,
                  latency_cycles=int(sim["latency"]["max"]),
                  initiation_interval=int(sim["interval"]["max"]) if sim["interval"] else None,
                  simulation={"back_to_back": sim, "random_gaps": gaps})
    if cfg.synth or cfg.pnr:
        syn = synth_ecp5(design.sources, design.top, out / "synth")
        record.update(luts=syn["luts"], ffs=syn["ffs"], dsps=syn["dsps"], brams=syn["brams"], synthesis=syn)
        record["tools"]["yosys"] = syn["tool"]
        record["part"] = ECP5_PARTS[device][0] + " (yosys synth_ecp5 counts)"
        if cfg.pnr:
            pr = pnr_ecp5(syn, out / "synth", device=device, freq_mhz=round(1000.0 / clock_ns, 3),
                           timeout_s=cfg.pnr_timeout_s, seed=cfg.pnr_seed)
            record["place_and_route"] = pr
            record["part"] = pr["part"]
            if pr.get("ran"):
                record["tools"]["nextpnr"] = pr.get("tool")
                record["fmax_mhz"] = pr["fmax_mhz"]
                if pr["fmax_mhz"]:
                    record["latency_us"] = round(record["latency_cycles"] / pr["fmax_mhz"], 3)
    write_record(out / RTL_JSON, record)
    record["out"] = str(out)
    return record


def circuit_copies(design: RtlDesign) -> dict[str, int]:
    """How many copies of each da4ml circuit the design holds: a conv's once a lane, the dense once."""
    return {st.name: st.lanes if isinstance(st, ConvStage) else 1
            for st in design.plan.stages if st.name in design.circuits}


def twin_accuracy(run: Path) -> dict[str, Any] | None:
    """The test accuracy the design carries: the QAT run's metrics.json and its float parent's
    (the run it was fine-tuned from, `init_from`), so a latency row shows what it costs in
    accuracy. None when the run was never evaluated."""
    from lymphosort.models.checkpoint import read_card

    def acc(folder: Path) -> dict[str, Any] | None:
        f = folder / "metrics.json"
        if not f.is_file():
            return None
        m = json.loads(f.read_text(encoding="utf-8"))
        data = {k: v for k, v in (m.get("data") or {}).items() if k in ("source", "generator", "version", "preset", "seed")}
        return {"run": str(folder), "accuracy": m.get("accuracy"), "n": m.get("n"), "data": data}

    twin = acc(run)
    if twin is None:
        return None
    parent = read_card(run).config.get("init_from")  # the card keeps the resolved training config
    return {"twin": twin, "float": acc(Path(parent)) if parent else None}
