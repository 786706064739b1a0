"""A small QAT student saved as a run folder: the RTL flow's inputs in tests (fast to build)."""

from __future__ import annotations

from pathlib import Path


def small_qat_run(path: Path, bias_sd: float = 0.2) -> Path:
    """tiny-32-centre-q4 at an 8x8 view with random biases (so its logits vary with the crop)."""
    import torch

    from lymphosort.models import create_model
    from lymphosort.models.checkpoint import ModelCard, save_checkpoint

    torch.manual_seed(0)
    m = create_model("tiny-32-centre-q4", input_size=8, fov=8).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(getattr(mod, "bias", None), torch.nn.Parameter):
                mod.bias.normal_(0, bias_sd)
    return save_checkpoint(path, m, ModelCard.from_model(m, task="t4-vs-b", classes=["B", "T4"]))
