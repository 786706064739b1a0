"""The open RTL backend: Verilator simulation of the generated Verilog against the integer
evaluator (`FixedPointModel.predict_logits`), bit for bit, on toy and QAT students."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lymphosort.export.fixedpoint import FixedLayer, FixedPointError, FixedPointModel

REAL_CROPS = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "brightfield"


def _need_rtl() -> None:
    pytest.importorskip("da4ml", reason="da4ml is not installed (pip install -e .[rtl])")
    from lymphosort.export.rtl.sim import SimError, find_verilator

    try:
        find_verilator()
    except SimError as exc:
        pytest.skip(str(exc))
    if shutil.which("g++") is None or shutil.which("make") is None:
        pytest.skip("g++/make are not on PATH: Verilator cannot build the simulator")


def _toy(size: int, pad: int, seed: int = 0) -> FixedPointModel:
    """Two conv blocks + dense with random integer weights: small enough to build in seconds."""
    rng = np.random.default_rng(seed)
    s1 = (size + 2 * pad - 2) // 2
    s2 = (s1 + 2 * pad - 2) // 2
    layers = [
        FixedLayer("conv", rng.integers(-60, 60, (3, 1, 3, 3)), rng.integers(-300, 300, 3), -5, 8, True, -7, 8,
                   padding=pad, out_bits=8, out_exp=-6, pool=2),
        FixedLayer("conv", rng.integers(-60, 60, (4, 3, 3, 3)), rng.integers(-2000, 2000, 4), -6, 8, False, -7, 8,
                   padding=pad, out_bits=8, out_exp=-5, pool=2),
        FixedLayer("dense", rng.integers(-100, 100, (2, 4 * s2 * s2)), rng.integers(-5000, 5000, 2), -5, 8, False,
                   -7, 8),
    ]
    return FixedPointModel(size, 0.5, 0.25, 8, -5, layers, ["B", "T4"], f"toy-{size}-p{pad}", fov=size)


def _crops(n: int, seed: int = 1) -> np.ndarray:
    crops = np.random.default_rng(seed).integers(0, 256, (n, 64, 64), dtype=np.uint8)
    crops[: n // 4] //= 8  # dark crops: most activations clip at zero
    crops[n // 4 : n // 2] = 255 - crops[n // 4 : n // 2] // 8  # bright ones: saturation
    if REAL_CROPS.is_dir():
        from PIL import Image

        real = [np.asarray(Image.open(p).convert("L").resize((64, 64))) for p in sorted(REAL_CROPS.glob("*.png"))[:8]]
        if real:
            crops = np.concatenate([crops, np.stack(real).astype(np.uint8)])
    return crops


def test_input_table_is_the_ir_quantiser() -> None:
    """The 256-entry input table maps every pixel value as the IR's preprocessing does."""
    import torch

    from lymphosort.export.rtl.plan import input_table, lower

    fp = _toy(8, 1)
    table = input_table(fp)
    crops = _crops(16)
    q = fp.quantize_input(fp.preprocess(torch.from_numpy(crops))).numpy()[:, 0]
    window = crops[:, 28:36, 28:36]
    assert np.array_equal(table[window], q)
    plan = lower(fp)
    assert [type(s).__name__ for s in plan.stages] == ["ConvStage", "PoolStage", "ConvStage", "PoolStage", "DenseStage"]
    fp.fov = 32  # a 32-pixel view resized to 8: not pixel-wise, no table
    with pytest.raises(FixedPointError, match="256-entry table"):
        lower(fp)


def test_integer_shrink_is_torchs_antialiased_bilinear() -> None:
    """64 -> 32 in torch: (1,3,3,1)/8 per axis, (3,3,1)/7 and (1,3,3)/7 at the borders. With the
    project's normalisation (mean 0.5, std 0.25) and 8-bit inputs no value lies near a rounding
    tie, and the IR's integer input equals torch's float32 path; where exact ties exist (a
    4-bit input, or mean 0.45 / std 0.2) float32 rounding decides them: one step apart at most.
    hls4ml's float input maps back to the same integers."""
    from lymphosort.export.fixedpoint import integer_shrink

    sh = integer_shrink(64, 32)
    assert sh is not None
    assert sh.denom.tolist() == [7] + [8] * 30 + [7]
    assert sh.weights[5, 9:13].tolist() == [1, 3, 3, 1] and sh.weights[5].sum() == 8
    assert sh.weights[0, :3].tolist() == [3, 3, 1] and sh.weights[31, -3:].tolist() == [1, 3, 3]
    crops = _crops(300)
    for size, fov, mean, std, bits, exp, most in ((32, None, 0.5, 0.25, 8, -6, 0), (8, 16, 0.5, 0.25, 8, -5, 0),
                                                  (32, None, 0.5, 0.25, 4, -2, 1), (32, None, 0.45, 0.2, 8, -5, 1)):
        fp = _toy(size, 1)
        fp.fov, fp.mean, fp.std, fp.input_bits, fp.input_exp = fov, mean, std, bits, exp
        q = fp.input_ints(crops).numpy()
        assert q.shape == (len(crops), 1, size, size)
        diff = np.abs(q - fp.quantize_input(fp.float_input(crops)).numpy())
        assert diff.max() == most
        assert np.array_equal(fp.quantize_input(fp.preprocess(crops)).numpy(), q)  # hls4ml's input


