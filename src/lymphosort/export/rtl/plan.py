"""Lowering: the integer IR (`FixedPointModel`) -> a streaming hardware plan.

The plan is the backend's own IR: a chain of stages that each consume and produce one beat
per valid cycle: `lanes` horizontally adjacent pixel vectors (all channels of one map
position each) of one row, in raster order. The input has `pixels_per_cycle` lanes; each
2x2 pool halves the lanes (down to 1), as it quarters the pixels. It fixes every shape,
bit width, constant matrix and requantisation shift, so the Verilog emitter (`verilog.py`)
and the arithmetic generator (`arith.py`) make no numeric decisions.

A model that shrinks its view 2x (`FixedPointModel.shrink`) gets three input stages that
compute the IR's integer preprocessing: the per-axis weights (1,3,3,1) are (1,2,1) then a
sum of 2 (``v[2i] + v[2i+1]``), so the stencil sum is a 3x3 conv of (1,2,1) x (1,2,1) with
zero padding (`ConvStage`, no rounding) and a 2x2 sum pool; `QuantStage` then maps the sum
to the input integer by a verified multiply-add-shift per border class.

Matrix layouts (rows = the stage's input vector, columns = outputs):

- conv window vector: element (i, j, ch) of the k x k window at index ``(i*k + j)*C_in + ch``;
- dense vector: pixel n of the final map in arrival order (raster), channel ch at
  ``n*C + ch`` (the IR flattens C, H, W; the row permutation is done here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lymphosort.export.fixedpoint import FixedPointError, FixedPointModel

__all__ = ["ARCHS", "ConvStage", "DenseStage", "NarrowStage", "PoolStage", "QuantStage", "StreamPlan", "TimeShare",
           "input_table", "lower", "quant_stage"]


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
    lanes: int = 1  # pixels a beat
    share: TimeShare | None = None  # None: a fixed-weight da4ml circuit a lane

    @property
    def H_out(self) -> int:
        return self.H + 2 * self.pad - self.k + 1

    @property
    def W_out(self) -> int:
        return self.W + 2 * self.pad - self.k + 1


@dataclass
class PoolStage:
    """2x2 max (or sum) pool (floor: an odd last row/column is dropped, as torch does)."""

    name: str
    H: int
    W: int
    c: int
    bits: int
    lanes: int = 1
    op: Literal["max", "sum"] = "max"

    @property
    def out_bits(self) -> int:
        return self.bits + (2 if self.op == "sum" else 0)

    @property
    def lanes_out(self) -> int:
        return max(self.lanes // 2, 1)

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
    lanes: int = 1
    share: TimeShare | None = None


@dataclass(frozen=True)
class TimeShare:
    """A layer on multipliers: `mults` a output, each walking `steps` elements of the input
    vector (weights from small ROMs); vectors wait in a FIFO of `depth`."""

    mults: int
    steps: int
    depth: int

    def dsps(self, n_out: int) -> int:
        return self.mults * n_out


@dataclass
class QuantStage:
    """Stencil sum s (unsigned) -> signed input integer ``clip((s*A + B) >> shift)``, with (A, B)
    chosen by the position's denominator (row_den[r] * col_den[c]); verified in `quant_stage`
    against the IR's exact levels for every possible s."""

    name: str
    H: int
    W: int
    in_bits: int
    out_bits: int
    row_den: list[int]
    col_den: list[int]
    consts: dict[int, tuple[int, int]]  # denominator -> (A, B)
    shift: int
    lanes: int = 1


@dataclass
class NarrowStage:
    """A FIFO that re-beats `lanes` pixels into beats of `lanes_out` (one a cycle), so the next
    conv runs with fewer circuit copies where its input comes in bursts (a pool emits on odd
    rows only); it holds while that conv flushes."""

    name: str
    W: int
    c: int
    bits: int
    lanes: int
    lanes_out: int
    depth: int


@dataclass
class StreamPlan:
    size: int  # input frame side (pixels a frame = size**2)
    input_bits: int
    table: np.ndarray | None  # int [256]: uint8 pixel -> signed input integer (None: QuantStage does it)
    stages: list[ConvStage | PoolStage | QuantStage | NarrowStage | DenseStage] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    name: str = ""
    pixels_per_cycle: int = 1

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
            "takes native pixels through a 256-entry table, or shrinks a view exactly 2x (e.g. tiny-32-whole, "
            "tiny-32-centre)"
        )
    values = np.repeat(np.arange(256, dtype=np.uint8), 64 * 64).reshape(256, 64, 64)
    q = fp.quantize_input(fp.preprocess(values)).numpy()  # [256, 1, S, S], constant per image
    flat = q.reshape(256, -1)
    if not (flat == flat[:, :1]).all():
        raise FixedPointError("the preprocessing is not pixel-wise: no input table exists")
    return flat[:, 0].astype(np.int64)


