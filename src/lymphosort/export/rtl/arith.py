"""Per-layer arithmetic from da4ml: one fixed-weight constant-matrix-vector circuit a layer.

da4ml turns ``y = x @ M + b`` (integer constants) into a shift-add network and pipelines
it at `latency_cutoff` adder levels a register stage. We use its Verilog emitters directly
(not `RTLModel.write`, which adds vendor build scripts and a `lookup_table.v` that yosys
rejects when no table exists) and keep its uniform-width IO wrapper, whose layout we
recompute here so the glue knows where every element sits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["CmvmCircuit", "build_cmvm", "write_if_changed", "write_static_sources", "DA4ML_VERSION"]

try:
    from da4ml import __version__ as DA4ML_VERSION
except ImportError:  # the generator still imports; `build_cmvm` raises then
    DA4ML_VERSION = None


def write_if_changed(path: Path, text: str) -> Path:
    """Write `text` unless the file already holds it: an unchanged design keeps its mtimes,
    so re-running the flow (e.g. with --synth) does not rebuild the Verilator model."""
    if not (path.exists() and path.read_text(encoding="utf-8") == text):
        path.write_text(text, encoding="utf-8")
    return path


@dataclass
class CmvmCircuit:
    """Interface facts of one generated `<name>_wrapper` module."""

    name: str
    n_in: int
    n_out: int
    in_slot: int  # bits per input element on model_inp (element i at [i*in_slot +: in_slot])
    out_slot: int  # bits per output element on model_out, two's complement
    out_frac: int  # output slot value = true value * 2**out_frac (da4ml's common LSB)
    latency: int  # clock edges from model_inp to model_out
    cost: float  # da4ml's LUT-equivalent cost estimate
    out_signed: bool = True  # False: every output is >= 0 and the slots carry no sign bit


def _io_layout(qints: list) -> tuple[int, int, bool]:
    """(slot bits, fractional bits, signed) of da4ml's uniform IO wrapper (mirrors `hetero_io_map`)."""
    from da4ml.types import minimal_kif

    ks, ints, fs = zip(*map(minimal_kif, qints))
    return max(ints) + max(ks) + max(fs), max(fs), bool(max(ks))


def build_cmvm(name: str, matrix: np.ndarray, bias: np.ndarray, in_bits: int, in_signed: bool,
               out_dir: Path, latency_cutoff: float = 5.0) -> CmvmCircuit:
    """Generate `name` (``y = x @ matrix + bias`` on integer inputs) into `out_dir`."""
    from da4ml.codegen.rtl.verilog import generate_io_wrapper, pipeline_logic_gen
    from da4ml.trace import FixedVariableArrayInput, HWConfig, comb_trace
    from da4ml.trace.pipeline import to_pipeline

    n_in, n_out = matrix.shape
    inp = FixedVariableArrayInput((n_in,), hwconf=HWConfig(1, -1, -1))
    x = inp.quantize(int(in_signed), in_bits - int(in_signed), 0)
    y = x @ matrix.astype(np.float64) + bias.astype(np.float64)
    comb = comb_trace(inp, y)
    pipe = to_pipeline(comb, latency_cutoff, verbose=False)
    in_slot, in_frac, _ = _io_layout(list(comb.inp_qint))
    if in_frac != 0 or in_slot != in_bits:
        raise RuntimeError(f"{name}: da4ml chose input slots of {in_slot} bits (frac {in_frac}), expected {in_bits}")
    out_slot, out_frac, out_signed = _io_layout(list(comb.out_qint))
    out_dir.mkdir(parents=True, exist_ok=True)
    for mod, code in pipeline_logic_gen(pipe, name, print_latency=False).items():
        write_if_changed(out_dir / f"{mod}.v", code)
    write_if_changed(out_dir / f"{name}_wrapper.v", generate_io_wrapper(pipe, name, True))
    # pipeline_logic_gen registers the input, each stage's output and model_out.
    return CmvmCircuit(name, n_in, n_out, in_slot, out_slot, out_frac, len(pipe.solutions) + 1, float(comb.cost),
                       out_signed)


def write_static_sources(out_dir: Path) -> list[Path]:
    """Copy da4ml's primitive modules (shift-adder, negate, mux...), without the LUT memory one."""
    from da4ml.codegen import rtl

    src = Path(rtl.__file__).parent / "verilog" / "source"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for p in sorted(src.glob("*.v")):
        if p.name == "lookup_table.v":
            continue
        written.append(write_if_changed(out_dir / p.name, p.read_text(encoding="utf-8")))
    return written
