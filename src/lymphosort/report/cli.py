"""``lymphosort report RUN``: rebuild RUN/report.html and RUN/report.md from stored outputs."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="HTML + Markdown report of a pipeline run folder, from its stage records alone",
        description="Rebuild RUN/report.html (self-contained) and RUN/report.md from "
        "RUN/stages/*/stage.json and the files they name. Stages that have not run show as 'not run'.",
    )
    p.add_argument("run", type=Path, help="pipeline run folder (RUNS/NAME)")
    from lymphosort.config import add_config_file

    add_config_file(p)
    p.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    from lymphosort.report.build import build_report, read_stage, STAGE_NAMES

    html_path, md_path = build_report(args.run)
    done = [n for n in STAGE_NAMES if read_stage(args.run, n).done]
    missing = [n for n in STAGE_NAMES if n not in done]
    print(f"wrote {html_path} and {md_path}")
    print(f"  stages reported: {', '.join(done) or 'none'}" + (f"; not run: {', '.join(missing)}" if missing else ""))
    return 0