#: stream: every layer a fixed-weight da4ml circuit (a copy a lane); mixed: the last conv and
#: the dense layer, idle most cycles, time-shared on 18x18 multipliers (`time_share`)
ARCHS = ("stream", "mixed")
_STENCIL = np.array([1, 2, 1], dtype=np.int64)  # (1,3,3,1) = (1,2,1) then a sum of 2


def _shrink_stages(fp: FixedPointModel, lanes: int) -> list[ConvStage | PoolStage | QuantStage]:
    """The 2x shrink of the IR (`FixedPointModel.input_ints`) as conv -> sum pool -> quantiser."""
    sh = fp.shrink
    assert sh is not None
    n_out, n_in = sh.weights.shape
    stencil = np.zeros((n_out, n_in), dtype=np.int64)  # what the conv + sum pool compute, per axis
    for i in range(n_out):
        for t in (2 * i, 2 * i + 1):
            for d, w in zip((-1, 0, 1), _STENCIL):
                if 0 <= t + d < n_in:
                    stencil[i, t + d] += w
    if n_in != 2 * n_out or not np.array_equal(stencil, sh.weights):
        raise FixedPointError(f"{fp.name or 'the model'}: its {n_in} -> {n_out} resize is not the 2x (1,3,3,1) "
                              "stencil the RTL generates")
    k2 = np.outer(_STENCIL, _STENCIL).reshape(9, 1)
    sum_bits = (255 * int(k2.sum())).bit_length()  # 4080: 12 bits, never saturated
    conv = ConvStage("shrink_conv", n_in, n_in, 1, 1, 3, 1, 8, False, sum_bits, 0, k2, np.zeros(1, np.int64),
                     lanes=lanes)
    pool = PoolStage("shrink_pool", n_in, n_in, 1, sum_bits, lanes=lanes, op="sum")
    return [conv, pool, quant_stage(fp, n_out, pool.out_bits, pool.lanes_out)]


def quant_stage(fp: FixedPointModel, size: int, in_bits: int, lanes: int) -> QuantStage:
    """(A, B, shift) with ``clip((s*A + B) >> shift) == fp.input_levels(D)[s]`` for every sum s of
    every denominator D: the smallest shift that is exact, checked over the whole range."""
    sh = fp.shrink
    assert sh is not None
    dens = sorted({int(a) * int(b) for a in sh.denom for b in sh.denom})
    lo, hi = -(2 ** (fp.input_bits - 1)), 2 ** (fp.input_bits - 1) - 1
    scale = 2.0 ** (-fp.input_exp) / fp.std
    for shift in range(8, 48):
        consts: dict[int, tuple[int, int]] = {}
        for d in dens:
            want = fp.input_levels(d)
            s = np.arange(len(want), dtype=np.int64)
            a = round(scale / (255 * d) * 2**shift)
            b0 = int(np.floor((0.5 - fp.mean * scale) * 2**shift))
            for b in (b0, b0 + 1, b0 - 1, b0 + 2, b0 - 2):
                if np.array_equal(np.clip((s * a + b) >> shift, lo, hi), want):  # >>: floor, as Verilog >>>
                    consts[d] = (a, b)
                    break
            else:
                break
        if len(consts) == len(dens):
            return QuantStage("shrink_quant", size, size, in_bits, fp.input_bits, [int(v) for v in sh.denom],
                              [int(v) for v in sh.denom], consts, shift, lanes)
    raise FixedPointError("no multiply-add-shift up to 47 bits reproduces the input levels")


def lower(fp: FixedPointModel, pixels_per_cycle: int = 1, arch: str = "stream") -> StreamPlan:
    """The streaming plan of `fp` (conv/pool/dense chain; shapes, widths and constants) for an
    input of `pixels_per_cycle` pixels a beat (a power of two dividing the frame side)."""
    if arch not in ARCHS:
        raise FixedPointError(f"unknown architecture {arch!r} (have {', '.join(ARCHS)})")
    P = int(pixels_per_cycle)
    if P < 1 or P & (P - 1):
        raise FixedPointError(f"pixels per cycle must be a power of two, got {P}")
    shrink = fp.shrink is not None
    side = (fp.fov if fp.fov is not None else 64) if shrink else fp.input_size
    plan = StreamPlan(size=side, input_bits=fp.input_bits, table=None if shrink else input_table(fp),
                      classes=list(fp.classes), name=fp.name, pixels_per_cycle=P)
    lanes = P
    if shrink:
        plan.stages += _shrink_stages(fp, lanes)
        lanes = plan.stages[1].lanes_out  # type: ignore[union-attr]
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
                             lay.bias.astype(np.int64), lanes=lanes)
            plan.stages.append(conv)
            H, W, c = conv.H_out, conv.W_out, co
            if lay.pool == 2:
                pool = PoolStage(f"pool{i + 1}", H, W, c, int(lay.out_bits), lanes=lanes)
                plan.stages.append(pool)
                H, W, lanes = pool.H_out, pool.W_out, pool.lanes_out
            elif lay.pool != 1:
                raise FixedPointError(f"layer {i}: max pool {lay.pool} (only 2x2 is generated)")
        else:
            o, f = lay.weight.shape
            if f != c * H * W:
                raise FixedPointError(f"dense layer expects {f} features, the map has {c}x{H}x{W}")
            # IR order (ch, r, col) -> arrival order ((r*W + col)*C + ch)
            m = lay.weight.reshape(o, c, H * W).transpose(2, 1, 0).reshape(H * W * c, o)
            plan.stages.append(DenseStage("dense", H, W, c, lay.in_bits, m.astype(np.int64),
                                          lay.bias.astype(np.int64), lay.acc_exp, lanes=lanes))
            _narrow(plan)
            _check_lanes(plan)
            if arch == "mixed":
                time_share(plan)
            return plan
    raise FixedPointError("the network has no dense output layer")


