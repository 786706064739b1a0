"""``lymphosort export onnx|hls|rtl RUN --out DIR``: flags generated from each export's config
object; the export's record (export.json / rtl.json) holds the config it ran with."""

from __future__ import annotations

import argparse
from pathlib import Path

from lymphosort.config import add_config_flags, resolve_config

__all__ = ["register"]


def _subcommand(sub: argparse._SubParsersAction, name: str, cls: type, help_: str, run_help: str,
                out_help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_)
    p.add_argument("run", type=Path, help=run_help)
    p.add_argument("--out", type=Path, required=True, help=out_help)
    add_config_flags(p, cls)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    from lymphosort.export.config import HlsExportConfig, OnnxExportConfig, RtlExportConfig

    p = subparsers.add_parser("export", help="ONNX, FPGA (hls4ml) bundles and open RTL from a run folder")
    sub = p.add_subparsers(dest="export_format", metavar="FORMAT", required=True)
    _subcommand(sub, "onnx", OnnxExportConfig, "float ONNX graph checked against torch with ONNX Runtime",
                "run folder holding model.safetensors + model.json", "output folder").set_defaults(func=_main_onnx)
    _subcommand(sub, "hls", HlsExportConfig, "QONNX -> hls4ml bundle of a QAT run, compiled and checked bit for bit",
                "run folder of a QAT student (distill --qat BITS)", "bundle folder").set_defaults(func=_main_hls)
    _subcommand(sub, "rtl", RtlExportConfig,
                "open Verilog of a QAT run (da4ml + streaming glue), Verilator-checked bit for bit",
                "run folder of a QAT student (distill --qat BITS)", "output folder (src/, sim/, rtl.json)",
                ).set_defaults(func=_main_rtl)


def _main_onnx(args: argparse.Namespace) -> int:
    from lymphosort.export.config import OnnxExportConfig
    from lymphosort.export.run import export_onnx_run

    r = export_onnx_run(args.run, args.out, resolve_config(OnnxExportConfig, args))
    print(f"{r['model']}: wrote {r['out']}/model.onnx (opset {r['opset']})")
    print(f"  onnx.checker ok; ONNX Runtime vs torch on {r['n_checked']} crops ({r['checked_on']}): "
          f"max |diff| {r['max_abs_diff']:.2e}, argmax agreement {r['argmax_agreement']:.4f}")
    return 0


def _main_hls(args: argparse.Namespace) -> int:
    from lymphosort.export.bundle import export_hls_run
    from lymphosort.export.config import HlsExportConfig

    r = export_hls_run(args.run, args.out, resolve_config(HlsExportConfig, args))
    print(f"{r['model']}: wrote {r['out']} (hls4ml project, config, test vectors, README)")
    print(f"  emulation vs quantised model on {r['n_checked']} crops: agreement {r['agreement']:.4%}, "
          f"max |diff| {r['max_abs_diff']:.3g}")
    print(f"  estimated latency {r['latency_us_estimate']:.2f} us at {r['clock_ns']} ns (estimate, not synthesised)")
    if r["synthesis"] and not r["synthesis"].get("ran"):
        print(f"  {r['synthesis']['reason']}")
    return 0


def _main_rtl(args: argparse.Namespace) -> int:
    from lymphosort.export.config import RtlExportConfig
    from lymphosort.export.rtl.flow import export_rtl_run

    r = export_rtl_run(args.run, args.out, resolve_config(RtlExportConfig, args))
    if r.get("plan_only"):
        costs = ", ".join(f"{s['name']} {s['da4ml_cost']:,.0f} x {s['copies']}" for s in r["stages"])
        print(f"{r['model']}: wrote {r['out']} (Verilog in src/, rtl.json; not simulated or synthesised)")
        print(f"  da4ml cost {r['da4ml_cost_total']:,.0f} in all (a layer x its copies: {costs})")
        return 0
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
