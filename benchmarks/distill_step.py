"""Benchmark: where a distillation step's time goes, and what the frozen teacher graph saves.

Times, interleaved in one process at one intra-op thread on random inputs of the training
batch size: the teacher's forward in eager mode, the same teacher as the frozen TorchScript
graph the training loop uses (`train.module.freeze_for_inference`), the training loop's bfloat16
autocast path (`--teacher-precision bf16`, with its largest logit error on the batch), and the
student's forward + backward + AdamW step. Speed does not depend on the data, only on shapes.

    python benchmarks/distill_step.py --teacher runs/exp/teacher --student tiny-32-centre \\
        --out benchmarks/results/distill_step.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch


def _median_s(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _cpu_flags(wanted: set[str]) -> list[str]:
    """Which of `wanted` /proc/cpuinfo lists (bfloat16 is only fast where the CPU has it)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return sorted(wanted & set(text.split()))


def main(argv: list[str] | None = None) -> int:
    from speed_ratio import load_model_or_arch

    from lymphosort.models import create_model
    from lymphosort.distill.losses import KDLoss
    from lymphosort.train.module import LymphoModule, freeze_for_inference

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="teacher run folder, or a registered name (speed only)")
    ap.add_argument("--student", default="tiny-32-centre", help="registered student name")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=15, help="interleaved rounds")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)

    _, teacher, _ = load_model_or_arch(args.teacher)
    teacher.eval()
    student = create_model(args.student, num_classes=teacher.spec.num_classes)
    x = torch.rand(args.batch_size, 1, 64, 64)
    tx, sx = teacher.spec.prepare(x), student.spec.prepare(x)
    graph = freeze_for_inference(teacher, tx)
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3)

    def eager() -> None:
        with torch.no_grad():
            teacher(tx)

    def frozen() -> None:
        with torch.no_grad():
            graph(tx)

    # The training loop's own bfloat16 path (`--teacher-precision bf16`).
    fast = LymphoModule(student, KDLoss(), num_classes=teacher.spec.num_classes, teacher=teacher,
                        teacher_precision="bf16")

    def bf16() -> None:
        with torch.no_grad():
            fast._teacher_forward(tx)

    def student_step() -> None:
        student(sx).logsumexp(1).mean().backward()
        opt.step()
        opt.zero_grad()

    parts = {"teacher_eager": eager, "teacher_frozen_graph": frozen, "teacher_bf16_autocast": bf16,
             "student_step": student_step}
    for fn in parts.values():  # warm-up (graph specialisation, allocator)
        fn()
    samples: dict[str, list[float]] = {k: [] for k in parts}
    for _ in range(args.repeats):
        for k, fn in parts.items():
            samples[k].append(_median_s(fn, 3))
    ms = {k: 1e3 * statistics.median(v) for k, v in samples.items()}
    step_eager = ms["teacher_eager"] + ms["student_step"]
    step_graph = ms["teacher_frozen_graph"] + ms["student_step"]
    step_bf16 = ms["teacher_bf16_autocast"] + ms["student_step"]
    with torch.no_grad():
        exact, approx = teacher(tx), fast._teacher_forward(tx)
    result = {
        "command": "python benchmarks/distill_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": 1,
                    "cpu_bf16": _cpu_flags({"avx512_bf16", "amx_bf16"})},
        "batch_size": args.batch_size,
        "median_ms": ms,
        "teacher_speedup": ms["teacher_eager"] / ms["teacher_frozen_graph"],
        "step_ms": {"eager_teacher": step_eager, "frozen_teacher": step_graph, "bf16_teacher": step_bf16},
        "step_speedup": step_eager / step_graph,
        "bf16_teacher_speedup_vs_frozen": ms["teacher_frozen_graph"] / ms["teacher_bf16_autocast"],
        "bf16_step_speedup_vs_frozen": step_graph / step_bf16,
        "bf16_max_abs_logit_error": float((approx - exact).abs().max()),
        "bf16_argmax_agreement": float((approx.argmax(1) == exact.argmax(1)).float().mean()),
    }
    print(f"teacher forward: eager {ms['teacher_eager']:.1f} ms, frozen graph {ms['teacher_frozen_graph']:.1f} ms "
          f"({result['teacher_speedup']:.2f}x); student step {ms['student_step']:.1f} ms; "
          f"teacher + student {step_eager:.1f} -> {step_graph:.1f} ms ({result['step_speedup']:.2f}x); "
          f"bf16 teacher {ms['teacher_bf16_autocast']:.1f} ms, step {step_bf16:.1f} ms "
          f"({result['bf16_step_speedup_vs_frozen']:.2f}x vs frozen; max logit error "
          f"{result['bf16_max_abs_logit_error']:.3g})")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
