"""Probe: what limits the tiny student? Distil variants of tiny-32-centre that change one thing.

Not registry entries (they are questions, not products): each variant is registered in this
process only, then distilled with the same `lymphosort distill` command as the benchmark rows.

  wide   4x the parameters: channels (16, 32, 48) (~20k params, over the FPGA budget)
  bn     batch norm after every conv (foldable into the conv for the FPGA)
  deep   one more 3x3 conv (8 -> 8) at full resolution before the first pool
  fov48  the centred 48x48 window (4 blocks would not fit the budget: 3 blocks, 3x3 head)
  k5     a 5x5 first conv (a wider view of the texture at full resolution; +128 params)
  std    each crop standardised (own mean and sd) before the first conv: session invariance
  xwide  16x the parameters, channels (32, 64, 128): is the 32x32 window or the size the limit?
  sep    depthwise-separable convs after the first, channels (16, 40, 80), 2x2 head: width per parameter
  wide64 the whole 64x64 crop, four blocks (16, 32, 48, 64): does the wider view carry more?

    python benchmarks/student_probe.py --teacher runs/exp/teacher --data-root data/lymphosim \\
        --out runs/exp/probe --epochs 5 --variant wide bn deep fov48

Writes OUT/probe.json (test accuracy, params per variant; runs are reused when finished).
"""

from __future__ import annotations

import argparse
import json
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from lymphosort.cli import main as cli
from lymphosort.models.registry import list_models, register_model
from lymphosort.models.students import TINY_VARIANTS, ConvStudent, init_weights_

from kd_table import _as_run  # the same 'settings a finished run really used' as the kd table

BASE = {k: v for k, v in TINY_VARIANTS["tiny-32-centre"].items() if k not in ("input_size", "fov")}


def _with_bn(m: ConvStudent) -> ConvStudent:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for name, mod in m.features.named_children():
        layers[name] = mod
        if isinstance(mod, nn.Conv2d):
            layers[f"bn{name[4:]}"] = nn.BatchNorm2d(mod.out_channels)
    m.features = nn.Sequential(layers)
    return m


def _deeper(m: ConvStudent) -> ConvStudent:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    c1 = m.features.conv1.out_channels
    for name, mod in m.features.named_children():
        if name == "pool1":
            extra = nn.Conv2d(c1, c1, 3, padding=1)
            init_weights_(extra, "he")
            layers["conv1b"], layers["relu1b"] = extra, nn.ReLU()
        layers[name] = mod
    m.features = nn.Sequential(layers)
    return m


def _k5_first(m: ConvStudent) -> ConvStudent:
    old = m.features.conv1
    new = nn.Conv2d(old.in_channels, old.out_channels, 5, padding=2)
    init_weights_(new, "he")
    m.features.conv1 = new
    return m


class _Standardise(nn.Module):
    """Each crop to zero mean, unit sd: removes the session's background level and contrast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu = x.mean(dim=(2, 3), keepdim=True)
        return (x - mu) / x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)


def _standardised(m: ConvStudent) -> ConvStudent:
    m.features = nn.Sequential(OrderedDict([("standardise", _Standardise()), *m.features.named_children()]))
    return m


def _separable(m: ConvStudent) -> ConvStudent:
    """Every conv after the first as depthwise 3x3 + pointwise 1x1 (hls4ml: DepthwiseConv2D + Conv)."""
    for name, old in list(m.features.named_children()):
        if isinstance(old, nn.Conv2d) and name != "conv1":
            dw = nn.Conv2d(old.in_channels, old.in_channels, old.kernel_size, padding=old.padding, groups=old.in_channels)
            pw = nn.Conv2d(old.in_channels, old.out_channels, 1)
            init_weights_(dw, "he")
            init_weights_(pw, "he")
            setattr(m.features, name, nn.Sequential(OrderedDict([("dw", dw), ("pw", pw)])))
    return m


#: variant -> (input size / field of view, ConvStudent overrides, post-build edit)
VARIANTS: dict[str, tuple[int, dict, Callable[[ConvStudent], ConvStudent] | None]] = {
    "wide": (32, {"channels": (16, 32, 48)}, None),
    "bn": (32, {}, _with_bn),
    "deep": (32, {}, _deeper),
    "fov48": (48, {"pool_out": 3}, None),
    "k5": (32, {}, _k5_first),
    "std": (32, {}, _standardised),
    "xwide": (32, {"channels": (32, 64, 128)}, None),
    "sep": (32, {"channels": (16, 40, 80), "pool_out": 2}, _separable),
    "wide64": (64, {"channels": (16, 32, 48, 64)}, None),
}


def register(variant: str) -> str:
    size, over, edit = VARIANTS[variant]
    name = f"probe-{variant}"
    if name in list_models():
        return name

    def factory(num_classes: int = 2, input_size: int = size) -> ConvStudent:
        m = ConvStudent(num_classes, input_size, **{**BASE, **over})
        return edit(m) if edit else m

    register_model(name, input_size=size, kind="student", fov=size)(factory)
    return name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", nargs="+", choices=sorted(VARIANTS), default=sorted(VARIANTS))
    a = ap.parse_args()
    saved = a.out / "probe.json"
    res = json.loads(saved.read_text()) if saved.is_file() else {}  # earlier variants are kept
    for v in a.variant:
        name, out = register(v), a.out / v
        done = (out / "metrics.json").is_file()
        # A finished run is reused: its command names the epochs and seed it really ran with.
        ran = _as_run(out, {"epochs": a.epochs, "seed": a.seed})
        epochs, seed = ran["epochs"], ran["seed"]
        cmd = ["distill", "--teacher", str(a.teacher), "--student", name, "--method", "kd", "--out", str(out),
               "--data-root", str(a.data_root), "--epochs", str(epochs), "--seed", str(seed), "--quiet"]
        if not done and cli(cmd) != 0:
            raise SystemExit(f"variant {v} failed")
        m = json.loads((out / "metrics.json").read_text())
        res[v] = {"accuracy": m["accuracy"], "params": m.get("params"), "epochs": epochs,
                  "command": "lymphosort " + " ".join(cmd)}
        print(v, res[v]["accuracy"], res[v]["params"])
    a.out.mkdir(parents=True, exist_ok=True)
    from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
    write_text_atomic(saved, json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