def test_lowering_of_the_shrink_and_of_lanes() -> None:
    """The shrink lowers to conv -> sum pool -> quantiser; pools halve the lanes; valid padding
    and rows that do not split into beats are refused with several lanes."""
    from lymphosort.export.rtl.plan import QuantStage, lower

    fp = _toy(8, 1)
    fp.fov = 16
    plan = lower(fp, 4)
    assert plan.table is None and plan.size == 16
    assert [(s.name, s.lanes) for s in plan.stages] == [
        ("shrink_conv", 4), ("shrink_pool", 4), ("shrink_quant", 2), ("conv1", 2), ("pool1", 2), ("conv2", 1),
        ("pool2", 1), ("dense", 1)]
    quant = plan.stages[2]
    assert isinstance(quant, QuantStage) and sorted(quant.consts) == [49, 56, 64]
    with pytest.raises(FixedPointError, match="same padding"):
        lower(_toy(12, 0), 2)
    with pytest.raises(FixedPointError, match="power of two"):
        lower(fp, 3)
    with pytest.raises(FixedPointError, match="beats"):
        lower(_toy(8, 1), 16)


@pytest.mark.rtl
@pytest.mark.parametrize("size,lanes,shrink,arch", [
    (8, 1, True, "stream"), (8, 2, True, "stream"), (8, 4, True, "stream"), (8, 2, False, "stream"),
    (16, 8, True, "stream"), (8, 1, True, "mixed"), (8, 2, True, "mixed")])
def test_shrink_lanes_and_mixed_are_bit_exact(tmp_path: Path, size: int, lanes: int, shrink: bool, arch: str) -> None:
    """The 2x shrink in hardware, several pixels a cycle (with a narrowing FIFO in front of
    conv2 at 8), and the time-shared (multiplier) layers, against the integer evaluator, back
    to back and with random stalls; a frame takes its beats plus the first conv's flush (the
    narrowed and time-shared layers keep up)."""
    _need_rtl()
    from lymphosort.export.rtl.flow import check, generate
    from lymphosort.export.rtl.plan import NarrowStage

    fp = _toy(size, 1, seed=lanes)
    if shrink:
        fp.fov = 2 * size
    design = generate(fp, tmp_path, pixels_per_cycle=lanes, arch=arch)
    shared = [s.name for s in design.plan.stages if getattr(s, "share", None) is not None]
    assert shared == ([] if arch == "stream" else ["conv2", "dense"])
    assert (tmp_path / "src" / "dense_engine.v").exists() == (arch == "mixed")
    narrow = [(s.lanes, s.lanes_out) for s in design.plan.stages if isinstance(s, NarrowStage)]
    assert narrow == ([(2, 1)] if lanes == 8 else [])
    crops = _crops(12, seed=lanes)
    r = check(design, fp, crops, tmp_path / "sim")
    assert r["mismatches"] == 0 and not r["design_err"] and r["n_checked"] == len(crops)
    side = design.plan.size
    beats, row = side * side // lanes, side // lanes
    # the first conv (3x3, same padding) flushes a row of beats and one more; its busy flag
    # reaches s_tready a cycle after the last beat
    assert r["interval"]["min"] == r["interval"]["max"] == beats + row + 2
    assert r["latency"]["min"] == r["latency"]["max"] > beats
    stalled = check(design, fp, crops, tmp_path / "sim", gap_pct=30)
    assert stalled["mismatches"] == 0 and not stalled["design_err"]


@pytest.mark.rtl
@pytest.mark.slow
def test_stream_rtl_is_bit_exact_and_reports_cycles(tmp_path: Path) -> None:
    """CI's end-to-end RTL check: same padding, back to back and with random stalls; a
    wrong reference fails and saves the crop."""
    _need_rtl()
    from lymphosort.export.rtl.flow import RtlMismatchError, check, generate

    fp = _toy(8, 1)
    design = generate(fp, tmp_path)
    crops = _crops(24)
    r = check(design, fp, crops, tmp_path / "sim")
    assert r["mismatches"] == 0 and not r["design_err"] and r["n_checked"] == len(crops)
    # one pixel a cycle: a frame cannot take fewer cycles than its pixels, and the logits
    # come after the last pixel; both constant when frames stream back to back.
    assert r["interval"]["min"] == r["interval"]["max"] >= 64
    assert r["latency"]["min"] == r["latency"]["max"] > 64
    stalled = check(design, fp, crops, tmp_path / "sim", gap_pct=30)
    assert stalled["mismatches"] == 0 and not stalled["design_err"]
    assert stalled["interval"]["max"] > r["interval"]["max"]  # the stalls did happen
    wrong = _toy(8, 1)
    wrong.layers[-1].bias = wrong.layers[-1].bias + 1
    with pytest.raises(RtlMismatchError, match="differs"):
        check(design, wrong, crops[:4], tmp_path / "sim")
    assert np.load(tmp_path / "sim" / "first_mismatch_crop.npy").shape == (64, 64)


