"""The integer IR against Brevitas (fast) and against the compiled hls4ml emulation (`hls`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("brevitas")

from lymphosort.data.transforms import to_model_input  # noqa: E402
from lymphosort.export.fixedpoint import from_quant_model, load_fixedpoint  # noqa: E402
from lymphosort.models import create_model  # noqa: E402

REAL_CROPS = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "brightfield"


def _random_crops(n: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8))


def _real_crops(n: int) -> torch.Tensor:
    from PIL import Image

    paths = sorted(REAL_CROPS.glob("*.png"))[:n] if REAL_CROPS.is_dir() else []
    if not paths:
        pytest.skip(f"needs ../shared: no reference bright-field crops in {REAL_CROPS}")
    imgs = [np.asarray(Image.open(p).convert("L").resize((64, 64))) for p in paths]
    return torch.from_numpy(np.stack(imgs).astype(np.uint8))


def _quant_model(name: str, seed: int = 0, **kwargs: object) -> torch.nn.Module:
    """A QAT student with non-trivial weights and biases (random init, biases spread)."""
    torch.manual_seed(seed)
    m = create_model(name, **kwargs).eval()
    with torch.no_grad():
        for mod in m.modules():
            if getattr(mod, "bias", None) is not None and isinstance(mod.bias, torch.nn.Parameter):
                mod.bias.normal_(0, 0.2)
    return m


@pytest.mark.parametrize("name,kwargs", [
    ("tiny-32-q8", {}), ("tiny-32-q4", {}), ("paper-student2-q8", {}), ("tiny-64-q4", {}),
    # mixed widths: an 8-bit first conv and ReLU in front of 4-bit layers; learned weight scales
    ("tiny-32-whole-q4", {"bits": [8, 4, 4, 4], "act_bits": [8, 4, 4], "weight_scale": "mse"})])
def test_integer_ir_matches_brevitas_exactly(tmp_path: Path, name: str, kwargs: dict) -> None:
    m = _quant_model(name, **kwargs)
    fp = from_quant_model(m, classes=["B", "T"])
    if kwargs:
        assert [(l.w_bits, l.out_bits) for l in fp.layers] == [(8, 8), (4, 4), (4, 4), (4, None)]
    fp.save(tmp_path)
    fp = load_fixedpoint(tmp_path)  # the round trip through JSON + npz is part of the contract
    imgs = _random_crops(64)
    x = to_model_input(imgs, m.spec.input_size, m.spec.mean, m.spec.std)
    with torch.no_grad():
        ref = m(x).double().numpy()
    got = fp.predict_logits(imgs)
    assert np.array_equal(got, ref)
    proba = fp.predict_proba(imgs)
    assert np.allclose(proba.sum(1), 1) and np.array_equal(proba.argmax(1), ref.argmax(1))


def test_integer_ir_matches_brevitas_on_real_crops() -> None:
    m = _quant_model("tiny-32-q8")
    imgs = _real_crops(64)
    with torch.no_grad():
        ref = m(to_model_input(imgs, 32, m.spec.mean, m.spec.std)).double().numpy()
    assert np.array_equal(from_quant_model(m).predict_logits(imgs), ref)


def test_estimate_follows_the_streams_of_the_generated_design(tmp_path: Path) -> None:
    """The estimate's beats are read against the hls4ml project it describes: one pixel a beat
    at the input (no transpose stage), and the zero-padded map of the first "same" conv as the
    longest stream."""
    pytest.importorskip("hls4ml")
    from lymphosort.export.estimate import estimate_stream
    from lymphosort.export.hls import convert

    fp = from_quant_model(_quant_model("tiny-32-q8"))
    hls_model, _ = convert(fp, tmp_path)
    hls_model.write()  # the project's sources, without compiling them
    firmware = tmp_path / "hls_prj" / "firmware"
    defines = (firmware / "defines.h").read_text()
    # one 8-bit pixel a beat: the IR's input level, not a wide float stand-in
    assert fp.input_bits == 8
    assert f"nnet::array<ap_fixed<8,{8 + fp.input_exp}>, 1*1> input_t;" in defines
    top = next(firmware.glob("*.cpp")).read_text()
    assert "nnet::transpose" not in top and "zeropad2d" in top
    pad = fp.layers[0].padding
    est = estimate_stream(fp, clock_ns=5.0)
    assert est["input_stream_cycles"] == 32 * 32
    assert est["initiation_interval_cycles"] == (32 + 2 * pad) ** 2 > 32 * 32
    assert est["latency_cycles"] > est["initiation_interval_cycles"]
    assert est["params"] == sum(p.numel() for n, p in _quant_model("tiny-32-q8").named_parameters()
                                if n.endswith(("weight", "bias")))


def _need_hls() -> None:
    pytest.importorskip("hls4ml", reason="hls4ml is not installed (pip install -e .[fpga])")
    pytest.importorskip("qonnx", reason="qonnx is not installed (pip install -e .[fpga])")
    if shutil.which("g++") is None:
        pytest.skip("g++ is not on PATH: the hls4ml emulation cannot be compiled")


@pytest.mark.hls
def test_emulation_is_bit_exact_4bit(tmp_path: Path) -> None:
    """4-bit tiny-32 through QONNX -> hls4ml io_stream -> g++: identical logits to the IR."""
    _need_hls()
    from lymphosort.export.hls import check_agreement, convert

    m = _quant_model("tiny-32-q4", seed=1)
    fp = from_quant_model(m)
    x = to_model_input(_random_crops(150, seed=2), 32, m.spec.mean, m.spec.std).numpy()
    hm, cfg = convert(fp, tmp_path, tb_input=x[:5])
    hm.compile()
    r = check_agreement(hm, fp, x)
    assert r["bit_exact"] and r["agreement"] == 1.0 and r["max_abs_diff"] == 0.0
    assert (tmp_path / "hls_prj" / "build_prj.tcl").is_file() and (tmp_path / "hls_config.yaml").is_file()
    assert any((tmp_path / "hls_prj" / "tb_data").iterdir())
    if REAL_CROPS.is_dir() and any(REAL_CROPS.glob("*.png")):
        xr = to_model_input(_real_crops(50), 32, m.spec.mean, m.spec.std).numpy()
        assert check_agreement(hm, fp, xr)["bit_exact"]


@pytest.mark.hls
def test_cli_bundle_8bit(tmp_path: Path, tiny_root: Path) -> None:
    """`lymphosort export hls` writes the hand-off bundle and records a passing check."""
    _need_hls()
    import yaml

    from lymphosort.cli import main
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint

    m = _quant_model("tiny-32-q8")
    run = save_checkpoint(tmp_path / "run", m, ModelCard.from_model(m, task="t4-vs-b", classes=["B", "T4"]))
    out = tmp_path / "bundle"
    argv = ["export", "hls", str(run), "--out", str(out), "--data-root", str(tiny_root), "--n-check", "50",
            "--n-tb", "5", "--clock-ns", "5"]
    assert main(argv) == 0
    rec = json.loads((out / "export.json").read_text())
    assert rec["agreement"] == 1.0 and rec["bit_exact"] and rec["n_checked"] > 0
    assert rec["bits"] == 8 and rec["clock_ns"] == 5.0 and 0 < rec["latency_us_estimate"] <= 7.0
    assert rec["ir_vs_quant_model"]["max_abs_diff"] == 0.0
    # the test vectors are what the stream carries: 8-bit levels on the input grid
    levels = np.load(out / "tb_vectors" / "input.npy") * 2.0 ** -rec["input_exp"]
    assert rec["input_type"].startswith("fixed<8,") and np.array_equal(levels, np.round(levels))
    assert levels.min() >= -128 and levels.max() <= 127 and len(np.unique(levels)) > 16
    for f in ("README.md", "model.json", "fixedpoint.json", "fixedpoint.npz", "hls_config.yaml",
              "hls_prj/build_prj.tcl", "tb_vectors/input.npy"):
        assert (out / f).exists(), f
    assert "estimate" in (out / "README.md").read_text()
    cfg = yaml.safe_load((out / "hls_config.yaml").read_text())
    assert cfg["LayerName"]["global_in"]["Precision"]["result"] == rec["input_type"]
    # The bundle's fixed-point model is what the real-time backend loads.
    fp = load_fixedpoint(out)
    assert fp.predict_logits(_random_crops(3)).shape == (3, 2)


def test_hls_refuses_a_float_run(tmp_path: Path) -> None:
    from lymphosort.errors import ConfigError
    from lymphosort.export.bundle import export_hls_run
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint

    m = create_model("tiny-32")
    run = save_checkpoint(tmp_path / "run", m, ModelCard.from_model(m, task="t4-vs-b", classes=["B", "T4"]))
    with pytest.raises(ConfigError, match="--qat"):
        export_hls_run(run, tmp_path / "out")
