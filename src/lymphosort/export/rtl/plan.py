"""Lowering: the integer IR (`FixedPointModel`) -> a streaming hardware plan.

The plan is the backend's own IR: a chain of stages that each consume and produce one
pixel vector (all channels of one map position) per valid beat, in raster order. It fixes
every shape, bit width, constant matrix and requantisation shift, so the Verilog emitter
(`verilog.py`) and the arithmetic generator (`arith.py`) make no numeric decisions.

Matrix layouts (rows = the stage's input vector, columns = outputs):

- conv window vector: element (i, j, ch) of the k x k window at index ``(i*k + j)*C_in + ch``;
- dense vector: pixel n of the final map in arrival order (raster), channel ch at
  ``n*C + ch`` (the IR flattens C, H, W; the row permutation is done here).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lymphosort.export.fixedpoint import FixedPointError, FixedPointModel

__all__ = ["ConvStage", "PoolStage", "DenseStage", "StreamPlan", "lower", "input_table"]


@dataclass
class ConvStage:
    """Line-buffer conv + ReLU-requantiser on an H x W map."""

    name: str
    H: int
    W: int
    c_in: int
    c_out: int
    k: int
    pad: int  # 0 (valid) or k // 2 (same)
    in_bits: int
    in_signed: bool
    out_bits: int
    shift: int  # right shift acc -> activation (negative: left shift)
    matrix: np.ndarray  # int [k*k*c_in, c_out]
    bias: np.ndarray  # int [c_out], accumulator units

    @property
    def H_out(self) -> int:
        return self.H + 2 * self.pad - self.k + 1

    @property
    def W_out(self) -> int:
        return self.W + 2 * self.pad - self.k + 1


@dataclass
class PoolStage:
    """2x2 max pool (floor: an odd last row/column is dropped, as torch does)."""

    name: str
    H: int
    W: int
    c: int
    bits: int

    @property
    def H_out(self) -> int:
        return self.H // 2

    @property
    def W_out(self) -> int:
        return self.W // 2


@dataclass
class DenseStage:
    """Collects the whole final map, then one constant matrix-vector product (logits)."""

    name: str
    H: int
    W: int
    c: int
    in_bits: int
    matrix: np.ndarray  # int [H*W*c, O]
    bias: np.ndarray  # int [O]
    acc_exp: int


@dataclass
class StreamPlan:
    size: int  # input map side (pixels a frame = size**2)
    input_bits: int
    table: np.ndarray  # int [256]: uint8 pixel -> signed input integer
    stages: list[ConvStage | PoolStage | DenseStage] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    name: str = ""

    @property
    def dense(self) -> DenseStage:
        d = self.stages[-1]
        assert isinstance(d, DenseStage)
        return d


def input_table(fp: FixedPointModel) -> np.ndarray:
    """The normalise-and-quantise step for every uint8 value, computed by the IR's own code.

    Exact only when no resize happens (the model's input is the native-resolution window):
    then every pixel is mapped on its own and a 256-entry table is the whole preprocessing.
    """
    side = fp.fov if fp.fov is not None else 64
    if side != fp.input_size:
        raise FixedPointError(
            f"{fp.name or 'the model'} resizes its {side}x{side} view to {fp.input_size}x{fp.input_size}; the RTL "
            "takes native pixels through a 256-entry table (use a student whose field of view equals its input "
            "size, e.g. tiny-32-centre)"
        )
    values = np.repeat(np.arange(256, dtype=np.uint8), 64 * 64).reshape(256, 64, 64)
    q = fp.quantize_input(fp.preprocess(values)).numpy()  # [256, 1, S, S], constant per image
    flat = q.reshape(256, -1)
    if not (flat == flat[:, :1]).all():
        raise FixedPointError("the preprocessing is not pixel-wise: no input table exists")
    return flat[:, 0].astype(np.int64)


def lower(fp: FixedPointModel) -> StreamPlan:
    """The streaming plan of `fp` (conv/pool/dense chain; shapes, widths and constants)."""
    plan = StreamPlan(size=fp.input_size, input_bits=fp.input_bits, table=input_table(fp),
                      classes=list(fp.classes), name=fp.name)
    H = W = fp.input_size
    c = 1
    for i, lay in enumerate(fp.layers):
        if lay.kind == "conv":
            co, ci, k, k2 = lay.weight.shape
            if k != k2 or k % 2 == 0 or lay.padding not in (0, k // 2) or ci != c:
                raise FixedPointError(f"layer {i}: only odd square kernels with valid or same padding are supported")
            if lay.out_bits is None or lay.out_exp is None:
                raise FixedPointError(f"layer {i}: a conv needs its activation width and exponent")
            m = np.transpose(lay.weight, (2, 3, 1, 0)).reshape(k * k * ci, co)  # (i, j, ch) x co
            conv = ConvStage(f"conv{i + 1}", H, W, ci, co, k, int(lay.padding), lay.in_bits, lay.in_signed,
                             int(lay.out_bits), int(lay.out_exp) - lay.acc_exp, m.astype(np.int64),
                             lay.bias.astype(np.int64))
            plan.stages.append(conv)
            H, W, c = conv.H_out, conv.W_out, co
            if lay.pool == 2:
                pool = PoolStage(f"pool{i + 1}", H, W, c, int(lay.out_bits))
                plan.stages.append(pool)
                H, W = pool.H_out, pool.W_out
            elif lay.pool != 1:
                raise FixedPointError(f"layer {i}: max pool {lay.pool} (only 2x2 is generated)")
        else:
            o, f = lay.weight.shape
            if f != c * H * W:
                raise FixedPointError(f"dense layer expects {f} features, the map has {c}x{H}x{W}")
            # IR order (ch, r, col) -> arrival order ((r*W + col)*C + ch)
            m = lay.weight.reshape(o, c, H * W).transpose(2, 1, 0).reshape(H * W * c, o)
            plan.stages.append(DenseStage("dense", H, W, c, lay.in_bits, m.astype(np.int64),
                                          lay.bias.astype(np.int64), lay.acc_exp))
            return plan
    raise FixedPointError("the network has no dense output layer")
