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

# Registration is eager and happens here, so every importer of any lymphosort.models module
# sees the same list_models(): the import runs each module's @register_model decorators
# (quant registers the `<student>-q<bits>` twins; Brevitas itself loads only when one is built).
from lymphosort.models import quant, students, teachers  # noqa: E402,F401  (after registry)

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
