"""``lymphosort data info|download|synth|show|compare``.

Handlers import numpy/torch/matplotlib lazily, so registering costs nothing at startup.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lymphosort.data.info import CLASSES, DEFAULT_REAL_ROOT, DEFAULT_ROOT, INFO, MIRROR_ENV, SPLITS, TASKS


def register(subparsers: argparse._SubParsersAction) -> None:
    from lymphosort.config import add_config_file

    p = subparsers.add_parser("data", help="LymphoMNIST: metadata, download, LymphoSim synthesis, sample grids")
    sub = p.add_subparsers(dest="data_command", required=True)

    def root_arg(q: argparse.ArgumentParser, default: str = DEFAULT_ROOT) -> None:
        q.add_argument("--root", type=Path, default=Path(default),
                       help="data root; files live in ROOT/LymphoMNIST/raw (default: %(default)s)")

    q = sub.add_parser("info", help="the metadata table and what is on disk")
    root_arg(q)
    add_config_file(q)
    q.set_defaults(func=_info)

    q = sub.add_parser("download", help="fetch LymphoMNIST from a mirror (resumable, validated)")
    root_arg(q, DEFAULT_REAL_ROOT)
    q.add_argument("--mirror", action="append", default=None, metavar="URL_OR_PATH",
                   help=f"a zip, base URL or local folder/zip, tried first (repeatable; also ${MIRROR_ENV})")
    q.add_argument("--force", action="store_true", help="download even when the files are present")
    add_config_file(q)
    q.set_defaults(func=_download)

    q = sub.add_parser("synth", help="write a LymphoSim data set in LymphoMNIST's layout")
    root_arg(q)
    q.add_argument("--n-train", type=int, default=int(INFO["n_train"]))  # type: ignore[call-overload]
    q.add_argument("--n-test", type=int, default=int(INFO["n_test"]))  # type: ignore[call-overload]
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--preset", default="default", help="LymphoSim preset (default: %(default)s)")
    add_config_file(q)
    q.set_defaults(func=_synth)

    q = sub.add_parser("show", help="PNG grid of sample images, one row per class")
    root_arg(q)
    q.add_argument("--out", type=Path, required=True, help="PNG file to write")
    q.add_argument("--split", default="test", choices=("train", "val", "test"))
    q.add_argument("--task", default="3-class", choices=tuple(TASKS))
    q.add_argument("--n", type=int, default=16, help="images per class (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="which images are drawn")
    add_config_file(q)
    q.set_defaults(func=_show)

    q = sub.add_parser(
        "compare", help="realism / domain shift: appearance statistics, montage and an A-vs-B discriminator",
        description="Compare SET_B against the reference SET_A: e.g. a lab's own images against the data a "
        "model was trained on, to see a domain shift before trusting predictions, or LymphoSim against real "
        "crops. A set is a folder of images (PNG/TIFF/JPEG, any square-ish size), an IDX root (holds "
        "LymphoMNIST/raw) or sim:PRESET.",
    )
    q.add_argument("set_a", metavar="SET_A", help="the reference set: folder, IDX root or sim:PRESET")
    q.add_argument("set_b", metavar="SET_B", help="the set compared with it")
    q.add_argument("--n", type=int, default=512, help="crops drawn from each set (default: %(default)s)")
    q.add_argument("--seed", type=int, default=0, help="which crops are drawn, CV folds (default: %(default)s)")
    q.add_argument("--out", type=Path, default=Path("compare"),
                   help="folder for compare.json, compare.md, montage.png (default: %(default)s)")
    q.add_argument("--repeats", type=int, default=1,
                   help="also run the discriminator on this many subsamples and CV splits: mean and sd "
                   "(default: %(default)s)")
    q.add_argument("--no-resample", dest="resample", action="store_false",
                   help="measure each set at its own crop size (default: resample B smoothly to A's side)")
    add_config_file(q)
    q.set_defaults(func=_compare)


# --------------------------------------------------------------------------- handlers


def _info(args: argparse.Namespace) -> int:
    from lymphosort.data import lymphomnist as lm
    from lymphosort.errors import LymphosortError

    size = INFO["image_size"]
    print(f"{INFO['name']}: {INFO['description']}")
    print(f"  classes (on disk): {', '.join(f'{c}={i}' for i, c in enumerate(CLASSES))}")
    print(f"  image size: {size[0]}x{size[1]} uint8; official counts: "  # type: ignore[index]
          f"train {INFO['n_train']}, test {INFO['n_test']}")
    print("  tasks:")
    for view in TASKS.values():
        labels = ", ".join(f"{c}={i}" for i, c in enumerate(view.classes))
        print(f"    {view.name:<8} {labels:<16} {view.description}")
    print("  splits:")
    for version, spec in SPLITS.items():
        print(f"    {version}: {spec.id}: train = train file; val = {spec.val_fraction:.0%} of the test file "
              f"(stratified, seed {spec.seed}); test = the rest")
    print(f"  mirrors: {'; '.join(INFO['mirrors'])}")  # type: ignore[arg-type]
    print(f"  extra mirrors (${MIRROR_ENV}): {os.environ.get(MIRROR_ENV) or 'unset'}")
    print(f"  citation: {INFO['citation']}")
    print()
    raw = lm.raw_folder(args.root)
    print(f"On disk: {raw}")
    files = lm.raw_files(args.root)
    for key, path in files.items():
        state = f"{path.stat().st_size} bytes" if path.is_file() else "missing"
        print(f"  {path.name:<16} {state}")
    missing = [p for p in files.values() if not p.is_file()]
    if missing:
        print(f"  to get them: {lm.how_to_get(args.root)}")
        return 0
    try:
        prov = lm.read_provenance(args.root)
        print(f"  provenance: {', '.join(f'{k}={v}' for k, v in prov.items())}")
        rows = []
        for split in ("train", "val", "test"):
            _, _, labels, split_id, _ = lm._split_rows(args.root, split, "v1", None)
            counts = [int((labels == c).sum()) for c in range(len(CLASSES))]
            rows.append((split, counts))
    except LymphosortError as exc:
        print(f"  problem: {exc}")
        return 1
    print(f"  split id: {split_id}")
    print("  " + f"{'split':<6}" + "".join(f"{c:>8}" for c in (*CLASSES, "total")))
    for split, counts in rows:
        print("  " + f"{split:<6}" + "".join(f"{n:>8}" for n in (*counts, sum(counts))))
    return 0


def _download(args: argparse.Namespace) -> int:
    from lymphosort.data import lymphomnist as lm

    raw = lm.download(args.root, args.mirror, force=args.force)
    print(f"LymphoMNIST is in {raw}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from lymphosort.data.synth import write_lymphomnist

    out = write_lymphomnist(args.root, n_train=args.n_train, n_test=args.n_test, seed=args.seed, preset=args.preset)
    print(f"LymphoSim data ({args.n_train} train, {args.n_test} test, preset {args.preset}, seed {args.seed}) in {out}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from lymphosort.data.grid import write_sample_grid

    out = write_sample_grid(args.root, args.out, split=args.split, n=args.n, task=args.task, seed=args.seed)
    print(f"wrote {out}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from lymphosort.data.realism import compare_sets

    result = compare_sets(args.set_a, args.set_b, args.out, n=args.n, seed=args.seed, resample=args.resample,
                          repeats=args.repeats)
    print(Path(result["files"]["md"]).read_text(), end="")
    print(f"wrote {result['files']['json']}, {result['files']['md']}, {result['files']['montage']}")
    return 0
