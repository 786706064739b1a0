"""Model registry, MONAI ResNet teachers and small FPGA-friendly students.

`create_model(name, num_classes=2, **kwargs)` builds any registered network with its
`.spec` (input size, normalisation); `list_models()` lists the names.
"""

from lymphosort.models.registry import (
    DEFAULT_MEAN,
    DEFAULT_STD,
    ClassifierMixin,
    ModelSpec,
    create_model,
    get_spec,
    list_models,
    register_model,
)

__all__ = [
    "DEFAULT_MEAN",
    "DEFAULT_STD",
    "ClassifierMixin",
    "ModelSpec",
    "create_model",
    "get_spec",
    "list_models",
    "register_model",
]
