"""Open RTL backend: the integer IR of a quantised student -> streaming Verilog.

Compiler layout: `plan.lower` (IR -> stream plan), `arith` (per-layer da4ml circuits),
`verilog` (the project's streaming glue and AXI-Stream top), `sim` (Verilator testbench),
`synth` (yosys / nextpnr-ecp5), `flow` (the `lymphosort export rtl` pipeline).
"""

from lymphosort.export.rtl.flow import (ARCHS, RTL_JSON, RtlDesign, RtlExportConfig, RtlMismatchError, check,
                                        export_rtl_run, generate)
from lymphosort.export.rtl.plan import StreamPlan, lower

__all__ = ["ARCHS", "RTL_JSON", "RtlDesign", "RtlExportConfig", "RtlMismatchError", "StreamPlan", "check", "export_rtl_run",
           "generate", "lower"]
