"""`lymphosort distill`: train a student against a trained teacher's run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping

from lymphosort.distill import BEST_SETTING
from lymphosort.train.cli import add_common_args, report, resolve_config
from lymphosort.train.config import TrainConfig


def run_distill(args: argparse.Namespace) -> int:
    from lymphosort.threads import configure_threads
    from lymphosort.train.fit import fit, is_rank_zero

    configure_threads(args.threads)
    cfg = distill_config(args)
    result = fit(cfg, args.out, resume=args.resume, quiet=args.quiet, evaluate=not args.no_eval)
    if is_rank_zero():
        report(result)
    return 0


def distill_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the saved one (--resume) or --config, then flags; what neither sets comes from
    the teacher's card (task, data) and `BEST_SETTING` (student, method, epochs, patience)."""
    from lymphosort.distill.losses import parse_method_args
    from lymphosort.errors import ConfigError

    resuming = args.resume and (Path(args.out) / "config.yaml").is_file()
    fields: dict = {}
    if not resuming:
        if not args.teacher:
            raise ConfigError("distill needs --teacher RUN (a run folder written by `lymphosort train`)")
        from lymphosort.train.checkpoint import read_card

        card = read_card(args.teacher)
        # Same task and data as the teacher unless told otherwise.
        fields["task"] = args.task or card.task
        if args.data_root is None and card.config.get("data_root"):
            fields["data_root"] = card.config["data_root"]
        method = args.method or BEST_SETTING["method"]
        fields.update(
            teacher=str(args.teacher),
            model=args.student or BEST_SETTING["student"],
            method=method,
            method_kwargs={
                **(dict(BEST_SETTING["method_kwargs"]) if method == BEST_SETTING["method"] else {}),
                **parse_method_args(args.method_arg),
            },
        )
        if not args.config:
            for key in ("epochs", "patience"):
                if getattr(args, key) is None:
                    fields[key] = BEST_SETTING[key]
    else:
        for key, value in (("teacher", args.teacher), ("model", args.student), ("method", args.method)):
            if value is not None:
                fields[key] = value
    if getattr(args, "qat", None):
        _apply_qat(args.qat, fields)
    if args.student_layers:
        fields["student_layers"] = args.student_layers.split(",")
    if args.teacher_layers:
        fields["teacher_layers"] = args.teacher_layers.split(",")
    if args.teacher_precision:
        fields["teacher_precision"] = args.teacher_precision
    return resolve_config(args, **fields)


def _apply_qat(bits: int, fields: dict) -> None:
    """--qat BITS: train the student's Brevitas fixed-point twin (`<student>-q8`, bits as kwarg).

    Applied on --resume too: a resumed QAT run given `--student tiny-32 --qat 8` must stay
    `tiny-32-q8` (the float model would load the QAT checkpoint's weights without error)."""
    from lymphosort.errors import ConfigError
    from lymphosort.models.quant import QUANT_BITS, float_name, quant_name

    if "model" not in fields:
        return  # resuming without --student: the saved config already names the QAT twin
    if not 2 <= bits <= 8:
        raise ConfigError(f"--qat takes 2..8 bits, got {bits}")
    student = fields["model"]
    base = float_name(student) or student
    fields["model"] = quant_name(base, bits if bits in QUANT_BITS else QUANT_BITS[0])
    if bits not in QUANT_BITS:
        fields["model_kwargs"] = {"bits": int(bits)}


def _kwargs(kwargs: Mapping[str, float]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in kwargs.items())


def register(subparsers: argparse._SubParsersAction) -> None:
    from lymphosort.distill.losses import DISTILL_LOSSES
    from lymphosort.train.config import TEACHER_PRECISIONS

    p = subparsers.add_parser(
        "distill",
        help="distil a trained teacher into a small student",
        description="Train --student against the frozen teacher in --teacher RUN. Teacher and student "
        "see the same augmented images, each resized and normalised for its own input. Methods: "
        "kd (Hinton), dkd (decoupled KD), at (attention transfer + KD), none (labels only), paper "
        "(the reference recipe: mixup soft labels, teacher unused). Defaults: the documented best "
        f"setting, --student {BEST_SETTING['student']} --method {BEST_SETTING['method']} "
        f"({_kwargs(BEST_SETTING['method_kwargs'])}), {BEST_SETTING['epochs']} epochs and patience "
        f"{BEST_SETTING['patience']} (0: all epochs, the best validation checkpoint kept) without "
        "--epochs/--patience or --config.",
    )
    p.add_argument("--teacher", default=None, metavar="RUN", help="run folder of the trained teacher")
    p.add_argument("--student", default=None, help=f"registered student (default {BEST_SETTING['student']})")
    p.add_argument("--method", choices=tuple(DISTILL_LOSSES), default=None, help=f"default {BEST_SETTING['method']}")
    p.add_argument(
        "--method-arg",
        action="append",
        metavar="KEY=VALUE",
        help=f"loss hyper-parameter, repeatable; overrides the best setting's {BEST_SETTING['method']} "
        f"{_kwargs(BEST_SETTING['method_kwargs'])} (kd: temperature, alpha, mixup_alpha; dkd: alpha, beta, temperature, "
        "ce_weight; at: beta, p, base, temperature, alpha; paper: mixup_alpha)",
    )
    p.add_argument("--student-layers", default=None, help="comma-separated module paths for feature losses")
    p.add_argument("--teacher-layers", default=None, help="comma-separated module paths for feature losses")
    p.add_argument("--teacher-precision", choices=tuple(TEACHER_PRECISIONS), default=None,
                   help="the frozen teacher's arithmetic: 32 (default) or bf16 autocast (measured: 1.5x faster "
                   "kd steps on an AVX512-BF16 CPU; needs native bfloat16: AVX512-BF16, AMX, recent GPUs)")
    p.add_argument("--qat", type=int, default=None, metavar="BITS",
                   help="quantisation-aware training: the student's Brevitas fixed-point twin with BITS-bit "
                   "weights and activations (e.g. 8 or 4), for `lymphosort export hls`")
    add_common_args(p)
    p.set_defaults(func=run_distill)
