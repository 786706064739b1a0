"""QONNX -> hls4ml: the FPGA bundle of a quantised student, checked bit for bit.

Flow (hls4ml style, frontends -> IR -> backends):

1. frontend: the Brevitas `QuantConvStudent` is read into the integer IR
   (`fixedpoint.from_quant_model`);
2. `write_qonnx(fp, path)`: the IR as a QONNX graph (Quant nodes with power-of-two scales on
   the input, weights, biases and activations; Conv/Relu/MaxPool/Gemm; the average pool
   already folded into the Gemm), then cleaned, made channels-last and Gemm -> MatMul with
   qonnx, which is the form hls4ml's ONNX frontend reads;
3. `make_config(fp, model)`: the hls4ml config, per layer, with the accumulator and result
   types sized from the IR so nothing overflows or rounds where the IR does not (the input is
   the IR's input level, `input_bits` wide, one pixel a beat: `input_type`). It is written as YAML for
   editing and read back with ``--hls-config`` (safe_load);
4. `convert(...)`: ``hls4ml.converters.convert_from_onnx_model`` (Vitis backend, io_stream),
   ``compile()`` builds the C++ emulation; `check_agreement` compares it with the IR.

The network ends at the logits (no softmax in hardware: the host or the sorter takes the
argmax or the logit difference).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from lymphosort.export.fixedpoint import FixedPointModel
from lymphosort.export.onnx import ExportError

__all__ = [
    "DEFAULT_CLOCK_NS",
    "DEFAULT_PART",
    "check_agreement",
    "convert",
    "fixed_type",
    "input_levels",
    "input_type",
    "make_config",
    "write_qonnx",
]

log = logging.getLogger(__name__)

#: a mid-size UltraScale+ part common on PCIe/edge boards; any Vitis HLS part works.
DEFAULT_PART = "xczu7ev-ffvc1156-2-e"
DEFAULT_CLOCK_NS = 5.0
_QUANT_DOMAIN = "qonnx.custom_op.general"


def input_type(fp: FixedPointModel) -> str:
    """The stream's pixel type: the IR's input levels themselves (`input_bits` signed bits at
    scale ``2**input_exp``), so a beat carries one 8-bit pixel and the first quantiser passes it
    through. The uint8 -> level step (window, shrink, normalise, round) is `input_ints`: on the
    host, or in hardware as the front end `lymphosort export rtl` generates."""
    return f"fixed<{fp.input_bits},{fp.input_bits + fp.input_exp}>"


def input_levels(fp: FixedPointModel, x_float: Any) -> np.ndarray:
    """Float normalised input [N,1,S,S] -> the stream's values (exact in `input_type`)."""
    return (fp.quantize_input(x_float) * 2.0**fp.input_exp).numpy().astype(np.float32)


def fixed_type(bound: int, exp: int, signed: bool = True) -> str:
    """The narrowest ``fixed``/``ufixed`` holding integers |v| <= bound at scale 2**exp."""
    width = max(int(bound).bit_length(), 1) + (1 if signed else 0)
    width = max(width, -exp + 1)  # keep at least one integer bit (I >= 1)
    return f"{'fixed' if signed else 'ufixed'}<{width},{width + exp}>"


def _quant_node(helper: Any, name: str, src: str, dst: str, exp: int, bits: int, signed: bool, narrow: bool,
                inits: list) -> Any:
    from onnx import numpy_helper

    for suffix, value in (("scale", 2.0**exp), ("zeropt", 0.0), ("bitwidth", float(bits))):
        inits.append(numpy_helper.from_array(np.array(value, dtype=np.float32), f"{name}_{suffix}"))
    return helper.make_node(
        "Quant", [src, f"{name}_scale", f"{name}_zeropt", f"{name}_bitwidth"], [dst], name=name,
        domain=_QUANT_DOMAIN, signed=int(signed), narrow=int(narrow), rounding_mode="ROUND",
    )


