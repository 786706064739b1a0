"""Reading nextpnr's outputs (no tools run): the routed report, and how far an unfinished run got."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lymphosort.export.rtl.synth import placement_progress, read_pnr_report

LOG = """Info: Max frequency for clock '$glbnet$clk': 48.10 MHz (FAIL at 100.00 MHz)
Info: Running simulated annealing placer for refinement.
Info: Max frequency for clock '$glbnet$clk': 54.65 MHz (FAIL at 100.00 MHz)
Info: Running main router loop...
Info:     iter=1 wires=740530 overused=53812 overuse=62635 archfail=NA
Info:     iter=11 wires=826507 overused=5897 overuse=5954 archfail=NA
"""


def test_an_unfinished_run_keeps_the_placement_estimate_and_router_progress(tmp_path: Path) -> None:
    log = tmp_path / "nextpnr.log"
    log.write_text(LOG)
    assert placement_progress(log) == {"placed_fmax_mhz_estimate": 54.65, "router_iterations": 11,
                                       "router_overused_wires": 5897}
    # killed during placement: the last estimate so far, no router line
    log.write_text(LOG.split("Info: Running main router loop")[0])
    assert placement_progress(log) == {"placed_fmax_mhz_estimate": 54.65}
    # a routed Fmax printed after routing is not an estimate of placement
    log.write_text(LOG.replace("54.65", "51.00") + "Info: Max frequency for clock '$glbnet$clk': 69.21 MHz\n")
    assert placement_progress(log)["placed_fmax_mhz_estimate"] == 51.0
    assert placement_progress(tmp_path / "missing.log") == {}


def test_routed_report_gives_the_slowest_clock_and_used_resources(tmp_path: Path) -> None:
    rep = tmp_path / "pnr_report.json"
    rep.write_text(json.dumps({"fmax": {"a": {"achieved": 75.853, "constraint": 100}, "b": {"achieved": 120.0}},
                               "utilization": {"TRELLIS_COMB": {"used": 48199, "available": 83640},
                                               "DP16KD": {"used": 0, "available": 208}}}))
    got = read_pnr_report(rep)
    assert got == {"fmax_mhz": 75.85, "utilisation": {"TRELLIS_COMB": {"used": 48199, "available": 83640}}}


def test_a_stopped_nextpnr_keeps_what_it_reached(tmp_path: Path, monkeypatch) -> None:
    # a stand-in nextpnr: packs (writes the report), then "routes" until a signal ends it
    import os
    import signal
    import sys

    from lymphosort.export.rtl import synth

    fake = tmp_path / "fake_nextpnr.py"
    fake.write_text(f"""import json, os, signal, sys
if "--pack-only" in sys.argv:
    json.dump({{"utilization": {{"TRELLIS_COMB": {{"used": 10, "available": 100}}}}}}, open("pack_report.json", "w"))
    sys.exit(0)
open("nextpnr.log", "w").write({LOG!r})
os.kill(os.getpid(), signal.SIGTERM)
""")
    monkeypatch.setattr(synth, "_nextpnr", lambda: [sys.executable, str(fake)])
    monkeypatch.setattr(synth, "nextpnr_version", lambda: "fake")
    rec = synth.pnr_ecp5({}, tmp_path)
    assert rec["ran"] is False and f"stopped by signal {int(signal.SIGTERM)}" in rec["reason"]
    assert rec["packed"] == {"TRELLIS_COMB": {"used": 10, "available": 100}}
    assert (rec["placed_fmax_mhz_estimate"], rec["router_iterations"], rec["router_overused_wires"]) == (54.65, 11, 5897)
    assert "fmax_mhz" not in rec and os.path.exists(tmp_path / "nextpnr.log")


@pytest.mark.parametrize("seed", [None, 7])
def test_the_seed_reaches_place_and_route_only(tmp_path: Path, monkeypatch, seed) -> None:
    """`--pnr-seed N` is passed to nextpnr's place-and-route run (not to packing) and recorded;
    without it nextpnr keeps its own default."""
    import sys

    from lymphosort.export.rtl import synth

    fake = tmp_path / "fake_nextpnr.py"
    fake.write_text("""import json, sys
name = "pack_argv.json" if "--pack-only" in sys.argv else "pnr_argv.json"
json.dump(sys.argv[1:], open(name, "w"))
if "--pack-only" in sys.argv:
    json.dump({"utilization": {"TRELLIS_COMB": {"used": 10, "available": 100}}}, open("pack_report.json", "w"))
sys.exit(0 if "--pack-only" in sys.argv else 3)
""")
    monkeypatch.setattr(synth, "_nextpnr", lambda: [sys.executable, str(fake)])
    monkeypatch.setattr(synth, "nextpnr_version", lambda: "fake")
    rec = synth.pnr_ecp5({}, tmp_path, seed=seed)
    pack, pnr = (json.loads((tmp_path / f).read_text()) for f in ("pack_argv.json", "pnr_argv.json"))
    assert "--seed" not in pack and rec["seed"] == seed and "failed (rc 3)" in rec["reason"]
    if seed is None:
        assert "--seed" not in pnr
    else:
        assert pnr[pnr.index("--seed") + 1] == "7"