@pytest.mark.rtl
@pytest.mark.slow
def test_stream_rtl_valid_padding_odd_maps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Valid padding (as paper-student2) on an 11x11 input: 9 -> pool 4 -> 2 -> pool 1; the
    output folder given relative to the working directory (as `--out DIR` usually is)."""
    _need_rtl()
    from lymphosort.export.rtl.flow import check, generate

    fp = _toy(11, 0, seed=3)
    monkeypatch.chdir(tmp_path)
    design = generate(fp, Path("out"))
    r = check(design, fp, _crops(20, seed=4), Path("out") / "sim", gap_pct=20)
    assert r["mismatches"] == 0 and not r["design_err"]


@pytest.mark.rtl
@pytest.mark.slow
def test_cli_exports_a_qat_student(tmp_path: Path, tiny_root: Path) -> None:
    """`lymphosort export rtl` on a Brevitas QAT student (tiny-32-centre-q4 at an 8x8 view)."""
    _need_rtl()
    pytest.importorskip("brevitas")
    from lymphosort.cli import main
    from tests.export.helpers import small_qat_run

    run = small_qat_run(tmp_path / "run")
    out = tmp_path / "rtl"
    assert main(["export", "rtl", str(run), "--out", str(out), "--data-root", str(tiny_root), "--n-check", "16"]) == 0
    rec = json.loads((out / "rtl.json").read_text())
    for key in ("arch", "n_checked", "mismatches", "latency_cycles", "initiation_interval", "fmax_mhz", "latency_us",
                "part", "luts", "ffs", "dsps", "brams"):
        assert key in rec, key
    assert rec["arch"] == "stream" and rec["mismatches"] == 0 and rec["n_checked"] > 0  # t4-vs-b crops of 24
    assert rec["latency_cycles"] > 64 and rec["initiation_interval"] >= 64
    assert rec["fmax_mhz"] is None and rec["latency_us"] is None and rec["luts"] is None  # not measured here
    assert rec["widths"] == {"input": 8, "weights": [4, 4, 4, 4], "activations": [4, 4, 4]}
    assert rec["channels"] == [8, 16, 24]  # tiny-32-centre's convs
    assert (out / "src" / "lymphosort_top.v").is_file() and (out / "fixedpoint.json").is_file()


def test_rtl_record_carries_the_twins_accuracy(tmp_path: Path) -> None:
    """rtl.json states the test accuracy of the QAT twin and of the float run it came from, so
    a latency row shows its accuracy cost; a run never evaluated gives None, not a guess."""
    from lymphosort.export.rtl.flow import twin_accuracy

    float_run, twin = tmp_path / "float", tmp_path / "twin"
    for d, acc in ((float_run, 0.881), (twin, 0.849)):
        d.mkdir()
        (d / "metrics.json").write_text(json.dumps({"accuracy": acc, "n": 9144, "data": {"version": "3.0"}}))
    card = {"format": 1, "model": "tiny-32-whole-q4", "config": {"init_from": str(float_run), "epochs": 3}}
    (twin / "model.json").write_text(json.dumps(card))
    got = twin_accuracy(twin)
    assert got is not None and got["twin"]["accuracy"] == 0.849 and got["float"]["accuracy"] == 0.881
    assert got["twin"]["n"] == 9144 and got["float"]["run"] == str(float_run)
    card["config"] = {"epochs": 3}  # trained from scratch: no float parent
    (twin / "model.json").write_text(json.dumps(card))
    assert twin_accuracy(twin)["float"] is None
    assert twin_accuracy(tmp_path / "never-evaluated") is None


@pytest.mark.parametrize("lanes", [1, 2])
def test_plan_only_counts_each_circuit_once_a_copy_without_simulating(tmp_path: Path, lanes: int) -> None:
    """`--plan-only` writes the Verilog and the da4ml cost of the whole design (no Verilator,
    no data); a circuit's copies are the instances of it in the generated Verilog."""
    pytest.importorskip("da4ml", reason="da4ml is not installed (pip install -e .[rtl])")
    pytest.importorskip("brevitas")
    import re

    from lymphosort.cli import main
    from tests.export.helpers import small_qat_run

    run = small_qat_run(tmp_path / "run")
    out = tmp_path / "plan"
    assert main(["export", "rtl", str(run), "--out", str(out), "--plan-only", "--pixels-per-cycle", str(lanes)]) == 0
    rec = json.loads((out / "rtl.json").read_text())
    assert rec["plan_only"] and rec["n_checked"] is None and rec["latency_cycles"] is None
    assert not (out / "sim").exists()
    verilog = "\n".join(p.read_text() for p in (out / "src").glob("*.v"))
    for st in rec["stages"]:
        assert len(re.findall(rf"^\s*{st['name']}_mac_wrapper\b", verilog, re.M)) == st["copies"], st["name"]
    assert {s["name"]: s["copies"] for s in rec["stages"]}["conv1"] == lanes
    assert rec["da4ml_cost_total"] == pytest.approx(sum(s["da4ml_cost"] * s["copies"] for s in rec["stages"]), abs=0.1)
