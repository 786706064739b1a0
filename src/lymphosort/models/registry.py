"""One registry for every network: a name maps to a factory plus the preprocessing it expects.

The `ModelSpec` (input size, normalisation) travels with the model object and into its
checkpoint, so training, evaluation and export never re-declare how pixels are prepared.

Normalisation: images are uint8, scaled to [0, 1], then `(x - mean) / std`. Every model here
uses mean 0.5 and std 0.25 (the crops are grey with a mid-grey background; this maps the
[0, 1] range to [-2, 2]). A factory may declare its own values at registration.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, TypeVar

from torch import nn

from lymphosort.errors import ConfigError

__all__ = [
    "DEFAULT_MEAN",
    "DEFAULT_STD",
    "ClassifierMixin",
    "ModelSpec",
    "RegisteredModel",
    "canonical_name",
    "create_model",
    "get_spec",
    "list_models",
    "register_alias",
    "register_model",
]

DEFAULT_MEAN: float = 0.5
DEFAULT_STD: float = 0.25

Kind = Literal["teacher", "student"]


@dataclass(frozen=True)
class ModelSpec:
    """What a model is and how its input must be prepared (grey, one channel)."""

    name: str
    input_size: int
    mean: float
    std: float
    num_classes: int
    kind: Kind
    #: field of view: side (native pixels) of the centred window cut from the 64x64 crop before the
    #: resize to `input_size`; None = the whole crop. A small field at native scale keeps the
    #: fine texture that shrinking the whole crop would blur away.
    fov: int | None = None
    #: keyword arguments given to `create_model` beyond `num_classes` (JSON-serialisable);
    #: `create_model(name, num_classes, **create_kwargs)` rebuilds the same architecture.
    create_kwargs: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def prepare(self, images: Any) -> Any:
        """uint8 / [0, 1] float images -> this model's normalised float input (`to_model_input`)."""
        from lymphosort.data.transforms import to_model_input

        return to_model_input(images, self.input_size, self.mean, self.std, fov=self.fov)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["create_kwargs"] = dict(self.create_kwargs)
        return d


@dataclass(frozen=True)
class RegisteredModel:
    """A registry entry: the factory and the defaults of the spec it produces."""

    name: str
    factory: Callable[..., nn.Module]
    input_size: int
    mean: float
    std: float
    kind: Kind
    description: str
    fov: int | None = None


_REGISTRY: dict[str, RegisteredModel] = {}
#: former names -> current names, so old run folders and commands still resolve
_ALIASES: dict[str, str] = {}

F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(
    name: str,
    *,
    input_size: int,
    mean: float = DEFAULT_MEAN,
    std: float = DEFAULT_STD,
    kind: Kind,
    fov: int | None = None,
) -> Callable[[F], F]:
    """Register `factory(num_classes, input_size, **kwargs) -> nn.Module` under `name`.

    The factory's docstring's first line becomes the entry's description.
    """
    if kind not in ("teacher", "student"):
        raise ConfigError(f"kind must be 'teacher' or 'student', not {kind!r}")

    def decorator(factory: F) -> F:
        if name in _REGISTRY:
            raise ConfigError(f"model {name!r} is already registered")
        doc = inspect.getdoc(factory) or ""
        _REGISTRY[name] = RegisteredModel(
            name=name,
            factory=factory,
            input_size=int(input_size),
            mean=float(mean),
            std=float(std),
            kind=kind,
            description=doc.splitlines()[0] if doc else "",
            fov=None if fov is None else int(fov),
        )
        return factory

    return decorator


def register_alias(former: str, current: str) -> None:
    """`former` (a renamed model's old name) now builds `current`."""
    if former in _REGISTRY:
        raise ConfigError(f"{former!r} is a registered model, not a former name")
    _ALIASES[former] = current


def canonical_name(name: str) -> str:
    """The current registered name of `name` (a former name resolves to it)."""
    return _ALIASES.get(name, name)


def list_models(kind: Kind | None = None) -> list[str]:
    """Registered names (sorted), optionally only teachers or only students (quantised twins
    `<student>-q<bits>` are students)."""
    return sorted(n for n, e in _REGISTRY.items() if kind is None or e.kind == kind)


def _entry(name: str) -> RegisteredModel:
    try:
        return _REGISTRY[canonical_name(name)]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(sorted(_REGISTRY))}") from None


def get_spec(name: str, num_classes: int = 2, **kwargs: Any) -> ModelSpec:
    """The spec `create_model(name, num_classes, **kwargs)` would attach, without building."""
    name = canonical_name(name)
    e = _entry(name)
    return ModelSpec(
        name=name,
        input_size=int(kwargs.get("input_size", e.input_size)),
        mean=float(kwargs.get("mean", e.mean)),
        std=float(kwargs.get("std", e.std)),
        num_classes=int(num_classes),
        kind=e.kind,
        fov=kwargs.get("fov", e.fov),
        create_kwargs=dict(kwargs),
    )


def create_model(name: str, num_classes: int = 2, **kwargs: Any) -> nn.Module:
    """Build a registered model with a fresh `num_classes`-way head; attach its `.spec`.

    `input_size`, `mean`, `std` and `fov` in `kwargs` override the registered defaults (the
    factory receives `input_size`; the others only change the spec). Other kwargs go to the factory.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    name = canonical_name(name)
    spec = get_spec(name, num_classes, **kwargs)
    factory_kwargs = {k: v for k, v in kwargs.items() if k not in ("input_size", "mean", "std", "fov")}
    try:
        model = _REGISTRY[name].factory(num_classes=num_classes, input_size=spec.input_size, **factory_kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad arguments for model {name!r}: {exc}") from None
    model.spec = spec
    return model


class ClassifierMixin:
    """The shared classifier interface (timm style) for every model in the registry.

    A subclass provides `forward_features(x) -> [N, F]` and a linear `head`; this mixin
    gives `forward` (logits, never softmax), `forward_head`, `reset_classifier` and
    `feature_modules`. Subclasses list the module paths useful for feature distillation in
    `FEATURE_MODULES` (paths as in `named_modules()`).
    """

    spec: ModelSpec
    head: nn.Linear
    FEATURE_MODULES: tuple[str, ...] = ()

    def forward_features(self, x: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, features: Any) -> Any:
        return self.head(features)

    def forward(self, x: Any) -> Any:
        return self.forward_head(self.forward_features(x))

    @property
    def num_features(self) -> int:
        return int(self.head.in_features)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one; the feature extractor is kept."""
        old = self.head
        self.head = nn.Linear(old.in_features, num_classes).to(device=old.weight.device, dtype=old.weight.dtype)
        if hasattr(self, "spec"):
            self.spec = dataclasses.replace(self.spec, num_classes=int(num_classes))

    def feature_modules(self) -> dict[str, nn.Module]:
        """Module path -> module, for hooks that capture intermediate features."""
        modules = dict(self.named_modules())  # type: ignore[attr-defined]
        return {p: modules[p] for p in self.FEATURE_MODULES}
