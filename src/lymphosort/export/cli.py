"""``lymphosort export onnx|hls|rtl RUN --out DIR``: deployable artefacts from a run folder.

Every bundle carries a copy of the run's ``model.json`` (the model card: input size,
normalisation, classes) so the preprocessing travels with the model, and an
``export.json`` recording how the export was checked.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

__all__ = ["register", "export_onnx_run", "export_hls_run", "check_images", "reusable_onnx_export", "weights_digest",
           "MIN_AGREEMENT"]

#: `export hls` fails below this emulation-vs-quantised-model argmax agreement.
MIN_AGREEMENT = 0.999

log = logging.getLogger(__name__)


def check_images(card: Any, data_root: Path | None, n: int, *, split: str = "test") -> tuple[Any, str]:
    """Up to `n` uint8 crops [n,64,64] of `split` for the card's task, and where they came from.

    The data root is `data_root`, else the one recorded in the run's config. Falls back to
    seeded random crops (said so in the returned description) when neither exists, so an
    export can still be checked on a machine without the data set.
    """
    import numpy as np
    import torch

    from lymphosort.data.lymphomnist import load_split
    from lymphosort.errors import DatasetNotFoundError

    root = data_root if data_root is not None else card.config.get("data_root")
    task = card.task or "t4-vs-b"
    if root is not None:
        try:
            data = load_split(root, split, task)
            return data.images[:n], f"{split} split of {root} ({task}, split {data.split_id})"
        except (DatasetNotFoundError, FileNotFoundError, OSError) as exc:
            log.warning("cannot read %s (%s); checking on random crops instead", root, exc)
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, size=(n, 64, 64), dtype=np.uint8)), "random uint8 crops (seed 0)"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from lymphosort.atomic import write_json_atomic
    from lymphosort.train.checkpoint import jsonable

    write_json_atomic(path, jsonable(data), allow_nan=False)


def _copy_card(run: Path, out: Path) -> None:
    from lymphosort.atomic import atomic_write
    from lymphosort.train.checkpoint import CARD_FILE

    atomic_write(out / CARD_FILE, lambda tmp: shutil.copyfile(run / CARD_FILE, tmp))


def weights_digest(run: str | Path) -> str:
    """sha256 of RUN/model.safetensors: names the weights an export was made from."""
    import hashlib

    from lymphosort.train.checkpoint import WEIGHTS_FILE

    h = hashlib.sha256()
    with open(Path(run) / WEIGHTS_FILE, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_onnx_run(
    run: str | Path, out: str | Path, *, data_root: str | Path | None = None, n_check: int = 2000, opset: int = 17
) -> dict[str, Any]:
    """Export RUN's model to OUT/model.onnx, copy model.json, check it, write export.json.

    export.json goes last and records the weights' sha256 and whether the check passed, so
    a killed or failed export is never taken for a good one (see `reusable_onnx_export`).
    Raises `ExportError` when the float export differs from torch by more than 1e-4.
    """
    from lymphosort.export.onnx import FLOAT_TOLERANCE, ExportError, check_onnx, export_onnx
    from lymphosort.train.checkpoint import load_checkpoint

    run, out = Path(run), Path(out)
    model, card = load_checkpoint(run)
    (out / "export.json").unlink(missing_ok=True)
    onnx_path = export_onnx(model, out / "model.onnx", opset=opset)
    _copy_card(run, out)
    images, source = check_images(card, Path(data_root) if data_root else None, n_check)
    result = check_onnx(onnx_path, model, images)
    from lymphosort.models.quant import float_name

    quantised = float_name(card.model) is not None
    record = {
        "format": "onnx",
        "run": str(run),
        "weights_sha256": weights_digest(run),
        # Quantised models are exported as their float graph: no tolerance applies.
        "passed": quantised or result["max_abs_diff"] <= FLOAT_TOLERANCE,
        "model": card.model,
        "create_kwargs": card.create_kwargs,
        "input": {"name": "input", "shape": ["N", 1, model.spec.input_size, model.spec.input_size],
                  "dtype": "float32", "mean": model.spec.mean, "std": model.spec.std, "fov": model.spec.fov,
                  "preprocessing": "uint8/255, centred fov x fov window (when fov is set), bilinear resize "
                                   "(antialiased) to input_size, (x - mean) / std"},
        "output": {"name": "logits", "classes": list(card.classes)},
        "checked_on": source,
        **result,
    }
    _write_json(out / "export.json", record)
    if not quantised and result["max_abs_diff"] > FLOAT_TOLERANCE:
        raise ExportError(
            f"ONNX Runtime differs from torch by {result['max_abs_diff']:.3g} > {FLOAT_TOLERANCE} "
            f"on {result['n_checked']} crops (see {out / 'export.json'})"
        )
    record["out"] = str(out)
    return record


def reusable_onnx_export(run: str | Path, out: str | Path) -> dict[str, Any] | None:
    """OUT's export.json when OUT holds a passed ONNX export of RUN's current weights, else None."""
    out = Path(out)
    record_path = out / "export.json"
    if not (record_path.is_file() and (out / "model.onnx").is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("format") != "onnx" or record.get("passed") is not True:
        return None
    return record if record.get("weights_sha256") == weights_digest(run) else None


def export_hls_run(
    run: str | Path,
    out: str | Path,
    *,
    data_root: str | Path | None = None,
    n_check: int = 2000,
    part: str | None = None,
    clock_ns: float | None = None,
    io_type: str = "io_stream",
    config: str | Path | None = None,
    reuse_factor: int = 1,
    n_tb: int = 100,
    synth: bool = False,
) -> dict[str, Any]:
    """The FPGA hand-off bundle of a QAT run (see docs/fpga.md); raises `ExportError` when the
    compiled emulation agrees with the quantised model on fewer than 99.9% of `n_check` crops."""
    import time

    import numpy as np
    import torch
    import yaml

    from lymphosort.errors import ConfigError
    from lymphosort.export.estimate import estimate_stream
    from lymphosort.export.fixedpoint import from_quant_model
    from lymphosort.export.hls import DEFAULT_CLOCK_NS, DEFAULT_PART, check_agreement, convert
    from lymphosort.export.onnx import ExportError
    from lymphosort.models.quant import QuantConvStudent
    from lymphosort.train.checkpoint import load_checkpoint

    run, out = Path(run), Path(out)
    part = part or DEFAULT_PART
    clock_ns = float(clock_ns or DEFAULT_CLOCK_NS)
    model, card = load_checkpoint(run)
    if not isinstance(model, QuantConvStudent):
        raise ConfigError(
            f"{run} holds the float model {card.model!r}; the FPGA path takes a QAT student "
            f"(train one with `lymphosort distill ... --qat 8`)"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").unlink(missing_ok=True)  # the record goes last: never trust a killed export
    _copy_card(run, out)
    fp = from_quant_model(model, classes=card.classes)
    fp.save(out)
    images, source = check_images(card, Path(data_root) if data_root else None, n_check)
    x = fp.preprocess(images)
    with torch.inference_mode():
        brevitas_logits = model(x).double().numpy()
    ir_logits = fp.predict_from_input(x)
    user_cfg = None
    if config is not None:
        user_cfg = yaml.safe_load(Path(config).read_text(encoding="utf-8"))
        if not isinstance(user_cfg, dict) or "LayerName" not in user_cfg:
            raise ConfigError(f"{config} is not an hls4ml config (a mapping with Model and LayerName)")
    t0 = time.perf_counter()
    # hls4ml narrates every layer on stdout; keep that in the bundle, not on the console.
    with open(out / "hls4ml.log", "w", encoding="utf-8") as hls_log, contextlib.redirect_stdout(hls_log):
        hm, cfg = convert(fp, out, config=user_cfg, part=part, clock_ns=clock_ns, io_type=io_type,
                          tb_input=x[:n_tb].numpy(), reuse_factor=reuse_factor)
        hm.compile()
    if user_cfg is None and reuse_factor != 1:
        log.warning("--reuse-factor only applies to the generated config")
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    agreement = check_agreement(hm, fp, x.numpy())
    emu_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    fp.predict_logits(images)
    fast_s = time.perf_counter() - t0
    est = estimate_stream(fp, clock_ns, reuse_factor)
    bits = sorted({lay.w_bits for lay in fp.layers} | {lay.out_bits for lay in fp.layers if lay.out_bits})
    record: dict[str, Any] = {
        "format": "hls4ml",
        "run": str(run),
        "model": card.model,
        "classes": list(card.classes),
        "checked_on": source,
        **agreement,
        "ir_vs_quant_model": {
            "agreement": float(np.mean(ir_logits.argmax(1) == brevitas_logits.argmax(1))) if len(x) else None,
            "max_abs_diff": float(np.max(np.abs(ir_logits - brevitas_logits))) if len(x) else None,
        },
        "bits": max(bits),
        "bits_per_layer": [{"w": lay.w_bits, "act": lay.out_bits} for lay in fp.layers],
        "input_bits": fp.input_bits,
        "input": {"size": fp.input_size, "fov": fp.fov, "mean": fp.mean, "std": fp.std},
        "part": part,
        "clock_ns": clock_ns,
        "io_type": io_type,
        "latency_us_estimate": est["latency_us_estimate"],
        "estimate": est,
        "speed": {
            "compile_s": compile_s,
            "emulation_images_per_s": len(x) / emu_s if emu_s else None,
            "fixedpoint_images_per_s": len(x) / fast_s if fast_s else None,
        },
        "synthesis": None,
    }
    if synth:
        record["synthesis"] = _synthesise(hm)
    _write_json(out / "export.json", record)
    from lymphosort.atomic import write_text_atomic

    write_text_atomic(out / "README.md", _readme(record, cfg))
    if agreement["agreement"] is not None and agreement["agreement"] < MIN_AGREEMENT:
        raise ExportError(
            f"hls4ml emulation agrees with the quantised model on only {agreement['agreement']:.4%} of "
            f"{agreement['n_checked']} crops (< {MIN_AGREEMENT:.1%}); see {out / 'export.json'}"
        )
    record["out"] = str(out)
    return record


def _synthesise(hm: Any) -> dict[str, Any]:
    if not (shutil.which("vitis_hls") or shutil.which("vitis-run")):
        msg = "Vitis HLS is not on PATH: synthesis skipped. Run `vitis_hls -f build_prj.tcl` in hls_prj/ on a Vitis machine."
        log.warning(msg)
        return {"ran": False, "reason": msg}
    report = hm.build(csim=True, synth=True, cosim=False)
    return {"ran": True, "report": report}


def _readme(r: dict[str, Any], cfg: dict[str, Any]) -> str:
    est = r["estimate"]
    inp = r.get("input") or {}
    size, fov = inp.get("size"), inp.get("fov")
    prep = (f"the centred {fov}x{fov} window of the 64x64 crop" + ("" if fov == size else f" resized to {size}x{size}")
            if fov else f"resize to {size}x{size}")
    stages = "\n".join(
        f"| {s['layer']} | {s.get('in', '')} | {s.get('out', '')} | {s.get('weights', '')} | "
        f"{s.get('w_bits', '')} | {s.get('act_bits', '') or ''} | {s['depth_cycles']} |"
        for s in est["stages"]
    )
    return f"""# FPGA bundle: {r['model']} ({', '.join(r['classes'])})