def write_qonnx(fp: FixedPointModel, path: str | os.PathLike[str], *, clean: bool = True) -> Path:
    """Write the IR as QONNX (NCHW, batch 1) to `path`; with `clean`, also the hls4ml-ready
    form (cleaned, channels-last, MatMul) next to it as ``*_clean.onnx``; return that path
    (or `path` when not cleaning)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    s = fp.input_size
    nodes: list[Any] = []
    inits: list[Any] = []
    nodes.append(_quant_node(helper, "quant_in", "input", "q0", fp.input_exp, fp.input_bits, True, False, inits))
    cur = "q0"
    for i, lay in enumerate(fp.layers):
        w = (lay.weight.astype(np.float64) * 2.0**lay.w_exp).astype(np.float32)
        if np.any(np.abs(lay.bias) >= 2**24):
            raise ExportError(f"layer {i} bias does not fit float32 exactly; lower the bias width")
        b = (lay.bias.astype(np.float64) * 2.0**lay.acc_exp).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes.append(_quant_node(helper, f"quant_w{i}", f"w{i}", f"wq{i}", lay.w_exp, lay.w_bits, True, True, inits))
        nodes.append(_quant_node(helper, f"quant_b{i}", f"b{i}", f"bq{i}", lay.acc_exp, 32, True, False, inits))
        if lay.kind == "conv":
            k = int(lay.weight.shape[-1])
            p = int(lay.padding)
            nodes.append(helper.make_node("Conv", [cur, f"wq{i}", f"bq{i}"], [f"conv{i}"], name=f"conv{i}",
                                          kernel_shape=[k, k], pads=[p, p, p, p], strides=[1, 1],
                                          dilations=[1, 1], group=1))
            nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
            nodes.append(_quant_node(helper, f"quant_a{i}", f"relu{i}", f"act{i}", int(lay.out_exp),
                                     int(lay.out_bits), False, False, inits))
            cur = f"act{i}"
            if lay.pool > 1:
                nodes.append(helper.make_node("MaxPool", [cur], [f"pool{i}"], name=f"pool{i}",
                                              kernel_shape=[lay.pool, lay.pool], strides=[lay.pool, lay.pool],
                                              pads=[0, 0, 0, 0], dilations=[1, 1], ceil_mode=0))
                cur = f"pool{i}"
        else:
            nodes.append(helper.make_node("Flatten", [cur], ["flat"], name="flatten", axis=1))
            nodes.append(helper.make_node("Gemm", ["flat", f"wq{i}", f"bq{i}"], ["logits"], name="dense", transB=1))
    graph = helper.make_graph(
        nodes, "lymphosort_student",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, s, s])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, int(fp.layers[-1].weight.shape[0])])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(_QUANT_DOMAIN, 1)],
                              producer_name="lymphosort")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    if not clean:
        return path
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.channels_last import ConvertToChannelsLastAndClean
    from qonnx.transformation.gemm_to_matmul import GemmToMatMul
    from qonnx.util.cleanup import cleanup_model

    mw = cleanup_model(ModelWrapper(str(path)))
    mw = mw.transform(ConvertToChannelsLastAndClean())
    mw = cleanup_model(mw.transform(GemmToMatMul()))
    _drop_input_transpose(mw)
    clean_path = path.with_name(path.stem + "_clean.onnx")
    mw.save(str(clean_path))
    return clean_path


def _drop_input_transpose(mw: Any) -> None:
    """The channels-last conversion puts a Transpose (NCHW -> NHWC) on the input, which hls4ml
    builds as a stage that buffers the whole image and streams a row a beat. One grey channel
    has the same memory order either way: declare the input NHWC and stream one pixel a beat."""
    graph = mw.graph
    name = graph.input[0].name
    shape = mw.get_tensor_shape(name)
    users = [n for n in graph.node if name in n.input]
    if len(shape) != 4 or shape[1] != 1 or len(users) != 1 or users[0].op_type != "Transpose":
        return
    tr = users[0]
    if list(next(a.ints for a in tr.attribute if a.name == "perm")) != [0, 2, 3, 1]:
        return
    for node in graph.node:
        node.input[:] = [name if i == tr.output[0] else i for i in node.input]
    graph.node.remove(tr)
    mw.set_tensor_shape(name, [shape[0], shape[2], shape[3], 1])


def make_config(fp: FixedPointModel, qonnx_clean: str | os.PathLike[str], *, reuse_factor: int = 1,
                strategy: str = "Latency") -> dict[str, Any]:
    """hls4ml per-layer config for the cleaned QONNX, with exact accumulator/result types."""
    import hls4ml
    from qonnx.core.modelwrapper import ModelWrapper

    cfg = hls4ml.utils.config.config_from_onnx_model(
        ModelWrapper(str(qonnx_clean)), granularity="name", backend="Vitis", default_precision="fixed<16,6>",
        default_reuse_factor=reuse_factor,
    )
    cfg["Model"]["Strategy"] = strategy
    layers = cfg["LayerName"]
    for lc in layers.values():
        lc["ReuseFactor"] = reuse_factor
    # Layer names follow the cleaned graph: global_in, Conv_<i>, MatMul_0 + Add_0 (the dense).
    layers["global_in"]["Precision"]["result"] = input_type(fp)
    convs = [lay for lay in fp.layers if lay.kind == "conv"]
    for i, lay in enumerate(convs):
        t = fixed_type(lay.acc_bound(), lay.acc_exp)
        layers[f"Conv_{i}"]["Precision"].update(accum=t, result=t)
    dense = fp.layers[-1]
    t = fixed_type(dense.acc_bound(), dense.acc_exp)
    for name in ("MatMul_0", "Add_0"):
        layers[name]["Precision"].update(accum=t, result=t)
    return cfg


def convert(
    fp: FixedPointModel,
    out_dir: str | os.PathLike[str],
    *,
    config: dict[str, Any] | None = None,
    part: str = DEFAULT_PART,
    clock_ns: float = DEFAULT_CLOCK_NS,
    io_type: str = "io_stream",
    tb_input: np.ndarray | None = None,
    project_name: str = "lymphosort_student",
    reuse_factor: int = 1,
) -> tuple[Any, dict[str, Any]]:
    """QONNX + config -> a written hls4ml project in OUT/hls_prj; return (hls_model, config).

    `tb_input` (float normalised [N,1,S,S]) becomes the C/co-simulation test vectors (as the
    stream's 8-bit levels), with the IR's exact logits as the expected output.
    """
    import hls4ml
    import yaml
    from qonnx.core.modelwrapper import ModelWrapper

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = write_qonnx(fp, out / "model.qonnx.onnx")
    if config is None:
        config = make_config(fp, clean, reuse_factor=reuse_factor)
    from lymphosort.atomic import atomic_write, write_text_atomic

    write_text_atomic(out / "hls_config.yaml", yaml.safe_dump(config, sort_keys=False))
    kwargs: dict[str, Any] = {}
    if tb_input is not None:
        tb = out / "tb_vectors"
        tb.mkdir(exist_ok=True)
        x = input_levels(fp, tb_input)
        expected = fp.predict_from_input(x).astype(np.float64)
        atomic_write(tb / "input.npy", lambda tmp: np.save(tmp, x))
        atomic_write(tb / "expected_logits.npy", lambda tmp: np.save(tmp, expected))
        kwargs.update(input_data_tb=str(tb / "input.npy"), output_data_tb=str(tb / "expected_logits.npy"))
    hm = hls4ml.converters.convert_from_onnx_model(
        ModelWrapper(str(clean)), output_dir=str(out / "hls_prj"), project_name=project_name,
        io_type=io_type, backend="Vitis", hls_config=config, part=part, clock_period=clock_ns, **kwargs,
    )
    return hm, config


def check_agreement(hls_model: Any, fp: FixedPointModel, x_float: Any, *, batch_size: int = 500) -> dict[str, Any]:
    """Compiled emulation vs the IR on float normalised inputs [N,1,S,S] (streamed as their
    8-bit levels): argmax agreement and max |logit difference| (0 when bit-exact)."""
    x = input_levels(fp, x_float)
    ref = fp.predict_from_input(x)
    got = np.concatenate([
        np.asarray(hls_model.predict(np.ascontiguousarray(x[s : s + batch_size]))).reshape(-1, ref.shape[1])
        for s in range(0, len(x), batch_size)
    ])
    return {
        "n_checked": int(len(x)),
        "agreement": float(np.mean(got.argmax(1) == ref.argmax(1))) if len(x) else None,
        "max_abs_diff": float(np.max(np.abs(got - ref))) if len(x) else None,
        "bit_exact": bool(np.array_equal(got, ref)),
    }
