"""A tiny classifier trained in seconds on LymphoSim crops: enough to wire the pipeline."""

from __future__ import annotations

from pathlib import Path

import torch


def train_tiny(run_dir: Path, *, n: int = 600, epochs: int = 4, seed: int = 0, model: str = "tiny-32",
               preset: str = "default") -> Path:
    """Train `model` on n t-vs-b LymphoSim crops (plain loop, Adam) and save a run folder."""
    from lymphosort.data.synth import render_crops
    from lymphosort.data.transforms import to_model_input
    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: OpenMP threads only spin against each other on a shared box
    try:
        return _train(run_dir, n, epochs, seed, model, preset)
    finally:
        torch.set_num_threads(threads)


def _train(run_dir: Path, n: int, epochs: int, seed: int, model: str, preset: str) -> Path:
    from lymphosort.data.synth import render_crops
    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint

    torch.manual_seed(seed)
    images, labels, _ = render_crops(n, seed=seed, preset=preset)
    y = torch.as_tensor((labels > 0).astype("int64"))  # t-vs-b: B=0, T4/T8=1
    net = create_model(model, num_classes=2)
    x = net.spec.prepare(torch.as_tensor(images))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(n, generator=g).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()
    card = ModelCard.from_model(net, task="t-vs-b", classes=["B", "T"],
                                data={"source": "simulated", "preset": preset, "seed": seed})
    save_checkpoint(run_dir, net, card)
    return run_dir