def _narrow(plan: StreamPlan, load: float = 0.6) -> None:
    """Give every conv after the first the fewest lanes that keep it under `load` of a frame's
    cycles (its beats plus its flush), through a `NarrowStage` where that is fewer than its
    input beat has; the lanes of the stages after it follow."""
    first = plan.stages[0]
    frame = plan.size * plan.size // plan.pixels_per_cycle + plan.size // plan.pixels_per_cycle + 2
    out: list[ConvStage | PoolStage | QuantStage | NarrowStage | DenseStage] = []
    lanes = plan.pixels_per_cycle
    for st in plan.stages:
        if isinstance(st, ConvStage) and st is not first and lanes > 1:
            fit = lanes
            while fit > 1 and st.W % (fit // 2) == 0 and \
                    st.H * st.W // (fit // 2) + st.W // (fit // 2) + 2 <= load * frame:
                fit //= 2
            if fit < lanes:
                row = max(st.W // lanes, 1)
                out.append(NarrowStage(f"narrow{st.name[4:]}", st.W, st.c_in, st.in_bits, lanes, fit,
                                       max(4, 1 << (2 * row - 1).bit_length())))  # two rows of beats
                lanes = fit
        if isinstance(st, NarrowStage):
            continue
        st.lanes = lanes
        if isinstance(st, PoolStage):
            lanes = st.lanes_out
        out.append(st)
    plan.stages = out


def _check_lanes(plan: StreamPlan) -> None:
    """Several lanes need whole beats in every row and the same-padding window scheme."""
    for st in plan.stages:
        if st.lanes == 1:
            continue
        if st.W % st.lanes or (isinstance(st, DenseStage) and (st.H * st.W) % st.lanes):
            raise FixedPointError(f"{st.name}: a {st.W}-pixel row does not split into beats of {st.lanes}")
        if isinstance(st, ConvStage) and st.pad != st.k // 2:
            raise FixedPointError(f"{st.name}: several pixels a cycle need same padding")


#: MULT18X18D blocks of the largest ECP5 (LFE5U-85F)
_DSP_BUDGET = 156
_DENSE_STEPS = 64  # the dense layer runs once a frame, after its last pixel: bounds its latency


def time_share(plan: StreamPlan, load: float = 0.75) -> None:
    """Put the last conv and the dense layer on multipliers: each walks its input vector in as
    many steps as `load` of a frame's beats allows over its vectors a frame (it must keep up
    with frames streaming back to back), the dense layer in at most `_DENSE_STEPS`."""
    beats = plan.size * plan.size // plan.pixels_per_cycle
    convs = [s for s in plan.stages if isinstance(s, ConvStage)]
    last, dense = convs[-1], plan.dense
    total = 0
    for st, windows in ((last, last.H_out * last.W_out), (dense, 1)):
        if st.lanes != 1:
            raise FixedPointError(f"{st.name}: a time-shared layer takes one pixel a beat ({st.lanes} here)")
        n, o = st.matrix.shape
        most = max(1, int(load * beats) // windows)  # keeps up with frames back to back
        if st is dense:
            most = min(most, _DENSE_STEPS)
        mults = -(-n // min(most, n))
        depth = 2 if st is dense else 1 << (2 * st.W).bit_length()  # two rows of windows and more
        st.share = TimeShare(mults, -(-n // mults), depth)
        total += st.share.dsps(o)
    if total > _DSP_BUDGET:
        raise FixedPointError(f"time sharing needs {total} multipliers at {plan.pixels_per_cycle} pixels a cycle, "
                              f"more than the {_DSP_BUDGET} of an LFE5U-85F")
