"""Float ONNX export of a registered model, checked against torch with ONNX Runtime.

The graph takes what the model's spec says it takes: input ``"input"``, float32 NCHW
``[N, 1, S, S]`` already normalised (``ModelSpec.prepare``: the spec's field of view, size, mean, std);
output ``"logits"`` ``[N, C]`` (no softmax: a hardware or real-time consumer takes an
argmax or a logit difference). The model card travels next to the graph so a consumer
reads the preprocessing from it rather than re-declaring it.

We use the TorchScript exporter (``dynamo=False``): it needs no onnxscript, and the students
(conv/ReLU/pool/linear) export to the plain ops every runtime and QONNX understands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lymphosort.errors import LymphosortError

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "FLOAT_TOLERANCE", "ExportError", "export_onnx", "check_onnx", "onnx_session"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: largest |ONNX Runtime - torch| logit difference accepted for a float export.
FLOAT_TOLERANCE = 1e-4


class ExportError(LymphosortError, RuntimeError):
    """An export failed or its output does not match the model it came from."""


def export_onnx(
    model: Any, path: str | os.PathLike[str], *, opset: int = 17, dynamic_batch: bool = True
) -> Path:
    """Write `model` (eval mode, CPU copy) as ONNX to `path`; return the path.

    Input ``"input"`` float32 ``[N, 1, S, S]`` (S = ``model.spec.input_size``), output
    ``"logits"``; the batch axis is symbolic (``"N"``) when `dynamic_batch`.
    """
    import copy
    import warnings

    import torch

    spec = getattr(model, "spec", None)
    if spec is None:
        raise ExportError("model has no .spec; build it with lymphosort.models.create_model")
    from lymphosort.atomic import atomic_write

    m = copy.deepcopy(model).cpu().eval()
    dummy = torch.zeros(1, 1, spec.input_size, spec.input_size)
    axes = {INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}} if dynamic_batch else None

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
            torch.onnx.export(
                m,
                (dummy,),
                str(tmp),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=int(opset),
                dynamic_axes=axes,
                dynamo=False,
                do_constant_folding=True,
            )

    return atomic_write(path, write)


def onnx_session(path: str | os.PathLike[str], *, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session with `threads` intra-op threads (1: predictable latency)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def check_onnx(
    path: str | os.PathLike[str], model: Any, images_uint8: Any, *, batch_size: int = 256
) -> dict[str, Any]:
    """Run `onnx.checker` and compare ONNX Runtime logits with torch on `images_uint8`.

    `images_uint8`: uint8 ``[N, H, W]`` (torch or numpy); each is converted with the
    model's spec. Returns ``{"checker": "ok", "n_checked", "max_abs_diff",
    "argmax_agreement", "opset", "tolerance"}``.
    """
    import numpy as np
    import onnx
    import torch

    proto = onnx.load(str(path))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"onnx.checker rejected {path}: {exc}") from None
    sess = onnx_session(path, threads=1)
    spec = model.spec
    imgs = torch.as_tensor(np.asarray(images_uint8))
    m = model.cpu().eval() if next(model.parameters()).device.type != "cpu" else model.eval()
    max_diff, agree, n = 0.0, 0, int(len(imgs))
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            x = spec.prepare(imgs[start : start + batch_size])
            ref = m(x).float().numpy()
            got = sess.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
            max_diff = max(max_diff, float(np.max(np.abs(ref - got))) if len(ref) else 0.0)
            agree += int(np.sum(ref.argmax(1) == got.argmax(1)))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "checker": "ok",
        "n_checked": n,
        "max_abs_diff": max_diff,
        "argmax_agreement": agree / n if n else None,
        "opset": opset,
        "tolerance": FLOAT_TOLERANCE,
    }
