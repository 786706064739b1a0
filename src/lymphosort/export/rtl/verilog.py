"""Backend: a `StreamPlan` -> streaming Verilog (glue generated here, arithmetic from da4ml).

Dataflow, one pixel a cycle at the input, every stage fed by valid beats (no stalls inside):

- input: AXI-Stream slave, uint8 pixel registered, then the 256-entry normalise-and-quantise
  table; ``s_tready`` drops only while conv1 flushes its bottom padding (``p*W + p`` cycles
  after each image with same padding) or two finished images wait at the output;
- conv: line buffers indexed by column (k-1 of them) feed a k x k window register. Padding
  costs no input cycles: the window is masked at the map edges, and each tick emits one
  output (the right-edge output of the previous row rides on a row's first p ticks). The
  masked window goes through the layer's da4ml circuit, then ReLU + round-half-even +
  saturation (the IR's requantiser) in one registered step;
- 2x2 max pool: a half-width line buffer of horizontal maxima;
- dense: a shift register collects the final map, one da4ml circuit gives the logits;
- output: a 2-deep queue, one beat of all logits (32-bit lanes, integer accumulator units:
  logit = value * 2**acc_exp), ``tlast`` = 1.

Later stages cannot stall an earlier one; a stage that would receive a pixel while still
flushing raises the sticky ``err`` output (never seen in simulation; the test checks it).
"""

from __future__ import annotations

from pathlib import Path

from lymphosort.export.rtl.arith import CmvmCircuit, write_if_changed
from lymphosort.export.rtl.plan import ConvStage, DenseStage, PoolStage, StreamPlan

__all__ = ["LOGIT_BITS", "emit_conv", "emit_pool", "emit_dense", "emit_top"]

LOGIT_BITS = 32  # one output lane a logit
_TS = "`timescale 1 ns / 1 ps\n"


def _bits(n: int) -> int:
    """Unsigned width that holds 0..n."""
    return max(1, int(n).bit_length())


def _requant(idx: int, acc: str, slot: int, frac: int, shift: int, out_bits: int) -> list[str]:
    """Verilog lines: ReLU, round half to even by `shift` (acc units), saturate to `out_bits`."""
    a = f"a{idx}"
    s = shift + frac  # slot value = true * 2**frac
    mx = (1 << out_bits) - 1
    lines = [f"wire [{slot - 1}:0] {a} = {acc}[{idx * slot} +: {slot}];", f"wire neg{idx} = {a}[{slot - 1}];"]
    if s >= slot:  # every non-negative value rounds to 0
        lines.append(f"wire [{out_bits - 1}:0] y{idx} = {out_bits}'d0;")
        return lines
    if s > 0:
        q = f"{{1'b0, {a}[{slot - 2}:{s}]}}" if s <= slot - 2 else "1'b0"
        qw = max(slot - 1 - s, 0) + 1
        sticky = f"(|{a}[{s - 2}:0])" if s >= 2 else "1'b0"
        lines += [
            f"wire up{idx} = {a}[{s - 1}] & ({sticky} | {a}[{s}]);",  # > half, or = half and odd
            f"wire [{qw}:0] r{idx} = {{1'b0, {q}}} + {{{qw}'d0, up{idx}}};",
        ]
        w = qw + 1
    else:  # left shift: exact
        w = slot - 1 - s
        lines.append(f"wire [{w - 1}:0] r{idx} = {{{a}[{slot - 2}:0], {-s}'d0}};" if s < 0
                     else f"wire [{w - 1}:0] r{idx} = {a}[{slot - 2}:0];")
    if w > out_bits:
        lines.append(f"wire [{out_bits - 1}:0] y{idx} = neg{idx} ? {out_bits}'d0 : "
                     f"((r{idx} > {w}'d{mx}) ? {out_bits}'d{mx} : r{idx}[{out_bits - 1}:0]);")
    else:
        lines.append(f"wire [{out_bits - 1}:0] y{idx} = neg{idx} ? {out_bits}'d0 : "
                     f"{{{{{out_bits - w}{{1'b0}}}}, r{idx}}};" if w < out_bits else
                     f"wire [{out_bits - 1}:0] y{idx} = neg{idx} ? {out_bits}'d0 : r{idx};")
    return lines


