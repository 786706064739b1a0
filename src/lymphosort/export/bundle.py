"""The FPGA hand-off bundle of a QAT run (`lymphosort export hls`): the integer network as an
hls4ml project, compiled and checked bit for bit against the quantised model (docs/fpga.md)."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from lymphosort.export.config import HlsExportConfig
from lymphosort.export.run import check_images, copy_card, write_record

__all__ = ["HlsExportConfig", "MIN_AGREEMENT", "export_hls_run"]

#: `export hls` fails below this emulation-vs-quantised-model argmax agreement.
MIN_AGREEMENT = 0.999

log = logging.getLogger(__name__)


# long by design: convert, compile, check and record: the record needs every step's numbers
def export_hls_run(run: str | Path, out: str | Path, cfg: HlsExportConfig = HlsExportConfig()) -> dict[str, Any]:
    """The FPGA hand-off bundle of a QAT run (see docs/fpga.md); raises `ExportError` when the
    compiled emulation agrees with the quantised model on fewer than 99.9% of `n_check` crops."""
    import time

    import numpy as np
    import torch
    import yaml

    from lymphosort.errors import ConfigError
    from lymphosort.export.estimate import estimate_stream
    from lymphosort.export.fixedpoint import from_quant_model
    from lymphosort.export.hls import DEFAULT_CLOCK_NS, DEFAULT_PART, check_agreement, convert, input_type
    from lymphosort.export.onnx import ExportError
    from lymphosort.models.quant import QuantConvStudent
    from lymphosort.models.checkpoint import load_checkpoint

    from lymphosort.config import to_mapping

    run, out = Path(run), Path(out)
    part = cfg.part or DEFAULT_PART
    clock_ns = float(cfg.clock_ns or DEFAULT_CLOCK_NS)
    io_type, config, reuse_factor, n_tb = cfg.io_type, cfg.hls_config, cfg.reuse_factor, cfg.n_tb
    model, card = load_checkpoint(run)
    if not isinstance(model, QuantConvStudent):
        raise ConfigError(
            f"{run} holds the float model {card.model!r}; the FPGA path takes a QAT student "
            f"(train one with `lymphosort distill ... --qat 8`)"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "export.json").unlink(missing_ok=True)  # the record goes last: never trust a killed export
    copy_card(run, out)
    fp = from_quant_model(model, classes=card.classes)
    fp.save(out)
    images, source = check_images(card, Path(cfg.data_root) if cfg.data_root else None, cfg.n_check)
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
        hm, hls_cfg = convert(fp, out, config=user_cfg, part=part, clock_ns=clock_ns, io_type=io_type,
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
        "config": to_mapping(cfg),
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
        "input_type": input_type(fp),
        "input_exp": fp.input_exp,
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
    if cfg.synth:
        record["synthesis"] = _synthesise(hm)
    write_record(out / "export.json", record)
    from lymphosort.atomic import write_text_atomic

    write_text_atomic(out / "README.md", _readme(record, hls_cfg))
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


def _readme(r: dict[str, Any], hls_cfg: dict[str, Any]) -> str:
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
- input: an AXI stream of the model's input image, one pixel per beat, row-major, {est['input_stream_cycles'] // est['reuse_factor']} beats,
  type `{r['input_type']}`: each pixel is already the integer input level of the first layer ({r['input_bits']} bits;
  no transpose stage: one grey channel has the same order channels-first or -last). The camera's
  uint8 crop becomes these levels as `fixedpoint.json` defines them
  (`lymphosort.export.fixedpoint.load_fixedpoint(DIR).input_ints(crops_uint8)`: {prep}, normalised as
  `model.json` says, rounded half to even and saturated): on the host, or in hardware with the
  front end that `lymphosort export rtl` generates (its `shrink_*` stages take one uint8 camera
  pixel a beat). hls4ml puts a zero-pad stage before each "same" conv, which re-streams the
  padded map: the longest stream is {est['initiation_interval_cycles'] // est['reuse_factor']} beats.
- output: an AXI stream of {len(r['classes'])} logits (classes in `model.json` order). No softmax: decide by
  argmax, or threshold the logit difference (class 1 - class 0) for a tunable sort gate.

## Build (on a machine with Vitis HLS)
```
cd hls_prj
vitis_hls -f build_prj.tcl "csim=1 synth=1 cosim=1"   # C sim, synthesis, RTL co-simulation
```
C and co-simulation read `tb_data/` (inputs and the expected logits of the integer model, from
`tb_vectors/`). Edit `hls_config.yaml` (types, reuse factors, strategy) and regenerate with
`lymphosort export hls RUN --out DIR --hls-config hls_config.yaml`.

## Expected latency (an estimate: this design is not synthesised here)
No Vitis HLS on the build machines, so this design's cycles are not measured. The measured
numbers are the open RTL flow's (`lymphosort export rtl`: Verilator-simulated cycles, open
place and route; BENCHMARKS.md, "Deployment"), for students it accepts. This bundle's estimate:
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