Generated by `lymphosort export hls`. What runs on the FPGA is the integer network checked
here: the hls4ml C++ emulation agreed with the quantised model on {r['agreement']:.4%} of
{r['n_checked']} crops ({r['checked_on']}), max |logit difference| {r['max_abs_diff']:.3g}
(bit exact: {r['bit_exact']}).

## Target
- part `{r['part']}`, clock {r['clock_ns']} ns ({1000 / r['clock_ns']:.0f} MHz), hls4ml Vitis backend, `{r['io_type']}`
- weights and activations: {r['bits']} bits at most (per layer: {r['bits_per_layer']}), input {r['input_bits']} bits

## Interface
- input: an AXI stream of the normalised image, one pixel per beat, row-major, {est['input_stream_cycles'] // est['reuse_factor']} beats,
  type `fixed<40,4>` (the first layer quantises it to {r['input_bits']} bits). Normalise on the host or in
  the camera pipeline as `model.json` says: uint8 / 255, {prep}, (x - mean) / std.
- output: an AXI stream of {len(r['classes'])} logits (classes in `model.json` order). No softmax: decide by
  argmax, or threshold the logit difference (class 1 - class 0) for a tunable sort gate.

## Build (on a machine with Vitis HLS)
```
cd hls_prj
vitis_hls -f build_prj.tcl "csim=1 synth=1 cosim=1"   # C sim, synthesis, RTL co-simulation
```
C and co-simulation read `tb_data/` (inputs and the expected logits of the integer model, from
`tb_vectors/`). Edit `hls_config.yaml` (types, reuse factors, strategy) and regenerate with
`lymphosort export hls RUN --out DIR --config hls_config.yaml`.

## Expected latency (an estimate until synthesised)
{est['latency_cycles']} cycles = **{est['latency_us_estimate']:.2f} us** at {r['clock_ns']} ns; a new image every
{est['initiation_interval_cycles']} cycles ({est['throughput_per_s_estimate']:,.0f} images/s).
Model: {est['model']}

| stage | in | out | weights | w bits | act bits | depth (cycles) |
|---|---|---|---|---|---|---|
{stages}

{est['params']:,} parameters, {est['weight_bits_total']:,} weight+bias bits, {est['macs']:,} MACs,
<= {est['multipliers_upper_bound']:,} multipliers at reuse factor {est['reuse_factor']} (small products map to LUTs).
Conv layers after a pool receive a pixel only every 4 (8, 16) cycles, so their ReuseFactor can be
raised to 4 (16, 64) in `hls_config.yaml` to save multipliers without adding latency.

## Files
- `hls_prj/`: the hls4ml project (firmware/, weights, testbench, build_prj.tcl)
- `hls_config.yaml`: the config used; `model.qonnx.onnx` (+ `_clean`): the QONNX the project came from
- `fixedpoint.json` + `fixedpoint.npz`: the integer network (bit-exact software model:
  `lymphosort.export.fixedpoint.load_fixedpoint(DIR).predict_logits(images_uint8)`)
- `model.json`: the model card; `export.json`: checks, estimate and speeds
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="ONNX, FPGA (hls4ml) bundles and open RTL from a run folder")
    sub = p.add_subparsers(dest="export_format", metavar="FORMAT", required=True)

    o = sub.add_parser("onnx", help="float ONNX graph checked against torch with ONNX Runtime")
    o.add_argument("run", type=Path, help="run folder holding model.safetensors + model.json")
    o.add_argument("--out", type=Path, required=True, help="output folder")
    o.add_argument("--data-root", type=Path, default=None, help="data root for the check crops (default: the run's)")
    o.add_argument("--n-check", type=int, default=2000, help="test crops compared (default %(default)s)")
    o.add_argument("--opset", type=int, default=17)
    o.set_defaults(func=_main_onnx)

    h = sub.add_parser("hls", help="QONNX -> hls4ml bundle of a QAT run, compiled and checked bit for bit")
    h.add_argument("run", type=Path, help="run folder of a QAT student (distill --qat BITS)")
    h.add_argument("--out", type=Path, required=True, help="bundle folder")
    h.add_argument("--data-root", type=Path, default=None, help="data root for the check crops (default: the run's)")
    h.add_argument("--n-check", type=int, default=2000, help="test crops for the agreement check (default %(default)s)")
    h.add_argument("--part", default=None, help="FPGA part (default xczu7ev-ffvc1156-2-e)")
    h.add_argument("--clock-ns", type=float, default=None, help="clock period in ns (default 5.0)")
    h.add_argument("--io", dest="io_type", choices=("stream",), default="stream", help="hls4ml IO type (io_stream)")
    h.add_argument("--config", type=Path, default=None, help="edited hls_config.yaml to use instead of the generated one")
    h.add_argument("--reuse-factor", type=int, default=1, help="reuse factor of the generated config and the estimate")
    h.add_argument("--n-tb", type=int, default=100, help="test vectors written for C/co-simulation")
    h.add_argument("--synth", action="store_true", help="also run Vitis HLS synthesis (needs vitis_hls on PATH)")
    h.set_defaults(func=_main_hls)

    r = sub.add_parser("rtl", help="open Verilog of a QAT run (da4ml + streaming glue), Verilator-checked bit for bit")
    r.add_argument("run", type=Path, help="run folder of a QAT student (distill --qat BITS)")
    r.add_argument("--out", type=Path, required=True, help="output folder (src/, sim/, rtl.json)")
    r.add_argument("--arch", choices=("stream",), default="stream",
                   help="stream: one pixel a cycle, fixed-weight da4ml circuit a layer (default)")
    r.add_argument("--clock-ns", type=float, default=10.0, help="target clock for place-and-route (default %(default)s)")
    r.add_argument("--n-check", type=int, default=2000, help="test crops simulated and compared (default %(default)s)")
    r.add_argument("--data-root", type=Path, default=None, help="data root for the check crops (default: the run's)")
    r.add_argument("--synth", action="store_true", help="yosys synth_ecp5 resource counts (slow: minutes, GBs)")
    r.add_argument("--pnr", action="store_true", help="also nextpnr-ecp5 place and route for a routed Fmax (slower)")
    r.add_argument("--device", choices=("25k", "45k", "85k"), default="85k", help="ECP5 device for --pnr")
    r.add_argument("--pnr-timeout", type=float, default=None, metavar="S", help="give place and route up to S seconds")
    r.add_argument("--latency-cutoff", type=float, default=5.0, metavar="L",
                   help="da4ml adder levels between pipeline registers: lower = more cycles, higher Fmax (default 5)")
    r.set_defaults(func=_main_rtl)