# long by design: one Verilog module as one template: split, the signal names would scatter
def emit_conv(st: ConvStage, cm: CmvmCircuit) -> str:
    """The line-buffer conv stage `st` around its da4ml circuit `cm`."""
    k, p, H, W = st.k, st.pad, st.H, st.W
    pw = st.c_in * st.in_bits  # one pixel vector
    ow = st.c_out * st.out_bits
    rw, cw = _bits(H + p), _bits(W)
    L = cm.latency
    o = [_TS, f"module {st.name} (", "  input clk, input rst,", f"  input in_valid, input [{pw - 1}:0] in_data,",
         "  output busy, output reg err,", f"  output reg out_valid, output reg [{ow - 1}:0] out_data", ");"]
    o += [f"  reg [{rw - 1}:0] r; reg [{cw - 1}:0] c; reg flushing;",
          f"  wire last_real = (r == {rw}'d{H - 1}) && (c == {cw}'d{W - 1});"]
    if p > 0:
        o += ["  wire tick = flushing | in_valid;",
              f"  wire [{pw - 1}:0] x = flushing ? {pw}'d0 : in_data;",
              "  assign busy = flushing | (in_valid & last_real);",
              f"  wire flush_end = flushing && (r == {rw}'d{H + p}) && (c == {cw}'d{p - 1});"]
    else:
        o += ["  wire tick = in_valid;", f"  wire [{pw - 1}:0] x = in_data;", "  assign busy = 1'b0;"]
    for i in range(k - 1):
        o.append(f"  reg [{pw - 1}:0] lb{i} [0:{W - 1}];")
    for i in range(k):
        for j in range(k):
            o.append(f"  reg [{pw - 1}:0] w{i}_{j};")
    o += [f"  reg emit; reg [{rw - 1}:0] orow; reg [{cw - 1}:0] ocol;"]
    # emission position of the tick at (r, c) (see the module docstring)
    if p > 0:
        o += [f"  wire right = c < {cw}'d{p};",
              f"  wire [{rw - 1}:0] t_row = right ? r - {rw}'d{p + 1} : r - {rw}'d{p};",
              f"  wire [{cw - 1}:0] t_col = right ? c + {cw}'d{W - p} : c - {cw}'d{p};",
              f"  wire t_ok = right ? (r >= {rw}'d{p + 1} && r <= {rw}'d{H + p}) : (r >= {rw}'d{p} && r <= {rw}'d{H - 1 + p});"]
    else:
        o += [f"  wire [{rw - 1}:0] t_row = r - {rw}'d{k - 1};", f"  wire [{cw - 1}:0] t_col = c - {cw}'d{k - 1};",
              f"  wire t_ok = r >= {rw}'d{k - 1} && c >= {cw}'d{k - 1};"]
    o += ["  always @(posedge clk) begin",
          "    if (rst) begin",
          "      r <= 0; c <= 0; flushing <= 0; emit <= 0; err <= 0;",
          "    end else begin",
          "      emit <= tick && t_ok;",
          "      if (in_valid && flushing) err <= 1;",
          "      if (tick) begin",
          "        orow <= t_row; ocol <= t_col;"]
    if p > 0:
        o += ["        if (flush_end) begin r <= 0; c <= 0; flushing <= 0; end",
              f"        else if (!flushing && last_real) begin r <= {rw}'d{H}; c <= 0; flushing <= 1; end"]
    else:
        o += ["        if (last_real) begin r <= 0; c <= 0; end"]
    o += [f"        else if (c == {cw}'d{W - 1}) begin c <= 0; r <= r + 1'b1; end",
          "        else c <= c + 1'b1;",
          "      end", "    end", "  end"]
    # window and line buffers (no reset needed: masked or overwritten before use)
    o += ["  always @(posedge clk) begin", "    if (tick) begin"]
    for i in range(k):
        for j in range(k - 1):
            o.append(f"      w{i}_{j} <= w{i}_{j + 1};")
        o.append(f"      w{i}_{k - 1} <= {f'lb{i}[c]' if i < k - 1 else 'x'};")
    for i in range(k - 1):
        o.append(f"      lb{i}[c] <= {f'lb{i + 1}[c]' if i < k - 2 else 'x'};")
    o += ["    end", "  end"]
    # edge masks: window row i <-> input row orow - p + i, column j <-> ocol - p + j
    for name, pos, width, size in (("rok", "orow", rw, H), ("cok", "ocol", cw, W)):
        for i in range(k):
            conds = []
            if i < p:
                conds.append(f"{pos} >= {width}'d{p - i}")
            if i > p:
                conds.append(f"{pos} <= {width}'d{size - 1 - (i - p)}")
            o.append(f"  wire {name}{i} = {' && '.join(conds) if conds else '1'};")
    elems = [f"((rok{i} && cok{j}) ? w{i}_{j} : {pw}'d0)" for i in range(k) for j in range(k)]
    o.append(f"  wire [{k * k * pw - 1}:0] vec = {{{', '.join(reversed(elems))}}};")
    o += [f"  wire [{cm.n_out * cm.out_slot - 1}:0] acc;",
          f"  {cm.name}_wrapper u_mac (.clk(clk), .model_inp(vec), .model_out(acc));",
          f"  reg [{L - 1}:0] vpipe;"]
    for co in range(st.c_out):
        o += ["  " + s for s in _requant(co, "acc", cm.out_slot, cm.out_frac, st.shift, st.out_bits)]
    ys = ", ".join(f"y{co}" for co in reversed(range(st.c_out)))
    o += ["  always @(posedge clk) begin",
          "    if (rst) begin vpipe <= 0; out_valid <= 0; end",
          f"    else begin vpipe <= {{vpipe, emit}}; out_valid <= vpipe[{L - 1}]; end" if L > 1 else
          "    else begin vpipe <= emit; out_valid <= vpipe[0]; end",
          f"    out_data <= {{{ys}}};", "  end", "endmodule", ""]
    return "\n".join(o)


