"""Tiny, separable data for the training tests (built in memory, no files)."""

from __future__ import annotations

import torch

from lymphosort.data.lymphomnist import SplitData


def toy_split(n: int, seed: int, split: str = "train", imbalance: float = 0.5) -> SplitData:
    """Class 1 has a bright disc in the centre, class 0 a dark one, on noisy mid-grey."""
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, generator=g) < imbalance).long()
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 14**2).float()
    base = 128 + 20 * torch.randn(n, 64, 64, generator=g)
    level = torch.where(labels == 1, 90.0, -90.0)[:, None, None]
    images = (base + level * disc).clamp(0, 255).to(torch.uint8)
    return SplitData(
        images=images,
        labels=labels,
        classes=("B", "T"),
        task="t4-vs-b",
        split=split,
        split_id="toy-split",
        provenance={"source": "simulated", "preset": "toy", "seed": seed},
    )