def _main_onnx(args: argparse.Namespace) -> int:
    r = export_onnx_run(args.run, args.out, data_root=args.data_root, n_check=args.n_check, opset=args.opset)
    print(f"{r['model']}: wrote {r['out']}/model.onnx (opset {r['opset']})")
    print(f"  onnx.checker ok; ONNX Runtime vs torch on {r['n_checked']} crops ({r['checked_on']}): "
          f"max |diff| {r['max_abs_diff']:.2e}, argmax agreement {r['argmax_agreement']:.4f}")
    return 0


def _main_hls(args: argparse.Namespace) -> int:
    r = export_hls_run(
        args.run, args.out, data_root=args.data_root, n_check=args.n_check, part=args.part,
        clock_ns=args.clock_ns, io_type=f"io_{args.io_type}", config=args.config,
        reuse_factor=args.reuse_factor, n_tb=args.n_tb, synth=args.synth,
    )
    print(f"{r['model']}: wrote {r['out']} (hls4ml project, config, test vectors, README)")
    print(f"  emulation vs quantised model on {r['n_checked']} crops: agreement {r['agreement']:.4%}, "
          f"max |diff| {r['max_abs_diff']:.3g}")
    print(f"  estimated latency {r['latency_us_estimate']:.2f} us at {r['clock_ns']} ns (estimate, not synthesised)")
    if r["synthesis"] and not r["synthesis"].get("ran"):
        print(f"  {r['synthesis']['reason']}")
    return 0


def _main_rtl(args: argparse.Namespace) -> int:
    from lymphosort.export.rtl.flow import export_rtl_run

    r = export_rtl_run(args.run, args.out, arch=args.arch, clock_ns=args.clock_ns, n_check=args.n_check,
                       data_root=args.data_root, synth=args.synth, pnr=args.pnr, device=args.device,
                       pnr_timeout_s=args.pnr_timeout, latency_cutoff=args.latency_cutoff)
    print(f"{r['model']}: wrote {r['out']} (Verilog in src/, Verilator testbench in sim/, rtl.json)")
    print(f"  RTL vs integer evaluator on {r['n_checked']} crops: {r['mismatches']} mismatches; latency "
          f"{r['latency_cycles']} cycles, a frame every {r['initiation_interval']} cycles")
    if r["luts"] is not None:
        print(f"  yosys ({r['part']}): {r['luts']:,} LUT4, {r['ffs']:,} FF, {r['dsps']} DSP, {r['brams']} BRAM")
    pr = r.get("place_and_route")
    if pr:
        print(f"  place and route: Fmax {r['fmax_mhz']} MHz, latency {r['latency_us']} us" if pr.get("ran")
              else f"  place and route skipped: {pr.get('reason')}")
    return 0
