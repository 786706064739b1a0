"""The main job: `lymphosort pipeline`, the whole chain as stages with content-hash caching.

Each stage is a function of (its config slice, the outputs of the stages it depends on).
Its key is a hash of both plus the package version; a stage whose key matches the one
stored in `RUN/stages/NAME/stage.json` is skipped, so a rerun with nothing changed takes
seconds and a killed run resumes at the first unfinished stage. Stages only call the
public functions of the other folders: nothing here re-implements them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from lymphosort.errors import ConfigError

log = logging.getLogger(__name__)

#: Presets: the config every stage reads its slice from. `quick` fits `make demo` on
#: 2 CPU cores; `paper` reproduces the reference project's settings (GPU + real data).
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "quick": {
        "data": {"preset": "default", "n_train": 64_000, "n_test": 16_000, "seed": 0},
    },
    "paper": {
        "data": {"preset": "default", "n_train": 64_000, "n_test": 16_000, "seed": 0},
    },
}


@dataclass
class StageContext:
    """What a stage gets: the run folder, its own output folder, config, and upstream outputs."""

    run_dir: Path
    out_dir: Path
    config: Mapping[str, Any]
    upstream: Mapping[str, Mapping[str, Any]]
    options: Mapping[str, Any] = field(default_factory=dict)


StageFn = Callable[[StageContext], Mapping[str, Any]]


@dataclass(frozen=True)
class Stage:
    name: str
    fn: StageFn
    #: config section(s) the stage reads; only these enter its hash.
    config_keys: tuple[str, ...]
    deps: tuple[str, ...] = ()


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def stage_key(stage: Stage, config: Mapping[str, Any], dep_keys: Mapping[str, str], extra: Any = None) -> str:
    from lymphosort import __version__

    return _hash(
        {
            "stage": stage.name,
            "config": {k: config.get(k) for k in stage.config_keys},
            "deps": {d: dep_keys[d] for d in stage.deps},
            "extra": extra,
            "version": __version__,
        }
    )


def run_stages(
    stages: list[Stage],
    run_dir: Path,
    config: Mapping[str, Any],
    *,
    options: Mapping[str, Any] | None = None,
    force: bool = False,
    console: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Run stages in order, skipping those whose key matches a finished record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    outputs: dict[str, dict[str, Any]] = {}
    for i, stage in enumerate(stages, 1):
        missing = [d for d in stage.deps if d not in keys]
        if missing:
            raise ConfigError(f"stage {stage.name!r} depends on {missing}, which run later or not at all")
        # `extra` lets options that change results (e.g. an explicit data root) enter the key.
        key = stage_key(stage, config, keys, extra=(options or {}).get(f"{stage.name}.key"))
        keys[stage.name] = key
        out_dir = run_dir / "stages" / stage.name
        record_path = out_dir / "stage.json"
        header = f"[{i}/{len(stages)}] {stage.name}"
        if not force and record_path.exists():
            record = json.loads(record_path.read_text())
            if record.get("key") == key and record.get("status") == "done":
                console(f"{header}: up to date (key {key}), skipped")
                outputs[stage.name] = record["outputs"]
                continue
        console(f"{header}: running")
        out_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        ctx = StageContext(run_dir, out_dir, config, {d: outputs[d] for d in stage.deps}, options or {})
        result = dict(stage.fn(ctx))
        elapsed = time.perf_counter() - t0
        # Written last and atomically: a stage killed mid-way leaves no "done" record.
        tmp = record_path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps({"stage": stage.name, "key": key, "status": "done", "seconds": elapsed, "outputs": result}, indent=2, default=str)
        )
        tmp.replace(record_path)
        console(f"{header}: done in {elapsed:.1f} s")
        outputs[stage.name] = result
    return outputs


# --------------------------------------------------------------------------- stages


def stage_data(ctx: StageContext) -> dict[str, Any]:
    """Real LymphoMNIST when present or downloadable; otherwise LymphoSim (the default)."""
    from lymphosort.data import lymphomnist
    from lymphosort.errors import LymphosortError

    cfg = ctx.config["data"]
    explicit_root = ctx.options.get("data_root")
    root: Path
    if explicit_root is not None:
        root = Path(explicit_root)
        try:
            lymphomnist.load_split(root, "train")
        except LymphosortError:
            log.info("no LymphoMNIST files under %s; trying to download", root)
            lymphomnist.download(root)
    else:
        from lymphosort.data.synth import write_lymphomnist

        root = ctx.out_dir / "lymphosim"
        write_lymphomnist(root, n_train=cfg["n_train"], n_test=cfg["n_test"], seed=cfg["seed"], preset=cfg["preset"])
    return _data_card(root, ctx.out_dir)


def _data_card(root: Path, out_dir: Path) -> dict[str, Any]:
    from lymphosort.data import lymphomnist
    from lymphosort.data.cli import write_sample_grid

    card: dict[str, Any] = {"root": str(root), "provenance": lymphomnist.read_provenance(root), "splits": {}}
    for split in ("train", "val", "test"):
        data = lymphomnist.load_split(root, split, "3-class")
        counts = data.labels.bincount(minlength=len(data.classes)).tolist()
        card["splits"][split] = {"n": len(data.labels), "counts": dict(zip(data.classes, counts)), "split_id": data.split_id}
    grid = out_dir / "samples.png"
    write_sample_grid(root, grid, split="test", n=8)
    card["sample_grid"] = str(grid)
    (out_dir / "data_card.json").write_text(json.dumps(card, indent=2))
    return card


#: The stages of the main job, in data-flow order. Later issues append theirs here.
STAGES: list[Stage] = [
    Stage("data", stage_data, ("data",)),
]


def resolve_config(preset: str) -> dict[str, Any]:
    try:
        return json.loads(json.dumps(PRESETS[preset]))  # deep copy, JSON-clean
    except KeyError:
        raise ConfigError(f"unknown pipeline preset {preset!r}; choose one of {', '.join(PRESETS)}") from None


def run_pipeline(out: Path, preset: str = "quick", data_root: Path | None = None, force: bool = False) -> dict[str, Any]:
    config = resolve_config(preset)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"preset": preset, **config}, indent=2))
    options: dict[str, Any] = {}
    if data_root is not None:
        options["data_root"] = str(data_root)
        options["data.key"] = str(Path(data_root).resolve())
    return run_stages(STAGES, out, config, options=options, force=force)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="run the whole chain on the embedded default and write a report")
    p.add_argument("--out", type=Path, required=True, help="run folder (RUNS/NAME)")
    p.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    p.add_argument("--data-root", type=Path, default=None, help="real LymphoMNIST root (default: LymphoSim)")
    p.add_argument("--force", action="store_true", help="rerun every stage even when up to date")
    p.set_defaults(func=lambda a: run_pipeline(a.out, a.preset, a.data_root, a.force) and 0)
