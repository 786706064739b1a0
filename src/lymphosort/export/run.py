"""Exports of a run folder, as functions of their config objects: the ONNX export (the float
students' deployment runtime) and what every export shares (check crops, the model card
copied beside the artefact, an export record written last).

Every bundle carries a copy of the run's ``model.json`` (the model card: input size,
normalisation, classes) so the preprocessing travels with the model, and an
``export.json`` recording how the export was checked and with which config.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from lymphosort.export.config import OnnxExportConfig

__all__ = ["OnnxExportConfig", "check_images", "export_onnx_run", "reusable_onnx_export", "weights_digest",
           "write_record"]

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


def write_record(path: Path, data: dict[str, Any]) -> None:
    """An export record (JSON, NaN refused), written atomically."""
    from lymphosort.atomic import write_json_atomic
    from lymphosort.models.checkpoint import jsonable

    write_json_atomic(path, jsonable(data), allow_nan=False)


def copy_card(run: Path, out: Path) -> None:
    """The model card beside the artefact: the preprocessing travels with the model."""
    from lymphosort.atomic import atomic_write
    from lymphosort.models.checkpoint import CARD_FILE

    atomic_write(out / CARD_FILE, lambda tmp: shutil.copyfile(run / CARD_FILE, tmp))


def weights_digest(run: str | Path) -> str:
    """sha256 of RUN/model.safetensors: names the weights an export was made from."""
    import hashlib

    from lymphosort.models.checkpoint import WEIGHTS_FILE

    h = hashlib.sha256()
    with open(Path(run) / WEIGHTS_FILE, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_onnx_run(run: str | Path, out: str | Path, cfg: OnnxExportConfig = OnnxExportConfig()) -> dict[str, Any]:
    """Export RUN's model to OUT/model.onnx, copy model.json, check it, write export.json.

    export.json goes last and records the weights' sha256 and whether the check passed, so
    a killed or failed export is never taken for a good one (see `reusable_onnx_export`).
    Raises `ExportError` when the float export differs from torch by more than 1e-4.
    """
    from lymphosort.config import to_mapping
    from lymphosort.export.onnx import FLOAT_TOLERANCE, ExportError, check_onnx, export_onnx
    from lymphosort.models.checkpoint import load_checkpoint

    run, out = Path(run), Path(out)
    model, card = load_checkpoint(run)
    (out / "export.json").unlink(missing_ok=True)
    onnx_path = export_onnx(model, out / "model.onnx", opset=cfg.opset)
    copy_card(run, out)
    images, source = check_images(card, Path(cfg.data_root) if cfg.data_root else None, cfg.n_check)
    result = check_onnx(onnx_path, model, images)
    from lymphosort.models.quant import float_name

    quantised = float_name(card.model) is not None
    record = {
        "format": "onnx",
        "run": str(run),
        "config": to_mapping(cfg),
        "weights_sha256": weights_digest(run),
        # Quantised models are exported as their float graph: no tolerance applies.
        "passed": quantised or result["max_abs_diff"] <= FLOAT_TOLERANCE,
        "model": card.model,
        "create_kwargs": card.create_kwargs,
        "input": {"name": "input", "shape": ["N", 1, model.spec.input_size, model.spec.input_size],
                  "dtype": "float32", "mean": model.spec.mean, "std": model.spec.std, "fov": model.spec.fov,
                  "preprocessing": "uint8/255, centred fov x fov window (when fov is set), bilinear resize "
                                   "(antialiased) to input_size, (x - mean) / std"},
        "output": {"name": "logits", "classes": list(card.classes)},
        "checked_on": source,
        **result,
    }
    write_record(out / "export.json", record)
    if not quantised and result["max_abs_diff"] > FLOAT_TOLERANCE:
        raise ExportError(
            f"ONNX Runtime differs from torch by {result['max_abs_diff']:.3g} > {FLOAT_TOLERANCE} "
            f"on {result['n_checked']} crops (see {out / 'export.json'})"
        )
    record["out"] = str(out)
    return record


def reusable_onnx_export(run: str | Path, out: str | Path) -> dict[str, Any] | None:
    """OUT's export.json when OUT holds a passed ONNX export of RUN's current weights, else None."""
    out = Path(out)
    record_path = out / "export.json"
    if not (record_path.is_file() and (out / "model.onnx").is_file()):
        return None
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("format") != "onnx" or record.get("passed") is not True:
        return None
    return record if record.get("weights_sha256") == weights_digest(run) else None
