"""Backend: a `StreamPlan` -> streaming Verilog (glue generated here, arithmetic from da4ml).

Dataflow, one beat (`lanes` adjacent pixels of a row) a cycle, every stage fed by valid
beats (no stalls inside):

- input: AXI-Stream slave, `pixels_per_cycle` uint8 pixels a beat, registered; then either
  the 256-entry normalise-and-quantise table (native-resolution models), or the 2x shrink
  (conv of (1,2,1) x (1,2,1), 2x2 sum pool, multiply-add-shift quantiser: `plan.py`);
  ``s_tready`` drops only while the first conv flushes its bottom padding (a row of beats
  and one more after each image) or two finished images wait at the output;
- conv: line buffers indexed by beat (k-1 of them) feed a k-row window register. Padding
  costs no input cycles: the window is masked at the map edges, and each tick emits one
  beat (the right edge of the previous row rides on a row's first beats, see `emit_conv`).
  Each lane's masked window goes through its copy of the layer's da4ml circuit, then ReLU +
  round-half-even + saturation (the IR's requantiser) in one registered step;
- 2x2 pool: horizontal pairs (inside the beat, or consecutive beats with one lane), then a
  line buffer of them; the output beat has half the lanes (at least one);
- dense: a shift register collects the final map, one da4ml circuit gives the logits;
- output: a 2-deep queue, one beat of all logits (32-bit lanes, integer accumulator units:
  logit = value * 2**acc_exp), ``tlast`` = 1.

Later stages cannot stall an earlier one; a stage that would receive a pixel while still
flushing raises the sticky ``err`` output (never seen in simulation; the test checks it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lymphosort.export.rtl.arith import CmvmCircuit, write_if_changed
from lymphosort.export.rtl.plan import (
    ConvStage,
    DenseStage,
    NarrowStage,
    PoolStage,
    QuantStage,
    StreamPlan,
    TimeShare,
)

__all__ = ["LOGIT_BITS", "emit_conv", "emit_dense", "emit_engine", "emit_narrow", "emit_pool", "emit_quant", "emit_top"]

LOGIT_BITS = 32  # one output lane a logit
_TS = "`timescale 1 ns / 1 ps\n"


def _bits(n: int) -> int:
    """Unsigned width that holds 0..n."""
    return max(1, int(n).bit_length())


def _requant(idx: int, acc: str, slot: int, frac: int, shift: int, out_bits: int, tag: str = "",
             signed: bool = True) -> list[str]:
    """Verilog lines: ReLU, round half to even by `shift` (acc units), saturate to `out_bits`;
    names carry `tag` (one set a lane), the result is ``y{tag}{idx}``. An unsigned slot gets
    a zero sign bit."""
    n = f"{tag}{idx}"  # the name suffix of every wire
    a = f"a{n}"
    sl = f"{acc}[{idx * slot} +: {slot}]"
    lines = [f"wire [{slot}:0] {a} = {{1'b0, {sl}}};" if not signed else f"wire [{slot - 1}:0] {a} = {sl};"]
    slot += 0 if signed else 1
    s = shift + frac  # slot value = true * 2**frac
    mx = (1 << out_bits) - 1
    lines.append(f"wire neg{n} = {a}[{slot - 1}];")
    if s >= slot:  # every non-negative value rounds to 0
        lines.append(f"wire [{out_bits - 1}:0] y{n} = {out_bits}'d0;")
        return lines
    if s > 0:
        q = f"{{1'b0, {a}[{slot - 2}:{s}]}}" if s <= slot - 2 else "1'b0"
        qw = max(slot - 1 - s, 0) + 1
        sticky = f"(|{a}[{s - 2}:0])" if s >= 2 else "1'b0"
        lines += [
            f"wire up{n} = {a}[{s - 1}] & ({sticky} | {a}[{s}]);",  # > half, or = half and odd
            f"wire [{qw}:0] r{n} = {{1'b0, {q}}} + {{{qw}'d0, up{n}}};",
        ]
        w = qw + 1
    else:  # left shift: exact
        w = slot - 1 - s
        lines.append(f"wire [{w - 1}:0] r{n} = {{{a}[{slot - 2}:0], {-s}'d0}};" if s < 0
                     else f"wire [{w - 1}:0] r{n} = {a}[{slot - 2}:0];")
    if w > out_bits:
        lines.append(f"wire [{out_bits - 1}:0] y{n} = neg{n} ? {out_bits}'d0 : "
                     f"((r{n} > {w}'d{mx}) ? {out_bits}'d{mx} : r{n}[{out_bits - 1}:0]);")
    else:
        lines.append(f"wire [{out_bits - 1}:0] y{n} = neg{n} ? {out_bits}'d0 : "
                     f"{{{{{out_bits - w}{{1'b0}}}}, r{n}}};" if w < out_bits else
                     f"wire [{out_bits - 1}:0] y{n} = neg{n} ? {out_bits}'d0 : r{n};")
    return lines


# long by design: one Verilog module as one template: split, the signal names would scatter
def emit_conv(st: ConvStage, cm: CmvmCircuit | None) -> str:
    """The line-buffer conv stage `st` around `st.lanes` copies of its da4ml circuit `cm`.

    A tick (input beat, or a flush beat of zeros) at row r, beat b shifts the beat into a
    window register of P*(d+1) + g columns (g = k // 2, d = ceil(g / P) beats of delay) and
    emits output beat b - d of row r - g; for b < d that is beat b - d + W/P of row r - g - 1
    (the right edge of the previous row rides on a row's first beats). Lane j reads window
    columns j .. j + k - 1; elements outside the map are masked to zero (same padding).
    Valid padding (one lane only) emits the positions whose window lies inside the map.
    """
    k, p, H, W, P = st.k, st.pad, st.H, st.W, st.lanes
    g = k // 2
    d = -(-g // P)
    nb = W // P
    pw = st.c_in * st.in_bits  # one pixel vector
    bw = P * pw  # one beat
    ob = st.out_bits
    ow = P * st.c_out * ob
    rw, cw = _bits(H + g), _bits(nb)
    R = P * (d + 1) + g  # window register columns
    o = [_TS, f"module {st.name} (", "  input clk, input rst,", f"  input in_valid, input [{bw - 1}:0] in_data,",
         "  output busy, output reg err,", f"  output reg out_valid, output reg [{ow - 1}:0] out_data", ");"]
    o += [f"  reg [{rw - 1}:0] r; reg [{cw - 1}:0] c; reg flushing;",
          f"  wire last_real = (r == {rw}'d{H - 1}) && (c == {cw}'d{nb - 1});"]
    if p > 0:
        o += ["  wire tick = flushing | in_valid;",
              f"  wire [{bw - 1}:0] x = flushing ? {bw}'d0 : in_data;",
              "  assign busy = flushing | (in_valid & last_real);",
              f"  wire flush_end = flushing && (r == {rw}'d{H + g}) && (c == {cw}'d{d - 1});"]
    else:
        o += ["  wire tick = in_valid;", f"  wire [{bw - 1}:0] x = in_data;", "  assign busy = 1'b0;"]
    for i in range(k - 1):
        o.append(f"  reg [{bw - 1}:0] lb{i} [0:{nb - 1}];")
    for i in range(k):
        o.append(f"  reg [{R * pw - 1}:0] w{i};  // column x at [x*{pw} +: {pw}], newest beat on top")
    o += [f"  reg emit; reg [{rw - 1}:0] orow; reg [{cw - 1}:0] obeat;"]
    if st.share is not None:
        aw = engine_acc_bits(st.matrix, st.bias, st.in_bits, st.in_signed)
        o += [f"  wire eng_valid, eng_err; wire [{st.c_out * aw - 1}:0] eng_acc;"]
    else:
        o += ["  wire eng_err = 1'b0;"]
    # emitted position of the tick at (r, c) (see the docstring); valid padding: interior only
    if d > 0:
        o += [f"  wire prev = c < {cw}'d{d};",
              f"  wire [{rw - 1}:0] t_row = prev ? r - {rw}'d{g + 1} : r - {rw}'d{g};",
              f"  wire [{cw - 1}:0] t_beat = prev ? c + {cw}'d{nb - d} : c - {cw}'d{d};"]
    else:
        o += ["  wire prev = 1'b0;", f"  wire [{rw - 1}:0] t_row = r;", f"  wire [{cw - 1}:0] t_beat = c;"]
    lo_r, hi_r = (g, H - 1 - g) if p == 0 else (0, H - 1)
    lo_c, hi_c = (g, nb - 1 - g) if p == 0 else (0, nb - 1)
    conds = [f"(prev ? (r >= {rw}'d{lo_r + g + 1} && r <= {rw}'d{hi_r + g + 1}) : (r >= {rw}'d{lo_r + g} && r <= {rw}'d{hi_r + g}))"]
    if lo_c > 0:
        conds.append(f"t_beat >= {cw}'d{lo_c}")
    if hi_c < nb - 1:
        conds.append(f"t_beat <= {cw}'d{hi_c}")
    o.append(f"  wire t_ok = {' && '.join(conds)};")
    o += ["  always @(posedge clk) begin",
          "    if (rst) begin",
          "      r <= 0; c <= 0; flushing <= 0; emit <= 0; err <= 0;",
          "    end else begin",
          "      emit <= tick && t_ok;",
          "      if ((in_valid && flushing) || eng_err) err <= 1;",
          "      if (tick) begin",
          "        orow <= t_row; obeat <= t_beat;"]
    if p > 0:
        o += ["        if (flush_end) begin r <= 0; c <= 0; flushing <= 0; end",
              f"        else if (!flushing && last_real) begin r <= {rw}'d{H}; c <= 0; flushing <= 1; end"]
    else:
        o += ["        if (last_real) begin r <= 0; c <= 0; end"]
    o += [f"        else if (c == {cw}'d{nb - 1}) begin c <= 0; r <= r + 1'b1; end",
          "        else c <= c + 1'b1;",
          "      end", "    end", "  end"]
    # window and line buffers (no reset needed: masked or overwritten before use)
    o += ["  always @(posedge clk) begin", "    if (tick) begin"]
    for i in range(k):
        new = f"lb{i}[c]" if i < k - 1 else "x"
        o.append(f"      w{i} <= {{{new}, w{i}[{R * pw - 1}:{bw}]}};" if R > P else f"      w{i} <= {new};")
    for i in range(k - 1):
        o.append(f"      lb{i}[c] <= {f'lb{i + 1}[c]' if i < k - 2 else 'x'};")
    o += ["    end", "  end"]
    # edge masks: window row i <-> input row orow - g + i; lane j, column jj <-> input column
    # obeat*P + j - g + jj, inside the map for obeat in [ceil((g-j-jj)/P), floor((W-1+g-j-jj)/P)]
    for i in range(k):
        cr = []
        if i < g:
            cr.append(f"orow >= {rw}'d{g - i}")
        if i > g:
            cr.append(f"orow <= {rw}'d{H - 1 - (i - g)}")
        o.append(f"  wire rok{i} = {' && '.join(cr) if cr and p > 0 else '1'};")
    for t in range(P + k - 1):  # t = j + jj
        cc = []
        lo, hi = -(-(g - t) // P), (W - 1 + g - t) // P
        if lo > 0:
            cc.append(f"obeat >= {cw}'d{lo}")
        if hi < nb - 1:
            cc.append(f"obeat <= {cw}'d{hi}")
        o.append(f"  wire cok{t} = {' && '.join(cc) if cc and p > 0 else '1'};")
    ys = []
    for j in range(P):
        elems = [f"((rok{i} && cok{j + jj}) ? w{i}[{(j + jj) * pw} +: {pw}] : {pw}'d0)" for i in range(k) for jj in range(k)]
        o.append(f"  wire [{k * k * pw - 1}:0] vec{j} = {{{', '.join(reversed(elems))}}};")
    if st.share is not None:  # one lane: the engine queues the windows and answers in order
        o.append(f"  {st.name}_engine u_eng (.clk(clk), .rst(rst), .in_valid(emit), .in_vec(vec0), "
                 ".out_valid(eng_valid), .out_acc(eng_acc), .err(eng_err));")
        for co in range(st.c_out):
            o += ["  " + ln for ln in _requant(co, "eng_acc", aw, 0, st.shift, ob, "_0_")]
            ys.append(f"y_0_{co}")
        o += ["  always @(posedge clk) begin",
              "    out_valid <= rst ? 1'b0 : eng_valid;",
              f"    out_data <= {{{', '.join(reversed(ys))}}};", "  end", "endmodule", ""]
        return "\n".join(o)
    assert cm is not None
    L = cm.latency
    o += [f"  reg [{L - 1}:0] vpipe;"]
    for j in range(P):
        o.append(f"  wire [{cm.n_out * cm.out_slot - 1}:0] acc{j};")
        o.append(f"  {cm.name}_wrapper u_mac{j} (.clk(clk), .model_inp(vec{j}), .model_out(acc{j}));")
        for co in range(st.c_out):
            o += ["  " + ln for ln in _requant(co, f"acc{j}", cm.out_slot, cm.out_frac, st.shift, ob, f"_{j}_",
                                              cm.out_signed)]
            ys.append(f"y_{j}_{co}")
    o += ["  always @(posedge clk) begin",
          "    if (rst) begin vpipe <= 0; out_valid <= 0; end",
          f"    else begin vpipe <= {{vpipe, emit}}; out_valid <= vpipe[{L - 1}]; end" if L > 1 else
          "    else begin vpipe <= emit; out_valid <= vpipe[0]; end",
          f"    out_data <= {{{', '.join(reversed(ys))}}};", "  end", "endmodule", ""]
    return "\n".join(o)


def emit_pool(st: PoolStage) -> str:
    """2x2 max (or sum) pool over a raster stream of `st.c`-channel unsigned pixels, `st.lanes`
    a beat: several lanes pair up inside the beat (lanes / 2 out); one lane pairs consecutive
    beats. Sums widen by Verilog's context width (h: B+1 bits, v: B+2)."""
    H, W, B, C, P = st.H, st.W, st.bits, st.c, st.lanes
    OB = st.out_bits
    HB = B + 1 if st.op == "sum" else B  # a horizontal pair
    nb = W // P if P > 1 else W
    Q = st.lanes_out
    rw, cw = _bits(H), _bits(nb)
    hw = max(nb // 2, 1) if P == 1 else nb

    def comb(a: str, b: str) -> str:
        return f"{a} + {b}" if st.op == "sum" else f"({a} > {b}) ? {a} : {b}"

    o = [_TS, f"module {st.name} (", "  input clk, input rst,", f"  input in_valid, input [{P * C * B - 1}:0] in_data,",
         f"  output reg out_valid, output reg [{Q * C * OB - 1}:0] out_data", ");",
         f"  reg [{rw - 1}:0] r; reg [{cw - 1}:0] c;", f"  reg [{C * B - 1}:0] hold;",
         f"  reg [{Q * C * HB - 1}:0] lb [0:{hw - 1}];"]
    idx = (f"c[{cw - 1}:1]" if cw > 1 else "0") if P == 1 else "c"
    hs, vs = [], []
    for q in range(Q):
        for ch in range(C):
            if P == 1:
                a, b = f"hold[{ch * B} +: {B}]", f"in_data[{ch * B} +: {B}]"
            else:
                a, b = f"in_data[{(2 * q * C + ch) * B} +: {B}]", f"in_data[{((2 * q + 1) * C + ch) * B} +: {B}]"
            h, v = f"h{q}_{ch}", f"v{q}_{ch}"
            o.append(f"  wire [{HB - 1}:0] {h} = {comb(a, b)};")
            o.append(f"  wire [{OB - 1}:0] {v} = {comb(f'lb[{idx}][{(q * C + ch) * HB} +: {HB}]', h)};")
            hs.append(h)
            vs.append(v)
    inside = f"(r < {rw}'d{2 * (H // 2)})" + (f" && (c < {cw}'d{2 * (W // 2)})" if P == 1 else "")
    o += ["  always @(posedge clk) begin",
          "    if (rst) begin r <= 0; c <= 0; out_valid <= 0; end",
          "    else begin",
          "      out_valid <= 0;",
          "      if (in_valid) begin"]
    o += ["        if (!c[0]) hold <= in_data;", f"        else if ({inside}) begin"] if P == 1 else \
        [f"        if ({inside}) begin"]
    o += [f"          if (!r[0]) lb[{idx}] <= {{{', '.join(reversed(hs))}}};",
          f"          else begin out_valid <= 1; out_data <= {{{', '.join(reversed(vs))}}}; end",
          "        end",
          f"        if (c == {cw}'d{nb - 1}) begin c <= 0; r <= (r == {rw}'d{H - 1}) ? {rw}'d0 : r + 1'b1; end",
          "        else c <= c + 1'b1;",
          "      end", "    end", "  end", "endmodule", ""]
    return "\n".join(o)


def emit_quant(st: QuantStage) -> str:
    """Stencil sums -> signed input integers ``clip((s*A + B) >>> shift)``, (A, B) by the
    position's row and column denominators. Registered after each step (class, constants,
    product, sum, clip): the unregistered class -> constant -> multiply -> add chain was the
    routed critical path at 16 pixels a cycle (13.2 ns); five cycles instead of three."""
    H, W, P, IB, OB = st.H, st.W, st.lanes, st.in_bits, st.out_bits
    nb = W // P
    rw, cw, xw = _bits(H), _bits(nb), _bits(W - 1)
    lo, hi = -(2 ** (OB - 1)), 2 ** (OB - 1) - 1
    aw = max(a for a, _ in st.consts.values()).bit_length() + 1  # signed
    bmax = max(abs(b) for _, b in st.consts.values())
    pw = (((1 << IB) - 1) * (1 << (aw - 1)) + bmax).bit_length() + 1
    rd, cd = sorted(set(st.row_den)), sorted(set(st.col_den))
    rk, ck = _bits(len(rd) - 1), _bits(len(cd) - 1)

    def cls_fn(name: str, dens: list[int], kinds: list[int], width: int, kw: int) -> list[str]:
        lines = [f"  function [{kw - 1}:0] {name}(input [{width - 1}:0] i);", "    case (i)"]
        lines += [f"      {width}'d{i}: {name} = {kw}'d{kinds.index(v)};" for i, v in enumerate(dens)
                  if v != kinds[0]]
        return lines + [f"      default: {name} = {kw}'d0;", "    endcase", "  endfunction"]

    def const_fn(name: str, width: int, pick: int) -> list[str]:
        lines = [f"  function signed [{width - 1}:0] {name}(input [{rk - 1}:0] a, input [{ck - 1}:0] b);",
                 "    case ({a, b})"]
        for a in rd:
            for b in cd:
                v = st.consts[a * b][pick]
                lit = f"-{width}'sd{-v}" if v < 0 else f"{width}'sd{v}"
                lines.append(f"      {{{rk}'d{rd.index(a)}, {ck}'d{cd.index(b)}}}: {name} = {lit};")
        return lines + [f"      default: {name} = {width}'sd0;", "    endcase", "  endfunction"]

    # the most frequent denominator first: class 0 is the case default
    rd.sort(key=lambda v: -st.row_den.count(v))
    cd.sort(key=lambda v: -st.col_den.count(v))
    o = [_TS, f"module {st.name} (", "  input clk, input rst,", f"  input in_valid, input [{P * IB - 1}:0] in_data,",
         f"  output reg out_valid, output reg [{P * OB - 1}:0] out_data", ");",
         f"  reg [{rw - 1}:0] r; reg [{cw - 1}:0] c; reg v1, v2, v3, v4; reg [{rk - 1}:0] rc1;"]
    o += cls_fn("rcls", st.row_den, rd, rw, rk) + cls_fn("ccls", st.col_den, cd, xw, ck)
    o += const_fn("mul_a", aw, 0) + const_fn("add_b", pw, 1)
    o += ["  always @(posedge clk) begin",
          "    if (rst) begin r <= 0; c <= 0; v1 <= 0; v2 <= 0; v3 <= 0; v4 <= 0; out_valid <= 0; end",
          "    else begin",
          "      v1 <= in_valid; v2 <= v1; v3 <= v2; v4 <= v3; out_valid <= v4;",
          "      if (in_valid) begin",
          f"        if (c == {cw}'d{nb - 1}) begin c <= 0; r <= (r == {rw}'d{H - 1}) ? {rw}'d0 : r + 1'b1; end",
          "        else c <= c + 1'b1;",
          "      end", "    end", "    rc1 <= rcls(r);", "  end"]
    for j in range(P):
        x = f"{{c, {_bits(P - 1)}'d{j}}}" if P > 1 else "c"  # column = c * P + j (P a power of two)
        t = f"t{j}"
        o += [f"  reg [{IB - 1}:0] s1_{j}, s2_{j}; reg [{ck - 1}:0] cc1_{j}; reg signed [{aw - 1}:0] a2_{j};",
              f"  reg signed [{pw - 1}:0] b2_{j}, b3_{j}, m3_{j}, p4_{j};",
              f"  wire signed [{pw - 1}:0] {t} = p4_{j} >>> {st.shift};",
              "  always @(posedge clk) begin",
              f"    s1_{j} <= in_data[{j * IB} +: {IB}]; cc1_{j} <= ccls({x});",
              f"    s2_{j} <= s1_{j}; a2_{j} <= mul_a(rc1, cc1_{j}); b2_{j} <= add_b(rc1, cc1_{j});",
              f"    m3_{j} <= $signed({{{pw - IB}'d0, s2_{j}}}) * a2_{j}; b3_{j} <= b2_{j};",
              f"    p4_{j} <= m3_{j} + b3_{j};",
              (f"    out_data[{j * OB} +: {OB}] <= ({t} < -{pw}'sd{-lo}) ? {OB}'d{lo & ((1 << OB) - 1)} : "
               f"({t} > {pw}'sd{hi}) ? {OB}'d{hi} : {t}[{OB - 1}:0];"),
              "  end"]
    o += ["endmodule", ""]
    return "\n".join(o)


def emit_narrow(st: NarrowStage) -> str:
    """Beats of `st.lanes` pixels -> beats of `st.lanes_out`, one a cycle unless `hold` (the next
    conv flushing); a FIFO of whole input beats absorbs the bursts (overflow: sticky err)."""
    pw = st.c * st.bits
    BW, OW = st.lanes * pw, st.lanes_out * pw
    r = st.lanes // st.lanes_out
    D = st.depth
    dw, kw = _bits(D - 1), _bits(r - 1)
    o = [_TS, f"module {st.name} (", "  input clk, input rst, input hold,", f"  input in_valid, input [{BW - 1}:0] in_data,",
         f"  output reg out_valid, output reg [{OW - 1}:0] out_data, output reg err", ");",
         f"  reg [{BW - 1}:0] mem [0:{D - 1}];", f"  reg [{dw - 1}:0] wp, rp; reg [{dw}:0] cnt; reg [{kw - 1}:0] k;",
         f"  wire [{BW - 1}:0] head = mem[rp];",
         "  wire pop = !hold && cnt != 0;", f"  wire done = pop && k == {kw}'d{r - 1};  // the head beat is used up",
         "  always @(posedge clk) begin",
         "    if (in_valid) mem[wp] <= in_data;",
         "    if (pop) out_data <= head[k * " + f"{OW} +: {OW}];",
         "    if (rst) begin wp <= 0; rp <= 0; cnt <= 0; k <= 0; out_valid <= 0; err <= 0; end",
         "    else begin",
         "      out_valid <= pop;",
         "      if (in_valid) wp <= wp + 1'b1;",
         "      if (pop) k <= done ? 0 : k + 1'b1;",
         "      if (done) rp <= rp + 1'b1;",
         f"      cnt <= cnt + {{{dw}'d0, in_valid}} - {{{dw}'d0, done}};",
         f"      if (in_valid && !done && cnt == {dw + 1}'d{D}) err <= 1;",
         "    end", "  end", "endmodule", ""]
    return "\n".join(o)


def engine_acc_bits(matrix: np.ndarray, bias: np.ndarray, in_bits: int, in_signed: bool) -> int:
    """Signed accumulator width of a time-shared layer: no input vector can overflow it."""
    x_max = 2 ** (in_bits - 1) if in_signed else 2**in_bits - 1
    bound = int((np.abs(matrix).sum(0) * x_max + np.abs(bias)).max())
    return bound.bit_length() + 1


# long by design: one Verilog module as one template
def emit_engine(name: str, matrix: np.ndarray, bias: np.ndarray, in_bits: int, in_signed: bool,
                share: TimeShare) -> str:
    """A time-shared ``y = x @ matrix + bias``: input vectors queue in a FIFO; each is walked in
    `share.steps` steps by `share.mults` multipliers an output (element m*steps + t at step t,
    shifted out of a register per multiplier), weights from per-multiplier ROMs. Pipeline:
    select, multiply, accumulate, then the finished accumulators are registered (out_valid).
    The FIFO is read through a register (`q`, the next head read every cycle) so synthesis can
    put it in block RAM instead of LUT RAM; an entry becomes takeable the cycle after its
    write has reached `q` (`w1`: a vector written last cycle is not yet visible)."""
    N, O = matrix.shape
    M, S, D = share.mults, share.steps, share.depth
    IB, NP = in_bits, M * S
    wb = max(int(np.abs(matrix).max()).bit_length() + 1, 2)
    AW = engine_acc_bits(matrix, bias, in_bits, in_signed)
    xb = IB if in_signed else IB + 1  # the multiplier's signed input
    dw, tw = _bits(D - 1), _bits(S - 1)
    o = [_TS, f"module {name} (", "  input clk, input rst,", f"  input in_valid, input [{N * IB - 1}:0] in_vec,",
         f"  output reg out_valid, output reg [{O * AW - 1}:0] out_acc, output reg err", ");",
         f"  (* ram_style = \"block\" *) reg [{N * IB - 1}:0] mem [0:{D - 1}];",
         f"  reg [{dw - 1}:0] wp, rp; reg [{dw}:0] cnt;",
         f"  reg busy; reg [{tw - 1}:0] t; reg w1; reg [{N * IB - 1}:0] q;",
         f"  wire take = (!busy || t == {tw}'d{S - 1}) && cnt > {{{dw}'d0, w1}};",
         f"  wire [{dw - 1}:0] rp_n = take ? rp + 1'b1 : rp;"]
    head = f"{{{(NP - N) * IB}'d0, q}}" if NP > N else "q"
    o += [f"  wire [{NP * IB - 1}:0] head = {head};"]
    o += [f"  reg [{S * IB - 1}:0] ch{m};" for m in range(M)]
    o += ["  always @(posedge clk) begin",
          "    if (in_valid) mem[wp] <= in_vec;",
          "    q <= mem[rp_n];",
          "    w1 <= !rst && in_valid;",
          "    if (rst) begin wp <= 0; rp <= 0; cnt <= 0; busy <= 0; t <= 0; err <= 0; end",
          "    else begin",
          "      if (in_valid) wp <= wp + 1'b1;",
          "      rp <= rp_n;",
          f"      cnt <= cnt + {{{dw}'d0, in_valid}} - {{{dw}'d0, take}};",
          f"      if (in_valid && !take && cnt == {dw + 1}'d{D}) err <= 1;  // FIFO overflow",
          "      if (take) begin busy <= 1; t <= 0; end",
          f"      else if (busy) begin if (t == {tw}'d{S - 1}) busy <= 0; else t <= t + 1'b1; end",
          "    end",
          "  end",
          "  always @(posedge clk) begin"]
    for m in range(M):
        o.append(f"    if (take) ch{m} <= head[{m * S * IB} +: {S * IB}];"
                 + (f" else if (busy) ch{m} <= ch{m} >> {IB};" if S > 1 else ""))
    o += ["  end",
          f"  reg f0, l0, f1, l1, l2; reg [{tw - 1}:0] t0;"]
    o += [f"  reg signed [{xb - 1}:0] x0_{m};" for m in range(M)]
    o += ["  always @(posedge clk) begin",
          f"    f0 <= busy && t == {tw}'d0; l0 <= busy && t == {tw}'d{S - 1}; t0 <= t;",
          "    f1 <= f0; l1 <= l0; l2 <= l1;"]
    o += [f"    x0_{m} <= " + (f"ch{m}[{IB - 1}:0];" if in_signed else f"{{1'b0, ch{m}[{IB - 1}:0]}};")
          for m in range(M)]
    o += ["    if (rst) begin f0 <= 0; l0 <= 0; f1 <= 0; l1 <= 0; l2 <= 0; end", "  end"]
    pb = xb + wb
    for c in range(O):
        for m in range(M):
            rom = f"w_{c}_{m}"
            o += [f"  function signed [{wb - 1}:0] {rom}(input [{tw - 1}:0] i);", "    case (i)"]
            for t in range(S):
                e = m * S + t
                v = int(matrix[e, c]) if e < N else 0
                if v:
                    o.append(f"      {tw}'d{t}: {rom} = " + (f"-{wb}'sd{-v};" if v < 0 else f"{wb}'sd{v};"))
            o += [f"      default: {rom} = {wb}'sd0;", "    endcase", "  endfunction",
                  f"  reg signed [{pb - 1}:0] p_{c}_{m};"]
        b = int(bias[c])
        o += [f"  reg signed [{AW - 1}:0] acc_{c};",
              "  always @(posedge clk) begin"]
        o += [f"    p_{c}_{m} <= x0_{m} * w_{c}_{m}(t0);" for m in range(M)]
        terms = " + ".join(f"p_{c}_{m}" for m in range(M))
        bl = f"-{AW}'sd{-b}" if b < 0 else f"{AW}'sd{b}"
        o += [f"    if (f1) acc_{c} <= {bl} + {terms}; else acc_{c} <= acc_{c} + {terms};", "  end"]
    o += ["  always @(posedge clk) begin",
          "    out_valid <= rst ? 1'b0 : l2;",
          f"    if (l2) out_acc <= {{{', '.join(f'acc_{c}' for c in reversed(range(O)))}}};",
          "  end", "endmodule", ""]
    return "\n".join(o)


def emit_dense(st: DenseStage, cm: CmvmCircuit | None) -> str:
    """Collect the H*W final pixels (`st.lanes` a beat), then the logits circuit (or the
    time-shared engine); logits in 32-bit lanes."""
    P = st.lanes
    n = st.H * st.W
    pw = st.c * st.in_bits
    O = st.matrix.shape[1]
    nw = _bits(n // P)
    if st.share is not None:
        ext = engine_acc_bits(st.matrix, st.bias, st.in_bits, False)
    else:
        assert cm is not None
        ext = cm.out_slot - cm.out_frac  # width once shifted back to integer accumulator units
    if ext > LOGIT_BITS:
        raise ValueError(f"logits need {ext} bits, more than the {LOGIT_BITS}-bit output lanes")
    o = [_TS, "module dense (", "  input clk, input rst,", f"  input in_valid, input [{P * pw - 1}:0] in_data,",
         f"  output reg out_valid, output [{O * LOGIT_BITS - 1}:0] out_data", ");",
         f"  reg [{n * pw - 1}:0] sr; reg [{nw - 1}:0] cnt; reg go;"]
    shift_in = f"{{in_data, sr[{n * pw - 1}:{P * pw}]}}" if n > P else "in_data"
    o += ["  always @(posedge clk) begin",
          "    if (rst) begin cnt <= 0; go <= 0; end",
          "    else begin",
          "      go <= 0;",
          "      if (in_valid) begin",
          f"        sr <= {shift_in};",
          f"        if (cnt == {nw}'d{n // P - 1}) begin cnt <= 0; go <= 1; end else cnt <= cnt + 1'b1;",
          "      end", "    end", "  end"]
    if st.share is not None:
        o += [f"  wire [{O * ext - 1}:0] acc; wire eng_valid, eng_err;",
              ("  dense_engine u_eng (.clk(clk), .rst(rst), .in_valid(go), .in_vec(sr), .out_valid(eng_valid), "
               ".out_acc(acc), .err(eng_err));"),
              "  always @(posedge clk) out_valid <= rst ? 1'b0 : eng_valid;"]
        for j in range(O):
            o.append(f"  assign out_data[{j * LOGIT_BITS} +: {LOGIT_BITS}] = "
                     f"{{{{{LOGIT_BITS - ext}{{acc[{(j + 1) * ext - 1}]}}}}, acc[{j * ext} +: {ext}]}};")
        o += ["endmodule", ""]
        return "\n".join(o)
    assert cm is not None
    L = cm.latency
    o += [f"  wire [{O * cm.out_slot - 1}:0] acc;",
          f"  {cm.name}_wrapper u_mac (.clk(clk), .model_inp(sr), .model_out(acc));",
          f"  reg [{L - 1}:0] vpipe;",
          "  always @(posedge clk) begin",
          "    if (rst) begin vpipe <= 0; out_valid <= 0; end",
          f"    else begin vpipe <= {{vpipe, go}}; out_valid <= vpipe[{L - 1}]; end" if L > 1 else
          "    else begin vpipe <= go; out_valid <= vpipe[0]; end",
          "  end"]
    for j in range(O):
        a = f"acc[{j * cm.out_slot} +: {cm.out_slot}]"
        msb = f"acc[{(j + 1) * cm.out_slot - 1}]" if cm.out_signed else "1'b0"
        sh = f", {-cm.out_frac}'d0" if cm.out_frac < 0 else ""
        o.append(f"  assign out_data[{j * LOGIT_BITS} +: {LOGIT_BITS}] = "
                 f"{{{{{LOGIT_BITS - ext}{{{msb}}}}}, {a}{sh}}};" if ext < LOGIT_BITS else
                 f"  assign out_data[{j * LOGIT_BITS} +: {LOGIT_BITS}] = {{{a}{sh}}};")
    o += ["endmodule", ""]
    return "\n".join(o)


def _table(plan: StreamPlan) -> list[str]:
    b = plan.input_bits
    lines = [f"  function [{b - 1}:0] qin(input [7:0] u);", "    case (u)"]
    for u, v in enumerate(plan.table.tolist()):
        lines.append(f"      8'd{u}: qin = {b}'d{int(v) & ((1 << b) - 1)};")
    lines += ["      default: qin = 0;", "    endcase", "  endfunction"]
    return lines


def emit_top(plan: StreamPlan, top: str = "lymphosort_top") -> str:
    """AXI-Stream top: registered uint8 input (`plan.pixels_per_cycle` a beat, lane j in byte j),
    the stage chain, 2-deep logits queue."""
    P = plan.pixels_per_cycle
    n_beats = plan.size * plan.size // P
    O = plan.dense.matrix.shape[1]
    ow = O * LOGIT_BITS
    pw = _bits(n_beats - 1)
    first = plan.stages[0]
    if not isinstance(first, ConvStage):
        raise ValueError("the first stage must be a conv")
    o = [_TS, f"module {top} (", "  input clk, input rst,",
         f"  input s_tvalid, output s_tready, input [{8 * P - 1}:0] s_tdata, input s_tlast,",
         f"  output m_tvalid, input m_tready, output [{ow - 1}:0] m_tdata, output m_tlast,",
         "  output err", ");"]
    if plan.table is not None:
        o += _table(plan)
    o += [f"  reg pix_valid; reg [{8 * P - 1}:0] pix;", f"  reg [{pw - 1}:0] n_in;", "  reg [1:0] outstanding; reg proto_err;",
          "  wire first_busy;", "  wire in_fire = s_tvalid && s_tready;",
          "  wire in_last = in_fire && (n_in == " + f"{pw}'d{n_beats - 1});",
          "  wire out_fire = m_tvalid && m_tready;",
          "  assign s_tready = !rst && !first_busy && (outstanding != 2'd2);",
          "  always @(posedge clk) begin",
          "    if (rst) begin pix_valid <= 0; n_in <= 0; outstanding <= 0; proto_err <= 0; end",
          "    else begin",
          "      pix_valid <= in_fire;",
          "      if (in_fire) n_in <= in_last ? 0 : n_in + 1'b1;",
          "      if (in_fire && (s_tlast != in_last)) proto_err <= 1;",
          "      outstanding <= outstanding + {1'b0, in_last} - {1'b0, out_fire};",
          "    end",
          # the pixel register loads every cycle (read only where pix_valid): no enable, so the
          # handshake does not fan out to its 8P flops (nextpnr's next critical path, ~7 ns of routing)
          "    pix <= s_tdata;",
          "  end"]
    prev_v = "pix_valid"
    prev_d = "pix" if plan.table is None else "{" + ", ".join(f"qin(pix[{j * 8} +: 8])" for j in reversed(range(P))) + "}"
    errs = ["proto_err"]
    for i, st in enumerate(plan.stages):
        v, d = f"{st.name}_v", f"{st.name}_d"
        ports = f".clk(clk), .rst(rst), .in_valid({prev_v}), .in_data({prev_d}), .out_valid({v}), .out_data({d})"
        if isinstance(st, NarrowStage):  # holds while the conv after it flushes
            nxt = plan.stages[i + 1].name
            o += [f"  wire {v}; wire [{st.lanes_out * st.c * st.bits - 1}:0] {d}; wire {st.name}_err, {nxt}_busy;",
                  f"  {st.name} u_{st.name} ({ports}, .hold({nxt}_busy), .err({st.name}_err));"]
            errs.append(f"{st.name}_err")
        elif isinstance(st, ConvStage):
            o += [f"  wire {v}; wire [{st.lanes * st.c_out * st.out_bits - 1}:0] {d}; wire {st.name}_err;"]
            narrowed = i > 0 and isinstance(plan.stages[i - 1], NarrowStage)
            busy = "first_busy" if st is first else (f"{st.name}_busy" if narrowed else "")
            o.append(f"  {st.name} u_{st.name} ({ports}, .busy({busy}), .err({st.name}_err));")
            errs.append(f"{st.name}_err")
        elif isinstance(st, PoolStage):
            o += [f"  wire {v}; wire [{st.lanes_out * st.c * st.out_bits - 1}:0] {d};",
                  f"  {st.name} u_{st.name} ({ports});"]
        elif isinstance(st, QuantStage):
            o += [f"  wire {v}; wire [{st.lanes * st.out_bits - 1}:0] {d};", f"  {st.name} u_{st.name} ({ports});"]
        else:
            o += [f"  wire {v}; wire [{ow - 1}:0] {d};", f"  dense u_dense ({ports});"]
        prev_v, prev_d = v, d
    # 2-deep output queue (never overflows: at most two finished images are outstanding), a
    # ring of two slots: the consumer's m_tready moves a 1-bit read pointer and the count, never
    # the result registers' enables, whose wide fan-out it drove across the die before
    # (nextpnr's critical path: m_tready -> 64 load enables, ~15 ns of routing)
    o += [f"  reg [{ow - 1}:0] q0, q1; reg [1:0] qn; reg qr, qw;",
          "  always @(posedge clk) begin",
          "    if (rst) begin qn <= 0; qr <= 0; qw <= 0; end",
          "    else begin",
          f"      if ({prev_v}) begin if (qw) q1 <= {prev_d}; else q0 <= {prev_d}; qw <= !qw; end",
          "      if (out_fire) qr <= !qr;",
          f"      qn <= qn + {{1'b0, {prev_v}}} - {{1'b0, out_fire}};",
          "    end", "  end",
          "  assign m_tvalid = qn != 0;", "  assign m_tdata = qr ? q1 : q0;", "  assign m_tlast = 1'b1;",
          f"  assign err = {' | '.join(errs)};", "endmodule", ""]
    return "\n".join(o)


def write_design(plan: StreamPlan, circuits: dict[str, CmvmCircuit], out_dir: Path, top: str = "lymphosort_top") -> list[Path]:
    """Write the glue modules and the top into `out_dir` (da4ml files are written by `arith`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for st in plan.stages:
        if isinstance(st, (ConvStage, DenseStage)) and st.share is not None:
            signed = st.in_signed if isinstance(st, ConvStage) else False
            files.append(write_if_changed(out_dir / f"{st.name}_engine.v", emit_engine(
                f"{st.name}_engine", st.matrix, st.bias, st.in_bits, signed, st.share)))
        if isinstance(st, ConvStage):
            text = emit_conv(st, circuits.get(st.name))
        elif isinstance(st, PoolStage):
            text = emit_pool(st)
        elif isinstance(st, QuantStage):
            text = emit_quant(st)
        elif isinstance(st, NarrowStage):
            text = emit_narrow(st)
        else:
            text = emit_dense(st, circuits.get(st.name))
        files.append(write_if_changed(out_dir / f"{st.name}.v", text))
    files.append(write_if_changed(out_dir / f"{top}.v", emit_top(plan, top)))
    return files

