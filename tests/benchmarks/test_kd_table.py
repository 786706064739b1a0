"""The kd table's command lines: what it runs is what a user would type."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import kd_table  # noqa: E402

from lymphosort.cli import build_parser  # noqa: E402


def test_distill_command_fine_tunes_a_qat_twin_from_a_float_run() -> None:
    cmd = kd_table.distill_command("T", "tiny-32-centre", "kd", "OUT", data_root="D", epochs=2, qat_bits=8, init_from="FLOAT")
    assert cmd[cmd.index("--qat") + 1] == "8" and cmd[cmd.index("--init-from") + 1] == "FLOAT"
    assert "--init-from" not in kd_table.distill_command("T", "tiny-32-centre", "kd", "OUT", data_root="D", epochs=2)
    # the command parses as `lymphosort distill` flags
    args = build_parser().parse_args(cmd)
    assert args.qat == 8 and args.out == "OUT"
