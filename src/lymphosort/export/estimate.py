"""Latency and resource estimates of the io_stream hls4ml design, without vendor tools.

Model (stated in every estimate; an estimate until Vitis HLS synthesises the design):

- io_stream: pixels enter one per `reuse_factor` cycles; every layer is a dataflow stage
  running concurrently with the others, so the longest stream of any stage bounds
  throughput and latency: hls4ml puts a zero-pad stage before each "same" conv, which
  re-streams the padded map ((H + 2p) * (W + 2p) beats: 34 x 34 = 1,156 for a 32 x 32 input);
- each stage adds its pipeline depth once: a conv's line buffer must hold (k - 1) rows
  plus k pixels of its input before the first output (that fill overlaps the input stream,
  so it counts only for the *last* pixel: a constant per layer, ~k pixels), plus the
  multiply-add tree, ceil(log2(fan-in)) + 2 cycles; a max pool adds 1; the dense stage starts
  after the last feature and adds ceil(log2(F)) + 2 + reuse_factor;
- a fixed overhead of `io_cycles` for the stream interfaces and FIFOs (8 per stage).

So ``cycles ~= max stream beats * RF + sum(stage depths)``; at clock T ns the latency is
``cycles * T``.
Resources: multipliers = weights / reuse factor per layer (products of <= 8-bit operands
usually land in LUTs, not DSPs, so this is an upper bound on DSPs).
"""

from __future__ import annotations

import math
from typing import Any

from lymphosort.export.fixedpoint import FixedPointModel

__all__ = ["ESTIMATE_MODEL", "estimate_stream"]

ESTIMATE_MODEL = (
    "io_stream dataflow: cycles = the longest stage stream (the input, or a conv's zero-padded map) x "
    "reuse factor (all stages overlap) + per-stage pipeline depth (conv: k pixels of line-buffer "
    "lag + ceil(log2 fan-in) + 2; max pool: 1; dense: ceil(log2 F) + 2 + RF) + 8 cycles per stage "
    "for stream FIFOs; latency = cycles x clock period. Not synthesised: confirm with Vitis HLS."
)


def estimate_stream(fp: FixedPointModel, clock_ns: float, reuse_factor: int = 1) -> dict[str, Any]:
    """Per-layer and total cycle estimate, MACs, parameters and weight bits of `fp`."""
    rf = max(int(reuse_factor), 1)
    size = fp.input_size
    beats = size * size  # the longest stream of any stage
    stages: list[dict[str, Any]] = []
    macs = 0
    weight_bits = 0
    multipliers = 0
    for i, lay in enumerate(fp.layers):
        n_w = int(lay.weight.size)
        weight_bits += n_w * lay.w_bits + int(lay.bias.size) * 32
        multipliers += math.ceil(n_w / rf)
        if lay.kind == "conv":
            beats = max(beats, (size + 2 * lay.padding) ** 2)  # hls4ml's zero-pad stage re-streams the map
            k = int(lay.weight.shape[-1])
            out = size + 2 * lay.padding - k + 1
            fan_in = int(lay.weight[0].size)
            macs += n_w * out * out
            depth = k + math.ceil(math.log2(fan_in)) + 2 + 8
            stages.append({"layer": f"conv{i + 1}", "in": size, "out": out, "fan_in": fan_in, "depth_cycles": depth,
                           "weights": n_w, "w_bits": lay.w_bits, "act_bits": lay.out_bits})
            size = out
            if lay.pool > 1:
                size //= lay.pool
                stages.append({"layer": f"pool{i + 1}", "out": size, "depth_cycles": 1 + 8})
        else:
            f = int(lay.weight.shape[1])
            macs += n_w
            stages.append({"layer": "dense", "fan_in": f, "depth_cycles": math.ceil(math.log2(f)) + 2 + rf + 8,
                           "weights": n_w, "w_bits": lay.w_bits})
    stream = fp.input_size * fp.input_size * rf
    interval = beats * rf
    cycles = interval + sum(s["depth_cycles"] for s in stages)
    return {
        "model": ESTIMATE_MODEL,
        "clock_ns": float(clock_ns),
        "reuse_factor": rf,
        "input_stream_cycles": stream,
        "pipeline_cycles": cycles - interval,
        "latency_cycles": cycles,
        "latency_us_estimate": cycles * float(clock_ns) / 1000.0,
        "initiation_interval_cycles": interval,
        "throughput_per_s_estimate": 1e9 / (interval * float(clock_ns)),
        "stages": stages,
        "params": fp.params,
        "weight_bits_total": weight_bits,
        "macs": int(macs),
        "multipliers_upper_bound": int(multipliers),
        "synthesised": False,
    }
