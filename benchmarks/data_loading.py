"""Benchmark: whole-split tensor loading vs the original LymphoMNIST per-item PIL path,
and LymphoSim throughput. Writes benchmarks/results/data_loading.json.

The original package needs torchvision (which cannot import beside the CPU torch wheel
here), so its loop is reproduced below: read the IDX file whole, then for every index
`Image.fromarray(img.numpy(), mode="L")` followed by torchvision's `ToTensor` (float
/255, [1,H,W]), stacked into one tensor. Ours: `load_split` (memory-mapped IDX -> uint8
tensor) and, to compare like with like, the same float [N,1,64,64] tensor from it.

    python benchmarks/data_loading.py [--root DIR] [--n-train 64000 --n-test 16000]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lymphosort.data.lymphomnist import load_split, read_provenance
from lymphosort.data.synth import write_lymphomnist


def _to_tensor(pic: Image.Image) -> torch.Tensor:
    """torchvision.transforms.ToTensor for an 'L' image, step for step."""
    img = torch.from_numpy(np.array(pic, np.uint8, copy=True))
    img = img.view(pic.size[1], pic.size[0], 1).permute((2, 0, 1)).contiguous()
    return img.to(dtype=torch.get_default_dtype()).div(255)


def original_per_item(raw: Path, split: str) -> torch.Tensor:
    """The original package's path: whole file read into a tensor, then per item
    `__getitem__` (tensor index, PIL 'L' image, ToTensor), stacked."""
    with open(raw / f"{split}_images", "rb") as f:
        blob = bytearray(f.read())
    data = torch.frombuffer(blob, dtype=torch.uint8, offset=16).view(-1, 64, 64)
    items = []
    for i in range(len(data)):
        img = Image.fromarray(data[i].numpy(), mode="L")
        items.append(_to_tensor(img))
    return torch.stack(items)


def ours(root: Path, splits: tuple[str, ...], as_float: bool) -> torch.Tensor:
    """Whole splits as uint8 tensors (what training consumes: augmentation and the float
    conversion happen per batch); `as_float` adds the same float [N,1,64,64] /255 tensor
    the original path ends with, for a like-for-like figure."""
    images = torch.cat([load_split(root, s).images for s in splits])
    return images.unsqueeze(1).float().div(255) if as_float else images


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("data/bench-lymphosim"))
    ap.add_argument("--n-train", type=int, default=64_000)
    ap.add_argument("--n-test", type=int, default=16_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/data_loading.json"))
    args = ap.parse_args()

    # Simulator throughput: the full-size set, timed end to end (render + write).
    t0 = time.perf_counter()
    write_lymphomnist(args.root, n_train=args.n_train, n_test=args.n_test, seed=0, preset="default")
    synth_s = time.perf_counter() - t0
    n_total = args.n_train + args.n_test
    n_of = {"train": args.n_train, "test": args.n_test}

    raw = args.root / "LymphoMNIST" / "raw"
    files = {"train": ("train",), "test": ("val", "test")}  # val+test = the official test file
    results: dict[str, dict[str, float]] = {}
    for split, ours_splits in files.items():
        # Interleaved repeats, median: both paths see the same warm page cache and load.
        t_orig, t_u8, t_f32 = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            a = original_per_item(raw, split)
            t_orig.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = ours(args.root, ours_splits, as_float=False)
            t_u8.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            c = ours(args.root, ours_splits, as_float=True)
            t_f32.append(time.perf_counter() - t0)
            assert a.shape[0] == b.shape[0] == c.shape[0], (a.shape, b.shape, c.shape)
            del a, b, c
        med = {k: float(np.median(v)) for k, v in (("original_s", t_orig), ("ours_uint8_s", t_u8), ("ours_float_s", t_f32))}
        results[split] = {"n": n_of[split], **med, "ratio_uint8": med["original_s"] / med["ours_uint8_s"], "ratio_float": med["original_s"] / med["ours_float_s"]}

    total = {k: sum(r[k] for r in results.values()) for k in ("original_s", "ours_uint8_s", "ours_float_s")}
    report = {
        "data": {"source": "simulated", **read_provenance(args.root)},
        "command": "python " + " ".join(sys.argv),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "threads": torch.get_num_threads()},
        "synth": {"n_images": n_total, "seconds": synth_s, "images_per_s": n_total / synth_s},
        "loading": results,
        "loading_total": {
            "n": n_total,
            **total,
            "ratio_uint8": total["original_s"] / total["ours_uint8_s"],
            "ratio_float": total["original_s"] / total["ours_float_s"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from lymphosort.atomic import write_text_atomic  # a killed run leaves no half file
    write_text_atomic(args.out, json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
