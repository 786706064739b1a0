"""``lymphosort export onnx|hls RUN --out DIR``: deployable artefacts from a run folder.

Every bundle carries a copy of the run's ``model.json`` (the model card: input size,
normalisation, classes) so the preprocessing travels with the model, and an
``export.json`` recording how the export was checked.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

__all__ = ["register", "export_onnx_run", "check_images"]

log = logging.getLogger(__name__)


def check_images(card: Any, data_root: Path | None, n: int, *, split: str = "test") -> tuple[Any, str]:
    """Up to `n` uint8 crops [n,64,64] of `split` for the card's task, and where they came from.

    The data root is `data_root`, else the one recorded in the run's config. Falls back to
    seeded random crops (said so in the returned description) when neither exists, so an
    export can still be checked on a machine without the data set.
    """
    import numpy as np
    import torch

    from lymphosort.data.lymphomnist import load_split
    from lymphosort.errors import DatasetNotFoundError

    root = data_root if data_root is not None else card.config.get("data_root")
    task = card.task or "t4-vs-b"
    if root is not None:
        try:
            data = load_split(root, split, task)
            return data.images[:n], f"{split} split of {root} ({task}, split {data.split_id})"
        except (DatasetNotFoundError, FileNotFoundError, OSError) as exc:
            log.warning("cannot read %s (%s); checking on random crops instead", root, exc)
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.integers(0, 256, size=(n, 64, 64), dtype=np.uint8)), "random uint8 crops (seed 0)"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from lymphosort.train.checkpoint import jsonable

    path.write_text(json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def export_onnx_run(
    run: str | Path, out: str | Path, *, data_root: str | Path | None = None, n_check: int = 2000, opset: int = 17
) -> dict[str, Any]:
    """Export RUN's model to OUT/model.onnx, copy model.json, check it, write export.json.

    Raises `ExportError` when the float export differs from torch by more than 1e-4.
    """
    from lymphosort.export.onnx import FLOAT_TOLERANCE, ExportError, check_onnx, export_onnx
    from lymphosort.train.checkpoint import CARD_FILE, load_checkpoint

    run, out = Path(run), Path(out)
    model, card = load_checkpoint(run)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(model, out / "model.onnx", opset=opset)
    shutil.copyfile(run / CARD_FILE, out / CARD_FILE)
    images, source = check_images(card, Path(data_root) if data_root else None, n_check)
    result = check_onnx(onnx_path, model, images)
    quantised = bool(getattr(model.spec, "create_kwargs", {}).get("quant_bits"))
    record = {
        "format": "onnx",
        "run": str(run),
        "model": card.model,
        "create_kwargs": card.create_kwargs,
        "input": {"name": "input", "shape": ["N", 1, model.spec.input_size, model.spec.input_size],
                  "dtype": "float32", "mean": model.spec.mean, "std": model.spec.std,
                  "preprocessing": "uint8/255, bilinear resize (antialiased) to input_size, (x - mean) / std"},
        "output": {"name": "logits", "classes": list(card.classes)},
        "checked_on": source,
        **result,
    }
    _write_json(out / "export.json", record)
    if not quantised and result["max_abs_diff"] > FLOAT_TOLERANCE:
        raise ExportError(
            f"ONNX Runtime differs from torch by {result['max_abs_diff']:.3g} > {FLOAT_TOLERANCE} "
            f"on {result['n_checked']} crops (see {out / 'export.json'})"
        )
    record["out"] = str(out)
    return record


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="ONNX and FPGA (hls4ml) bundles from a run folder")
    sub = p.add_subparsers(dest="export_format", metavar="FORMAT", required=True)

    o = sub.add_parser("onnx", help="float ONNX graph checked against torch with ONNX Runtime")
    o.add_argument("run", type=Path, help="run folder holding model.safetensors + model.json")
    o.add_argument("--out", type=Path, required=True, help="output folder")
    o.add_argument("--data-root", type=Path, default=None, help="data root for the check crops (default: the run's)")
    o.add_argument("--n-check", type=int, default=2000, help="test crops compared (default %(default)s)")
    o.add_argument("--opset", type=int, default=17)
    o.set_defaults(func=_main_onnx)


def _main_onnx(args: argparse.Namespace) -> int:
    r = export_onnx_run(args.run, args.out, data_root=args.data_root, n_check=args.n_check, opset=args.opset)
    print(f"{r['model']}: wrote {r['out']}/model.onnx (opset {r['opset']})")
    print(f"  onnx.checker ok; ONNX Runtime vs torch on {r['n_checked']} crops ({r['checked_on']}): "
          f"max |diff| {r['max_abs_diff']:.2e}, argmax agreement {r['argmax_agreement']:.4f}")
    return 0
