"""The quantised student as integers: the IR every FPGA backend is generated from, and a
fast bit-exact evaluator of what the hls4ml design computes.

Frontend -> IR -> backends: `from_quant_model` reads a Brevitas `QuantConvStudent` into a
`FixedPointModel` (integer weights, power-of-two exponents, bit widths); `hls.py` writes
QONNX/hls4ml from it; `FixedPointModel.predict_logits` evaluates it here.

Arithmetic (what the hls4ml types implement, see `hls.py`):

- input: ``q = clip(round_half_even(x / 2**e_in), -2**(b-1), 2**(b-1) - 1)`` on the float
  normalised input (`to_model_input`, same float32 values the emulation receives). When the
  model shrinks its view exactly 2x (torch's antialiased bilinear then has rational weights:
  (1,3,3,1)/8 per axis, (3,3,1)/7 at the borders), ``x`` is taken exactly: the integer
  stencil sum ``s`` of the uint8 pixels, then ``q`` rounded from the exact rational
  ``(s / (255 D) - mean) / std`` (`input_ints`). Every backend takes this one definition
  (hls4ml gets ``q * 2**e_in``, which its input quantiser maps back to ``q``); it equals
  torch's float32 path unless float rounding crosses a quantisation step;
- conv/dense: integer accumulate ``acc = sum(w * q) + bias`` in units ``2**(e_in + e_w)``,
  exact (the hardware accumulator type is sized so it cannot overflow);
- ReLU + quantiser: ``clip(round_half_even(max(acc, 0) * 2**(e_acc - e_out)), 0, 2**b - 1)``
  (``AP_RND_CONV, AP_SAT``); max pool on integers;
- a power-of-two average pool is folded into the dense layer (weights repeated over the
  window, exponent lowered by log2(area)): exact, and no divider in hardware;
- logits = ``acc * 2**e_acc`` (no softmax: the hardware decides by argmax).

Integers are carried in float64 and convolved with torch: every partial sum is an integer
below 2**53 (checked when the model is built), so float64 is exact and BLAS-fast.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lymphosort.errors import LymphosortError

__all__ = ["FIXEDPOINT_JSON", "FIXEDPOINT_NPZ", "FixedLayer", "FixedPointModel", "IntegerShrink", "from_quant_model",
           "integer_shrink", "load_fixedpoint"]

FIXEDPOINT_JSON = "fixedpoint.json"
FIXEDPOINT_NPZ = "fixedpoint.npz"
_EXACT = 2.0**53


class FixedPointError(LymphosortError, ValueError):
    """A model cannot be represented exactly as integers, or a bundle is malformed."""


@dataclass(frozen=True)
class IntegerShrink:
    """A 1-D resize with small rational weights: ``out[i] = (weights[i] @ x) / denom[i]``."""

    weights: np.ndarray  # int [n_out, n_in]
    denom: np.ndarray  # int [n_out]; each row of `weights` sums to its denominator


@lru_cache(maxsize=8)
def integer_shrink(n_in: int, n_out: int, max_denom: int = 64) -> IntegerShrink | None:
    """`to_model_input`'s resize along one axis as integers, or None when a weight is not a
    fraction with a denominator up to `max_denom` (e.g. any shrink by a non-integer factor)."""
    from lymphosort.data.transforms import resize_matrix

    a = resize_matrix(n_in, n_out).astype(np.float64)
    weights, denom = np.zeros(a.shape, dtype=np.int64), np.zeros(n_out, dtype=np.int64)
    for i, row in enumerate(a):
        for d in range(1, max_denom + 1):
            w = np.rint(row * d)
            if np.abs(row * d - w).max() < 1e-5 and w.sum() == d:  # float32 weights: ~1e-7 off
                weights[i], denom[i] = w, d
                break
        else:
            return None
    return IntegerShrink(weights, denom)


@lru_cache(maxsize=32)
def _input_levels(denom: int, mean: float, std: float, exp: int, bits: int) -> np.ndarray:
    """q for every stencil sum s in [0, 255 * denom]: the exact rational, rounded half to even."""
    m, sd, scale = Fraction(mean), Fraction(std), Fraction(2) ** (-exp)
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    q = [round((Fraction(s, 255 * denom) - m) / sd * scale) for s in range(255 * denom + 1)]  # round: half to even
    return np.clip(np.array(q, dtype=np.int64), lo, hi)


@dataclass
class FixedLayer:
    """One conv (+ReLU-quantiser, +max pool) or dense layer in integer form."""

    kind: str  # "conv" | "dense"
    weight: np.ndarray  # int: conv [Co, Ci, k, k]; dense [O, F] (F in C, H, W flatten order)
    bias: np.ndarray  # int [Co], in accumulator units 2**acc_exp
    in_exp: int  # exponent of the layer's integer input
    in_bits: int
    in_signed: bool
    w_exp: int
    w_bits: int
    padding: int = 0
    out_bits: int | None = None  # unsigned activation width after the ReLU (conv only)
    out_exp: int | None = None
    pool: int = 1  # max-pool window after the activation (1: none)
    fold: int = 1  # dense only: average-pool area folded in (each weight repeated `fold` times)

    @property
    def acc_exp(self) -> int:
        return self.in_exp + self.w_exp

    def acc_bound(self) -> int:
        """Largest |accumulator| any input can produce (sizes the hardware accumulator)."""
        x_max = 2 ** (self.in_bits - 1) if self.in_signed else 2**self.in_bits - 1
        w = np.abs(self.weight.astype(np.int64)).reshape(self.weight.shape[0], -1).sum(1)
        return int((w * x_max + np.abs(self.bias.astype(np.int64))).max())

    def meta(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("weight", "bias")}
        d["weight_shape"] = list(self.weight.shape)
        d["acc_exp"] = self.acc_exp
        d["acc_bound"] = self.acc_bound()
        return d


@dataclass
class FixedPointModel:
    """The integer network plus the preprocessing it expects (from the model card)."""

    input_size: int
    mean: float
    std: float
    input_bits: int
    input_exp: int
    layers: list[FixedLayer]
    classes: list[str] = field(default_factory=list)
    name: str = ""
    #: centred field of view (native pixels) cut from the crop first; None = whole crop.
    fov: int | None = None

    # -- evaluation -------------------------------------------------------------------------
    def quantize_input(self, x: Any) -> Any:
        """Float normalised input [N,1,S,S] -> signed integers (float64 tensor)."""
        import torch

        x = torch.as_tensor(x).to(torch.float64) * 2.0 ** (-self.input_exp)
        lo, hi = -(2 ** (self.input_bits - 1)), 2 ** (self.input_bits - 1) - 1
        return torch.round(x).clamp_(lo, hi)  # torch.round: half to even, as AP_RND_CONV

    def forward_int(self, q: Any) -> Any:
        """Integer input (float64 tensor) -> logits (float64, exact)."""
        import torch
        import torch.nn.functional as F

        for layer in self.layers:
            w = torch.from_numpy(layer.weight.astype(np.float64))
            b = torch.from_numpy(layer.bias.astype(np.float64))
            if layer.kind == "conv":
                acc = F.conv2d(q, w, b, padding=layer.padding)
                shift = 2.0 ** (layer.acc_exp - int(layer.out_exp))
                q = torch.round(acc.clamp_(min=0) * shift).clamp_(0, 2 ** int(layer.out_bits) - 1)
                if layer.pool > 1:
                    q = F.max_pool2d(q, layer.pool)
            else:
                q = torch.flatten(q, 1) @ w.T + b
                return q * 2.0**layer.acc_exp
        raise FixedPointError("the network has no dense output layer")

    @property
    def shrink(self) -> IntegerShrink | None:
        """The integer form of the model's resize when it shrinks its view exactly 2x (the
        default student's 64 -> 32); None otherwise (no resize, or float weights are used)."""
        side = self.fov if self.fov is not None else 64
        return integer_shrink(side, self.input_size) if side == 2 * self.input_size else None

    def input_levels(self, denom: int) -> np.ndarray:
        """int [255 * denom + 1]: the input integer for each stencil sum of weight `denom`."""
        return _input_levels(int(denom), float(self.mean), float(self.std), int(self.input_exp), int(self.input_bits))

    def input_ints(self, images_uint8: Any) -> Any:
        """uint8 [N,64,64] -> the integer model input [N,1,S,S] (float64 tensor): the one
        definition of the preprocessing that every backend implements."""
        import torch

        from lymphosort.data.transforms import center_window

        sh = self.shrink
        if sh is None:
            return self.quantize_input(self.float_input(images_uint8))
        u = np.asarray(images_uint8, dtype=np.uint8)
        u = torch.from_numpy(np.ascontiguousarray(center_window(u, self.fov) if self.fov is not None else u))
        w = torch.from_numpy(sh.weights.astype(np.float64))
        s = (w @ u.to(torch.float64) @ w.T).to(torch.int64)  # integers below 2**53: exact
        den = torch.from_numpy(np.outer(sh.denom, sh.denom))
        q = torch.empty(s.shape, dtype=torch.float64)
        for d in torch.unique(den).tolist():
            sel = (den == d).expand_as(s)
            q[sel] = torch.from_numpy(self.input_levels(d).astype(np.float64))[s[sel]]
        return q.unsqueeze(1)

    def float_input(self, images_uint8: Any) -> Any:
        """uint8 [N,64,64] -> torch's float32 model input (`to_model_input`)."""
        import torch

        from lymphosort.data.transforms import to_model_input

        return to_model_input(
            torch.as_tensor(np.asarray(images_uint8)), self.input_size, self.mean, self.std, fov=self.fov
        )

    def preprocess(self, images_uint8: Any) -> Any:
        """uint8 [N,64,64] -> the float32 model input (the spec's window, resize and normalisation);
        with an integer shrink, the exact input integers times ``2**input_exp`` (see `input_ints`)."""
        import torch

        if self.shrink is None:
            return self.float_input(images_uint8)
        return (self.input_ints(images_uint8) * 2.0**self.input_exp).to(torch.float32)

    def predict_logits(self, images_uint8: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Bit-exact logits float64 [N, C] of the FPGA design for uint8 crops [N, 64, 64]."""
        import torch

        out = []
        with torch.inference_mode():
            for s in range(0, len(images_uint8), batch_size):
                out.append(self.forward_int(self.input_ints(images_uint8[s : s + batch_size])).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes) or 2))

    def predict_from_input(self, x_float: Any) -> np.ndarray:
        """Logits for already-normalised float input [N,1,S,S] (as fed to ONNX/hls4ml)."""
        import torch

        with torch.inference_mode():
            return self.forward_int(self.quantize_input(x_float)).numpy()

    def predict_proba(self, images_uint8: Any) -> np.ndarray:
        """Softmax of the exact logits (host side; the hardware itself outputs logits)."""
        z = self.predict_logits(images_uint8)
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    # -- facts for estimates and the README ---------------------------------------------------
    @property
    def params(self) -> int:
        """Trained parameters (a folded average pool repeats weights, it adds none)."""
        return int(sum(lay.weight.size // lay.fold + lay.bias.size for lay in self.layers))

    def check_exact(self) -> None:
        for i, layer in enumerate(self.layers):
            if layer.acc_bound() >= _EXACT:
                raise FixedPointError(f"layer {i} accumulator bound {layer.acc_bound()} exceeds 2**53")

    # -- persistence (JSON + npz of integers, no pickle) ----------------------------------------
    def save(self, directory: str | os.PathLike[str]) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": 1,
            "name": self.name,
            "input_size": self.input_size,
            "mean": self.mean,
            "std": self.std,
            "fov": self.fov,
            "input_bits": self.input_bits,
            "input_exp": self.input_exp,
            "classes": list(self.classes),
            "layers": [lay.meta() for lay in self.layers],
        }
        arrays: dict[str, np.ndarray] = {}
        for i, lay in enumerate(self.layers):
            arrays[f"w{i}"] = lay.weight.astype(np.int32)
            arrays[f"b{i}"] = lay.bias.astype(np.int64)
        from lymphosort.atomic import atomic_write, write_json_atomic

        # The arrays first, the JSON that names them last: a killed save is never loadable.
        atomic_write(d / FIXEDPOINT_NPZ, lambda tmp: np.savez(tmp, **arrays))
        write_json_atomic(d / FIXEDPOINT_JSON, meta)
        return d


_LAYER_FIELDS = ("kind", "in_exp", "in_bits", "in_signed", "w_exp", "w_bits", "padding", "out_bits", "out_exp", "pool")


def load_fixedpoint(bundle_dir: str | os.PathLike[str]) -> FixedPointModel:
    """Read `fixedpoint.json` + `fixedpoint.npz` from an export bundle (or any folder)."""
    d = Path(bundle_dir)
    try:
        meta = json.loads((d / FIXEDPOINT_JSON).read_text(encoding="utf-8"))
        arrays = np.load(d / FIXEDPOINT_NPZ, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FixedPointError(f"cannot read the fixed-point model in {d}: {exc}") from None
    layers = [
        FixedLayer(weight=arrays[f"w{i}"].astype(np.int64), bias=arrays[f"b{i}"].astype(np.int64),
                   **{k: lm[k] for k in _LAYER_FIELDS}, fold=int(lm.get("fold", 1)))
        for i, lm in enumerate(meta["layers"])
    ]
    fp = FixedPointModel(
        input_size=int(meta["input_size"]), mean=float(meta["mean"]), std=float(meta["std"]),
        input_bits=int(meta["input_bits"]), input_exp=int(meta["input_exp"]), layers=layers,
        classes=list(meta.get("classes", [])), name=str(meta.get("name", "")),
        fov=None if meta.get("fov") is None else int(meta["fov"]),
    )
    fp.check_exact()
    return fp


def _pow2_exp(scale: Any, what: str) -> int:
    s = float(scale.detach().reshape(-1)[0]) if hasattr(scale, "detach") else float(scale)
    e = math.log2(s)
    if not math.isfinite(e) or abs(e - round(e)) > 1e-9:
        raise FixedPointError(f"{what} has scale {s}, not a power of two (use fixed-point quantisers)")
    return int(round(e))


def from_quant_model(model: Any, classes: Sequence[str] = ()) -> FixedPointModel:
    """Read a Brevitas `QuantConvStudent` (eval mode) into integers and exponents."""
    import torch

    from lymphosort.models.quant import QuantConvStudent

    if not isinstance(model, QuantConvStudent):
        raise FixedPointError(f"expected a QuantConvStudent (a '-q<bits>' model), got {type(model).__name__}")
    model = model.eval()
    spec = model.spec
    seen: dict[str, Any] = {}
    hooks = [
        mod.register_forward_hook(lambda _m, _i, out, key=name: seen.__setitem__(key, out))
        for name, mod in [("quant_in", model.quant_in), *model.features.named_children()]
        if name == "quant_in" or name.startswith("relu")
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, spec.input_size, spec.input_size))
    finally:
        for h in hooks:
            h.remove()
    qin = seen["quant_in"]
    in_exp, in_bits, in_signed = _pow2_exp(qin.scale, "input quantiser"), int(qin.bit_width), bool(qin.signed)
    input_exp, input_bits = in_exp, in_bits
    layers: list[FixedLayer] = []
    mods = dict(model.features.named_children())
    i = 1
    with torch.no_grad():
        while f"conv{i}" in mods:
            conv = mods[f"conv{i}"]
            wq = conv.quant_weight()
            w_exp = _pow2_exp(wq.scale, f"conv{i} weights")
            bias = torch.round(conv.bias.double() * 2.0 ** (-(in_exp + w_exp)))
            act = seen[f"relu{i}"]
            pool = mods[f"pool{i}"].kernel_size
            layers.append(FixedLayer(
                kind="conv", weight=wq.int().numpy().astype(np.int64), bias=bias.numpy().astype(np.int64),
                in_exp=in_exp, in_bits=in_bits, in_signed=in_signed, w_exp=w_exp, w_bits=int(wq.bit_width),
                padding=int(conv.padding[0]), out_bits=int(act.bit_width),
                out_exp=_pow2_exp(act.scale, f"relu{i} activations"), pool=int(pool if isinstance(pool, int) else pool[0]),
            ))
            in_exp, in_bits, in_signed = layers[-1].out_exp, int(act.bit_width), False
            i += 1
        head = model.head
        wq = head.quant_weight()
        w_exp = _pow2_exp(wq.scale, "head weights")
        w = wq.int().numpy().astype(np.int64)
        area = int(getattr(model, "pool_area", 1))
        shift = area.bit_length() - 1
        bias = torch.round(head.bias.double() * 2.0 ** (-(in_exp - shift + w_exp)))
        if area > 1:  # fold the power-of-two mean into the dense layer
            w = np.repeat(w, area, axis=1)
        layers.append(FixedLayer(
            kind="dense", weight=w, bias=bias.numpy().astype(np.int64), in_exp=in_exp, in_bits=in_bits,
            in_signed=in_signed, w_exp=w_exp - shift, w_bits=int(wq.bit_width), fold=area,
        ))
    fp = FixedPointModel(
        input_size=spec.input_size, mean=spec.mean, std=spec.std, input_bits=input_bits, input_exp=input_exp,
        layers=layers, classes=list(classes), name=spec.name, fov=spec.fov,
    )
    fp.check_exact()
    return fp
