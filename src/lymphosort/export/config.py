"""The config objects of `lymphosort export onnx|hls|rtl` (plain data, no heavy imports: the
CLI builds its flags from them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["HlsExportConfig", "OnnxExportConfig", "RtlExportConfig"]


@dataclass(frozen=True)
class OnnxExportConfig:
    """`lymphosort export onnx`."""

    #: data root of the check crops (none: the run's)
    data_root: str | None = None
    #: test crops compared between ONNX Runtime and torch
    n_check: int = 2000
    #: ONNX opset
    opset: int = 17


@dataclass(frozen=True)
class HlsExportConfig:
    """`lymphosort export hls`."""

    #: data root of the check crops (none: the run's)
    data_root: str | None = None
    #: test crops for the agreement check
    n_check: int = 2000
    #: FPGA part (none: xczu7ev-ffvc1156-2-e)
    part: str | None = None
    #: clock period in ns (none: 5.0)
    clock_ns: float | None = None
    #: hls4ml IO type
    io_type: Literal["io_stream"] = "io_stream"
    #: an edited hls_config.yaml to use instead of the generated one
    hls_config: str | None = None
    #: reuse factor of the generated config and the estimate
    reuse_factor: int = 1
    #: test vectors written for C/co-simulation
    n_tb: int = 100
    #: also run Vitis HLS synthesis (needs vitis_hls on PATH)
    synth: bool = False


@dataclass(frozen=True)
class RtlExportConfig:
    """`lymphosort export rtl`."""

    #: stream: a fixed-weight da4ml circuit a layer (one copy per pixel lane); mixed: the last
    #: conv and the dense layer time-shared on 18x18 multipliers (DSPs), the rest as stream
    arch: Literal["stream", "mixed"] = "stream"
    #: input pixels a cycle (a power of two: an AXI-Stream beat of this many bytes); each 2x2
    #: pool halves the lanes
    pixels_per_cycle: int = 1
    #: target clock for place-and-route (ns)
    clock_ns: float = 10.0
    #: test crops simulated and compared bit for bit
    n_check: int = 2000
    #: data root of the check crops (none: the run's)
    data_root: str | None = None
    #: yosys synth_ecp5 resource counts (slow: minutes, GBs)
    synth: bool = False
    #: also nextpnr-ecp5 place and route for a routed Fmax (slower)
    pnr: bool = False
    #: ECP5 device for place and route
    device: Literal["25k", "45k", "85k"] = "85k"
    #: da4ml adder levels between pipeline registers: lower = more cycles, higher Fmax
    latency_cutoff: float = 5.0
    #: crops also simulated with random gaps in the input stream
    n_gap_check: int = 50
    #: give place and route up to this many seconds (none: no limit)
    pnr_timeout_s: float | None = None
    #: nextpnr's random seed (none: its default); placement, and so whether a crowded design
    #: routes in time, varies with it: another seed is a cheap second try
    pnr_seed: int | None = None
    #: stop after generating the Verilog: rtl.json gets the plan (lanes, da4ml cost a layer and
    #: in all), no simulation or synthesis; seconds, to choose a design before hours of place
    #: and route
    plan_only: bool = False
