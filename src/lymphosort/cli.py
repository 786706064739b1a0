"""One console script, `lymphosort`, whose subcommands mirror the package folders.

Each folder owns a `cli` module with `register(subparsers)`; handlers import their heavy
dependencies lazily so `lymphosort --help` stays fast and offline.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from lymphosort.errors import LymphosortError

#: Modules that add subcommands, in data-flow order.
COMMAND_MODULES: tuple[str, ...] = (
    "lymphosort.data.cli",
    "lymphosort.train.cli",
    "lymphosort.evaluate.cli",
    "lymphosort.evaluate.audit_cli",
    "lymphosort.export.cli",
    "lymphosort.transfer.cli",
    "lymphosort.realtime.cli",
    "lymphosort.pipeline",
    "lymphosort.report.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from lymphosort import __version__

    parser = argparse.ArgumentParser(
        prog="lymphosort",
        description="Label-free lymphocyte classification: data, training, distillation, "
        "transfer, FPGA export and the real-time sorting path.",
    )
    parser.add_argument("--version", action="version", version=f"lymphosort {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from lymphosort.config import apply_config_file

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if apply_config_file(args):  # a plain-flag command's --config FILE: its defaults, then parse again
            args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except LymphosortError as exc:
        # Our own errors are one readable sentence, not a traceback.
        print(f"lymphosort: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lymphosort: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
