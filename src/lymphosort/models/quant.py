"""Brevitas (QAT) versions of the conv students, built for a bit-exact FPGA port.

Every quantiser is fixed point: per-tensor power-of-two scale, zero point 0, round half to
even, saturating. That is what an ``ap_fixed``/``ap_ufixed`` type is, so hls4ml maps each
quantiser to a type rather than a multiplier, and the emulation can match bit for bit (the
default float-scale quantisers either break the conversion or drift).

Layout of `QuantConvStudent` (same module paths as `ConvStudent`, so a float checkpoint
fine-tunes straight into it):

- ``quant_in``: signed ``input_bits`` quantiser on the normalised input;
- ``features.conv{i}``: weights signed ``bits[i]``, bias int32 in accumulator units
  (scale = input scale * weight scale, so the bias adds exactly);
- ``features.relu{i}``: unsigned ``bits[i]`` activation quantiser (the ReLU is its clip);
- ``features.pool{i}``: max pool 2 (exact on quantised values);
- ``features.avgpool`` (when the float student has one): the window area must be a power of
  two, so the mean of a fixed-point map is exact with log2(area) more fractional bits (no
  re-quantiser needed) and folds into the head for export (``export.fixedpoint``);
- ``head``: weights signed ``bits[-1]``, int32 bias; returns float logits.

Registered as ``<student>-q8`` and ``<student>-q4`` (every student, including
``paper-student2``); ``bits`` (one int or one per quantised layer: weights, and the ReLU
after a conv), ``act_bits`` (one per conv: its ReLU, when it differs from the weights) and
``input_bits`` override the widths; ``weight_scale="mse"`` picks each weight scale by least
squared error instead of max|w|. `quantize_from_float` copies a trained float student in.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn

from lymphosort.errors import ConfigError
from lymphosort.models.registry import ClassifierMixin, canonical_name, register_alias, register_model
from lymphosort.models.students import RENAMED, TINY_VARIANTS, init_weights_

__all__ = ["QUANT_BITS", "QuantConvStudent", "float_name", "qat_twin", "quant_name", "quantize_from_float"]

#: registered widths: ``<student>-q<bits>``.
QUANT_BITS: tuple[int, ...] = (8, 4)


def _per_layer(bits: int | Sequence[int], n: int, what: str = "conv/head layer") -> list[int]:
    widths = [int(bits)] * n if isinstance(bits, (int, float)) else [int(b) for b in bits]
    if len(widths) != n:
        raise ConfigError(f"need one bit width or {n} (one per {what}), got {len(widths)}")
    if any(not 2 <= b <= 16 for b in widths):
        raise ConfigError(f"bit widths must lie in [2, 16], got {widths}")
    return widths


class QuantConvStudent(ClassifierMixin, nn.Module):
    """The fixed-point QAT twin of `students.ConvStudent` (see the module docstring)."""

    def __init__(
        self,
        num_classes: int,
        input_size: int,
        channels: Sequence[int],
        kernel: int = 3,
        padding: str = "same",
        pool_out: int | None = None,
        bits: int | Sequence[int] = 8,
        input_bits: int = 8,
        init: str = "torch",
        act_bits: int | Sequence[int] | None = None,
        weight_scale: str = "max",
    ) -> None:
        super().__init__()
        import brevitas.nn as qnn
        from brevitas.quant import Int8ActPerTensorFixedPoint, Int8WeightPerTensorFixedPoint, Int32Bias
        from brevitas.inject.enum import ScalingImplType
        from brevitas.quant import Uint8ActPerTensorFixedPoint

        # Learned power-of-two scales initialised from a fixed range (not from runtime
        # statistics, whose parameter only exists after ~30 training steps and would make a
        # short run's checkpoint unloadable). Normalised input spans [-2, 2]; ReLU outputs
        # start at [0, 4]; both are learned by QAT.
        param = {"scaling_impl_type": ScalingImplType.PARAMETER}

        if padding not in ("same", "valid"):
            raise ConfigError(f"padding must be 'same' or 'valid', not {padding!r}")
        # Weight scales. "max": from the tensor at every call, the power of two that holds max|w|
        # (nothing clips; no parameter). "mse": a learned power of two like the activations',
        # started at the one of least squared error, which clips the few largest weights and
        # halves the step of the rest: at 4 bits most of a bit, as the max rule rounds up.
        # (Brevitas' own MSE quantiser makes its parameter only once training starts, which
        # would make checkpoints unloadable.)
        if weight_scale not in ("max", "mse"):
            raise ConfigError(f"weight_scale must be 'max' or 'mse', not {weight_scale!r}")
        wkw: dict[str, Any] = {}
        if weight_scale == "mse":
            wkw = {"weight_scaling_impl_type": ScalingImplType.PARAMETER, "weight_scaling_init": 1.0}
        self.weight_scale = weight_scale
        widths = _per_layer(bits, len(channels) + 1)
        acts = widths[:-1] if act_bits is None else _per_layer(act_bits, len(channels), "conv's ReLU")
        self.bits = widths
        self.act_bits = acts
        self.input_bits = int(input_bits)
        self.quant_in = qnn.QuantIdentity(
            act_quant=Int8ActPerTensorFixedPoint, bit_width=self.input_bits, return_quant_tensor=True,
            min_val=-2.0, max_val=2.0, **param,
        )
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in, size = 1, int(input_size)
        for i, (c_out, b, a) in enumerate(zip(channels, widths, acts), start=1):
            pad = kernel // 2 if padding == "same" else 0
            layers[f"conv{i}"] = qnn.QuantConv2d(
                c_in, int(c_out), kernel, padding=pad, weight_quant=Int8WeightPerTensorFixedPoint,
                weight_bit_width=b, bias_quant=Int32Bias, return_quant_tensor=False, **wkw,
            )
            layers[f"relu{i}"] = qnn.QuantReLU(
                act_quant=Uint8ActPerTensorFixedPoint, bit_width=a, return_quant_tensor=True, max_val=4.0, **param
            )
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            size = (size + 2 * pad - kernel + 1) // 2
            c_in = int(c_out)
        if size < 1:
            raise ConfigError(f"input size {input_size} is too small for {len(channels)} blocks")
        self.pool_area = 1
        if pool_out is not None and pool_out < size:
            if size % pool_out:
                raise ConfigError(f"final map {size}x{size} is not divisible into {pool_out}x{pool_out}")
            k = size // pool_out
            if (k * k) & (k * k - 1):
                raise ConfigError(
                    f"average pool window {k}x{k} is not a power of two in area: the mean would need a "
                    "divider in hardware and could not match bit for bit; choose an input size with a "
                    f"final map of {pool_out * 2}x{pool_out * 2} or {pool_out * 4}x{pool_out * 4}"
                )
            layers["avgpool"] = nn.AvgPool2d(k)
            size = pool_out
            self.pool_area = k * k
        self.features = nn.Sequential(layers)
        self.head = qnn.QuantLinear(
            c_in * size * size, num_classes, bias=True, weight_quant=Int8WeightPerTensorFixedPoint,
            weight_bit_width=widths[-1], bias_quant=Int32Bias, return_quant_tensor=False, **wkw,
        )
        self.FEATURE_MODULES = tuple(f"features.relu{i}" for i in range(1, len(channels) + 1))
        init_weights_(self, init)  # QuantConv2d is a Conv2d: same start as the float twin
        self.init_weight_scales()

    @torch.no_grad()
    def init_weight_scales(self) -> dict[str, int]:
        """With ``weight_scale="mse"``: set each layer's learned weight scale to the power of two
        of least squared error for its current weights (call after loading weights). Returns
        {module path: log2 of the range}; {} for ``"max"`` (nothing to set)."""
        if self.weight_scale != "mse":
            return {}
        out = {}
        for path, mod in self.named_modules():
            if not hasattr(mod, "weight_quant") or not hasattr(mod, "quant_weight"):
                continue
            w, b = mod.weight.detach().double(), int(mod.quant_weight().bit_width)
            top = math.ceil(math.log2(max(float(w.abs().max()), 2.0**-16)))  # the max rule's range

            def err(e: int) -> float:
                step = 2.0 ** (e - (b - 1))
                return float(((torch.round(w / step).clamp(-(2 ** (b - 1)), 2 ** (b - 1) - 1) * step - w) ** 2).sum())

            best = min(range(top - 4, top + 1), key=lambda e: (err(e), -e))  # ties: the wider range
            # the parameter is log2 of the range, rounded up when used: start mid-bin, as an
            # integer would double the range at the first positive step of the optimiser
            mod.weight_quant.tensor_quant.scaling_impl.value.fill_(best - 0.5)
            out[path] = best
        return out

    def forward_features(self, x: torch.Tensor) -> Any:
        from brevitas.quant_tensor import IntQuantTensor

        x = self.quant_in(x)
        for name, layer in self.features.named_children():
            if name == "avgpool" and hasattr(x, "scale"):
                # Mean over a power-of-two window: exact, a finer scale and wider integer.
                shift = self.pool_area.bit_length() - 1
                x = IntQuantTensor(layer(x.value), x.scale / self.pool_area, x.zero_point,
                                   x.bit_width + shift, x.signed, x.training)
            else:
                x = layer(x)
        return x.flatten(1) if hasattr(x, "value") else torch.flatten(x, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.forward_head(self.forward_features(x))
        return out.value if hasattr(out, "value") else out

    def reset_classifier(self, num_classes: int) -> None:
        raise ConfigError("reset the float student's classifier, then quantize_from_float it")


def quant_name(name: str, bits: int) -> str:
    """The registered QAT twin of float student `name` at `bits`: ``tiny-32`` -> ``tiny-32-q8``."""
    return f"{name}-q{int(bits)}"


def float_name(name: str) -> str | None:
    """The float student a ``...-q<bits>`` name was derived from (None for other names)."""
    head, sep, tail = name.rpartition("-q")
    return head if sep and tail.isdigit() else None


def qat_twin(student: str, bits: int) -> tuple[str, dict[str, Any]]:
    """The registered QAT twin of `student` (float or already quantised) at `bits`, and the
    model kwargs it needs: widths outside QUANT_BITS are the first registered twin re-sized."""
    if not 2 <= int(bits) <= 8:
        raise ConfigError(f"QAT takes 2..8 bits, got {bits}")
    base = canonical_name(float_name(canonical_name(student)) or student)
    if int(bits) in QUANT_BITS:
        return quant_name(base, int(bits)), {}
    return quant_name(base, QUANT_BITS[0]), {"bits": int(bits)}


def _student_args(name: str) -> dict[str, Any]:

    if name == "paper-student2":
        return {"input_size": 48, "channels": (16, 16), "kernel": 3, "padding": "valid", "pool_out": None}
    return {"padding": "same", **TINY_VARIANTS[name]}


def _register(name: str, bits: int) -> None:
    base = _student_args(name)

    def factory(
        num_classes: int = 2,
        input_size: int = base["input_size"],
        bits: int | Sequence[int] = bits,
        input_bits: int = 8,
        act_bits: int | Sequence[int] | None = None,
        weight_scale: str = "max",
        channels: Sequence[int] = base["channels"],
    ) -> QuantConvStudent:
        kw = {k: v for k, v in base.items() if k not in ("input_size", "fov", "channels")}
        return QuantConvStudent(num_classes, input_size, channels=channels, bits=bits, input_bits=input_bits,
                                act_bits=act_bits, weight_scale=weight_scale, **kw)

    factory.__doc__ = f"{name} with {bits}-bit power-of-two fixed-point weights and activations (Brevitas QAT)."
    register_model(quant_name(name, bits), input_size=base["input_size"], kind="student", fov=base.get("fov"))(factory)


def quantize_from_float(
    model: nn.Module,
    bits: int | Sequence[int] = 8,
    input_bits: int = 8,
    act_bits: int | Sequence[int] | None = None,
    weight_scale: str = "max",
    name: str | None = None,
) -> nn.Module:
    """A QAT twin of float student `model` with its trained weights copied in (eval mode).

    `name`: the registered twin to build (e.g. the ``-q4`` one a run asked for with per-layer
    `bits`); by default the twin named by `bits` when it is one registered width, else ``-q8``.

    The quantiser ranges start from their defaults and are learned during fine-tuning; call
    `init_activation_ranges` with a few batches first for a sensible start.
    """
    from lymphosort.models.registry import create_model

    spec = model.spec
    single = bits if isinstance(bits, int) else None
    explicit = name is not None  # the widths asked for, whatever the name's default
    if name is None:
        name = quant_name(spec.name, single if single in QUANT_BITS else QUANT_BITS[0])
    elif float_name(canonical_name(name)) != spec.name:
        raise ConfigError(f"{name!r} is not a QAT twin of {spec.name!r}")
    # the float student's own shape (a narrower `channels` than its registration) goes with it
    kwargs: dict[str, Any] = {k: v for k, v in spec.create_kwargs.items() if k in ("input_size", "fov", "channels")}
    if single not in QUANT_BITS or explicit:
        kwargs["bits"] = list(bits) if not isinstance(bits, int) else int(bits)
    if input_bits != 8:
        kwargs["input_bits"] = int(input_bits)
    if act_bits is not None:
        kwargs["act_bits"] = list(act_bits) if not isinstance(act_bits, int) else int(act_bits)
    if weight_scale != "max":
        kwargs["weight_scale"] = weight_scale
    q = create_model(name, num_classes=spec.num_classes, **kwargs)
    missing, unexpected = q.load_state_dict(model.state_dict(), strict=False)
    if unexpected:
        raise ConfigError(f"float weights do not fit {name}: unexpected {unexpected}")
    if any(not ("quant" in k or "scaling" in k) for k in missing):
        raise ConfigError(f"float weights do not fit {name}: missing {missing}")
    q.init_weight_scales()
    return q.eval()


@torch.no_grad()
def init_activation_ranges(
    q: nn.Module, float_model: nn.Module, batches: Any, quantile: float = 0.999, mid_bin: bool = False
) -> dict[str, float]:
    """Set each quantised ReLU's learned range from its float twin's activations on data.

    The ranges are learned power-of-two thresholds (``scaling_impl.value`` holds log2 of the
    range, rounded up when used). They start at 4.0, which clips a trained float student's
    deeper activations; starting at the `quantile` of the float activations lets QAT fine-tune
    instead of first re-learning every range. `mid_bin`: start the parameter in the middle of
    its power of two's bin (same range, but QAT's first steps cannot flip it); the
    ``weight_scale="mse"`` twins use it. Returns {module path: range set}.
    """
    from lymphosort.models.hooks import FeatureCapture

    paths = [p for p, _ in q.features.named_children() if p.startswith("relu")]
    paths = [f"features.{p}" for p in paths]
    samples: dict[str, list[torch.Tensor]] = {p: [] for p in paths}
    float_model.eval()
    for x in batches:
        with FeatureCapture(float_model, paths) as cap:
            float_model(x)
        for p in paths:
            v = cap.features[p].flatten()
            samples[p].append(v[torch.randperm(len(v))[:100_000]])  # quantile() has a size limit
    ranges = {}
    modules = dict(q.named_modules())
    for p in paths:
        hi = float(torch.quantile(torch.cat(samples[p])[:1_000_000], quantile))
        impl = modules[p].act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl
        log_hi = math.log2(max(hi, 2.0**-8))
        impl.value.fill_(math.ceil(log_hi) - 0.5 if mid_bin else log_hi)
        ranges[p] = hi
    return ranges


for _student in ("paper-student2", *TINY_VARIANTS):
    for _bits in QUANT_BITS:
        _register(_student, _bits)
for _former, _current in RENAMED.items():
    for _bits in QUANT_BITS:
        register_alias(quant_name(_former, _bits), quant_name(_current, _bits))