def emit_pool(st: PoolStage) -> str:
    """2x2 max pool over a raster stream of `st.c`-channel unsigned pixels."""
    H, W, B, C = st.H, st.W, st.bits, st.c
    pw = C * B
    rw, cw = _bits(H), _bits(W)
    hw = max(W // 2, 1)
    o = [_TS, f"module {st.name} (", "  input clk, input rst,", f"  input in_valid, input [{pw - 1}:0] in_data,",
         f"  output reg out_valid, output reg [{pw - 1}:0] out_data", ");",
         f"  reg [{rw - 1}:0] r; reg [{cw - 1}:0] c;", f"  reg [{pw - 1}:0] hold;", f"  reg [{pw - 1}:0] lb [0:{hw - 1}];"]
    hmax = []
    vmax = []
    for ch in range(C):
        sl = f"[{ch * B} +: {B}]"
        o.append(f"  wire [{B - 1}:0] h{ch} = (hold{sl} > in_data{sl}) ? hold{sl} : in_data{sl};")
        o.append(f"  wire [{B - 1}:0] v{ch} = (lb[c[{cw - 1}:1]]{sl} > h{ch}) ? lb[c[{cw - 1}:1]]{sl} : h{ch};"
                 if cw > 1 else f"  wire [{B - 1}:0] v{ch} = (lb[0]{sl} > h{ch}) ? lb[0]{sl} : h{ch};")
        hmax.append(f"h{ch}")
        vmax.append(f"v{ch}")
    idx = f"c[{cw - 1}:1]" if cw > 1 else "0"
    inside = f"(r < {rw}'d{2 * (H // 2)}) && (c < {cw}'d{2 * (W // 2)})"
    o += ["  always @(posedge clk) begin",
          "    if (rst) begin r <= 0; c <= 0; out_valid <= 0; end",
          "    else begin",
          "      out_valid <= 0;",
          "      if (in_valid) begin",
          "        if (!c[0]) hold <= in_data;",
          f"        else if ({inside}) begin",
          f"          if (!r[0]) lb[{idx}] <= {{{', '.join(reversed(hmax))}}};",
          f"          else begin out_valid <= 1; out_data <= {{{', '.join(reversed(vmax))}}}; end",
          "        end",
          f"        if (c == {cw}'d{W - 1}) begin c <= 0; r <= (r == {rw}'d{H - 1}) ? {rw}'d0 : r + 1'b1; end",
          "        else c <= c + 1'b1;",
          "      end", "    end", "  end", "endmodule", ""]
    return "\n".join(o)


def emit_dense(st: DenseStage, cm: CmvmCircuit) -> str:
    """Collect the H*W final pixels, then the logits circuit; logits in 32-bit lanes."""
    n = st.H * st.W
    pw = st.c * st.in_bits
    O = cm.n_out
    L = cm.latency
    nw = _bits(n)
    ext = cm.out_slot - cm.out_frac  # width once shifted back to integer accumulator units
    if ext > LOGIT_BITS:
        raise ValueError(f"logits need {ext} bits, more than the {LOGIT_BITS}-bit output lanes")
    o = [_TS, "module dense (", "  input clk, input rst,", f"  input in_valid, input [{pw - 1}:0] in_data,",
         f"  output reg out_valid, output [{O * LOGIT_BITS - 1}:0] out_data", ");",
         f"  reg [{n * pw - 1}:0] sr; reg [{nw - 1}:0] cnt; reg go;"]
    shift_in = f"{{in_data, sr[{n * pw - 1}:{pw}]}}" if n > 1 else "in_data"
    o += ["  always @(posedge clk) begin",
          "    if (rst) begin cnt <= 0; go <= 0; end",
          "    else begin",
          "      go <= 0;",
          "      if (in_valid) begin",
          f"        sr <= {shift_in};",
          f"        if (cnt == {nw}'d{n - 1}) begin cnt <= 0; go <= 1; end else cnt <= cnt + 1'b1;",
          "      end", "    end", "  end",
          f"  wire [{O * cm.out_slot - 1}:0] acc;",
          f"  {cm.name}_wrapper u_mac (.clk(clk), .model_inp(sr), .model_out(acc));",
          f"  reg [{L - 1}:0] vpipe;",
          "  always @(posedge clk) begin",
          "    if (rst) begin vpipe <= 0; out_valid <= 0; end",
          f"    else begin vpipe <= {{vpipe, go}}; out_valid <= vpipe[{L - 1}]; end" if L > 1 else
          "    else begin vpipe <= go; out_valid <= vpipe[0]; end",
          "  end"]
    for j in range(O):
        a = f"acc[{j * cm.out_slot} +: {cm.out_slot}]"
        msb = f"acc[{(j + 1) * cm.out_slot - 1}]"
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
    """AXI-Stream top: registered uint8 input, the stage chain, 2-deep logits queue."""
    n_pix = plan.size * plan.size
    O = plan.dense.matrix.shape[1]
    ow = O * LOGIT_BITS
    pw = _bits(n_pix - 1)
    conv1 = plan.stages[0]
    if not isinstance(conv1, ConvStage):
        raise ValueError("the first stage must be a conv")
    o = [_TS, f"module {top} (", "  input clk, input rst,",
         "  input s_tvalid, output s_tready, input [7:0] s_tdata, input s_tlast,",
         f"  output m_tvalid, input m_tready, output [{ow - 1}:0] m_tdata, output m_tlast,",
         "  output err", ");"]
    o += _table(plan)
    o += ["  reg pix_valid; reg [7:0] pix;", f"  reg [{pw - 1}:0] n_in;", "  reg [1:0] outstanding; reg proto_err;",
          "  wire conv1_busy;", "  wire in_fire = s_tvalid && s_tready;",
          "  wire in_last = in_fire && (n_in == " + f"{pw}'d{n_pix - 1});",
          "  wire out_fire = m_tvalid && m_tready;",
          "  assign s_tready = !rst && !conv1_busy && (outstanding != 2'd2);",
          "  always @(posedge clk) begin",
          "    if (rst) begin pix_valid <= 0; n_in <= 0; outstanding <= 0; proto_err <= 0; end",
          "    else begin",
          "      pix_valid <= in_fire;",
          "      if (in_fire) begin pix <= s_tdata; n_in <= in_last ? 0 : n_in + 1'b1; end",
          "      if (in_fire && (s_tlast != in_last)) proto_err <= 1;",
          "      outstanding <= outstanding + {1'b0, in_last} - {1'b0, out_fire};",
          "    end", "  end"]
    prev_v, prev_d = "pix_valid", "qin(pix)"
    errs = ["proto_err"]
    for st in plan.stages:
        v, d = f"{st.name}_v", f"{st.name}_d"
        if isinstance(st, ConvStage):
            o += [f"  wire {v}; wire [{st.c_out * st.out_bits - 1}:0] {d}; wire {st.name}_err;"]
            busy = "conv1_busy" if st is conv1 else ""
            o.append(f"  {st.name} u_{st.name} (.clk(clk), .rst(rst), .in_valid({prev_v}), .in_data({prev_d}), "
                     f".busy({busy}), .err({st.name}_err), .out_valid({v}), .out_data({d}));")
            errs.append(f"{st.name}_err")
        elif isinstance(st, PoolStage):
            o += [f"  wire {v}; wire [{st.c * st.bits - 1}:0] {d};",
                  f"  {st.name} u_{st.name} (.clk(clk), .rst(rst), .in_valid({prev_v}), .in_data({prev_d}), "
                  f".out_valid({v}), .out_data({d}));"]
        else:
            o += [f"  wire {v}; wire [{ow - 1}:0] {d};",
                  f"  dense u_dense (.clk(clk), .rst(rst), .in_valid({prev_v}), .in_data({prev_d}), "
                  f".out_valid({v}), .out_data({d}));"]
        prev_v, prev_d = v, d
    # 2-deep output queue: never overflows, at most two finished images are outstanding
    o += [f"  reg [{ow - 1}:0] q0, q1; reg [1:0] qn;",
          "  always @(posedge clk) begin",
          "    if (rst) qn <= 0;",
          "    else begin",
          "      if (out_fire) q0 <= q1;",
          f"      if ({prev_v}) begin",
          f"        if (qn == 0 || (qn == 1 && out_fire)) q0 <= {prev_d};",
          f"        else if (qn == 1 || (qn == 2 && out_fire)) q1 <= {prev_d};",
          "      end",
          f"      qn <= qn + {{1'b0, {prev_v}}} - {{1'b0, out_fire}};",
          "    end", "  end",
          "  assign m_tvalid = qn != 0;", "  assign m_tdata = q0;", "  assign m_tlast = 1'b1;",
          f"  assign err = {' | '.join(errs)};", "endmodule", ""]
    return "\n".join(o)


def write_design(plan: StreamPlan, circuits: dict[str, CmvmCircuit], out_dir: Path, top: str = "lymphosort_top") -> list[Path]:
    """Write the glue modules and the top into `out_dir` (da4ml files are written by `arith`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    for st in plan.stages:
        if isinstance(st, ConvStage):
            text = emit_conv(st, circuits[st.name])
        elif isinstance(st, PoolStage):
            text = emit_pool(st)
        else:
            text = emit_dense(st, circuits[st.name])
        files.append(write_if_changed(out_dir / f"{st.name}.v", text))
    files.append(write_if_changed(out_dir / f"{top}.v", emit_top(plan, top)))
    return files

