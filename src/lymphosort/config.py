"""One config object per command: a dataclass is the single source of a command's defaults,
its CLI flags and its YAML file.

`add_config_flags` generates a flag per field (help from the field's `#:` comment, the default
from the dataclass), `resolve_config` layers class defaults < caller defaults < `--config FILE`
< given flags, and `save_config` writes the resolved object back as YAML. A config file is
data only (YAML safe loader or JSON): nothing in it is executed.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import shlex
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence, TypeVar

from lymphosort.errors import ConfigError

C = TypeVar("C")

__all__ = ["add_config_flags", "command_flags", "config_from_mapping", "field_docs", "given_fields", "load_config",
           "load_mapping", "resolve_config", "save_config", "to_mapping"]

_PREFIX = "cfg:"  # namespace attributes of generated flags (argparse accepts any dest string)
_NONE = "none"  # the flag value that unsets an optional field


def field_docs(cls: type) -> dict[str, str]:
    """Each field's documentation: its `#:` comment lines above, or its trailing `# ...` comment
    (base classes first, so a subclass may re-document a field)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            src = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        lines = src.splitlines()
        node = ast.parse(src).body[0]
        for stmt in getattr(node, "body", []):
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            above, i = [], stmt.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#:"):
                above.insert(0, lines[i].strip()[2:].strip())
                i -= 1
            line = lines[stmt.lineno - 1]
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            doc = " ".join(above) or trailing
            if doc:
                docs[stmt.target.id] = doc
    return docs


def _unwrap(tp: Any) -> tuple[tuple[Any, ...], bool]:
    """The member types of an annotation and whether None is one of them."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (tp,), False


def _base(tp: Any) -> Any:
    return typing.get_origin(tp) or tp


def _scalar(text: str, kinds: Sequence[Any], optional: bool) -> Any:
    if optional and text.strip().lower() == _NONE:
        return None
    for kind in kinds:
        kind = _base(kind)
        if kind is typing.Literal:
            continue
        try:
            if kind is bool:
                return _bool(text)
            if kind in (int, float, str):
                return kind(text)
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(f"{text!r} is not a {' or '.join(getattr(k, '__name__', str(k)) for k in kinds)}")


def _bool(text: str) -> bool:
    v = text.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _pair(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_text(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value) if value else "empty"
    return "none" if value is None else str(value)


def add_config_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                     aliases: Mapping[str, Sequence[str]] | None = None, skip: Collection[str] = (),
                     prefix: str = "", config_flag: bool = True) -> None:
    """A flag per field of dataclass `cls` (`--field-name`; nested dataclasses as `--outer.inner`),
    plus `--config FILE`. Unset flags leave no attribute, so they never override a file or a
    caller's default. Booleans get `--x/--no-x`; lists take comma-separated values; dicts take
    repeated KEY=VALUE (values read as YAML); optional fields take `none` to unset."""
    aliases = aliases or {}
    if config_flag:
        parser.add_argument("--config", default=None, metavar="FILE",
                            help=f"YAML/JSON file of {cls.__name__} fields (data only); flags override it")
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        path = prefix + f.name
        if f.name in skip or path in skip or not f.init:
            continue
        kinds, optional = _unwrap(hints[f.name])
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(kinds[0]):
            add_config_flags(parser, kinds[0], aliases=aliases, skip=skip, prefix=path + ".", config_flag=False)
            continue
        names = [_flag(path.replace(".", "_")), *aliases.get(path, ())]
        help_ = f"{docs.get(f.name, '')} (default {_default_text(default)})".strip().replace("%", "%%")
        kw: dict[str, Any] = {"dest": _PREFIX + path, "default": argparse.SUPPRESS, "help": help_}
        base = _base(kinds[0])
        if base is bool and not optional:
            kw["action"] = argparse.BooleanOptionalAction
        elif base in (list, tuple):
            item = (typing.get_args(kinds[0]) or (str,))[0]
            kw.update(metavar="A,B,...", type=lambda t, item=item, opt=optional: (
                None if opt and t.lower() == _NONE else [_scalar(v, (item,), False) for v in t.split(",") if v]))
        elif base is dict:
            kw.update(action="append", metavar="KEY=VALUE", type=lambda t, opt=optional: (
                None if opt and t.lower() == _NONE else _pair(t)))
        else:
            lit = [typing.get_args(k) for k in kinds if _base(k) is typing.Literal]
            if lit:
                kw["choices"] = lit[0]
            else:
                kw["type"] = lambda t, kinds=kinds, opt=optional: _scalar(t, kinds, opt)
                kw["metavar"] = {int: "N", float: "X"}.get(_base(kinds[0]), "TEXT")
        parser.add_argument(*names, **kw)


def given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The fields set by flags on the command line (dotted paths for nested fields); repeated
    KEY=VALUE flags merged into one mapping (a lone `none` unsets it)."""
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_PREFIX):
            continue
        if isinstance(value, list) and value and all(v is None or isinstance(v, tuple) for v in value):
            value = None if None in value else dict(value)
        out[dest[len(_PREFIX):]] = value
    return out


def load_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML/JSON file as a mapping (safe loaders only)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    import yaml

    try:
        data = json.loads(text) if path.suffix == ".json" else (yaml.safe_load(text) or {})
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"config {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of keys to values")
    return data


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'sim.seed': 1} -> {'sim': {'seed': 1}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *outer, last = key.split(".")
        node = out
        for part in outer:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, recursively for mappings."""
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def config_from_mapping(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
    """`cls(**data)` with nested dataclasses built from mappings and unknown keys refused."""
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                          f"known keys: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        kind = _unwrap(hints[key])[0][0]
        if dataclasses.is_dataclass(kind) and isinstance(value, Mapping):
            value = config_from_mapping(kind, value, where + key + ".")  # type: ignore[arg-type]
        elif _base(kind) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad config for {cls.__name__}: {exc}") from None


def to_mapping(cfg: Any) -> dict[str, Any]:
    """Plain data (dicts, lists, scalars) of a config object, for YAML and JSON."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def load_config(cls: type[C], path: str | Path, defaults: Mapping[str, Any] | None = None) -> C:
    return config_from_mapping(cls, _merge(defaults or {}, load_mapping(path)))


def resolve_config(cls: type[C], args: argparse.Namespace, defaults: Mapping[str, Any] | None = None,
                   base: Mapping[str, Any] | None = None) -> C:
    """The config a command runs with: class defaults < `defaults` (e.g. a teacher's task) <
    `base` (a saved run's config on resume) or `--config FILE` < flags given. Dict fields given
    by flags update the mapping below them instead of replacing it."""
    data = dict(defaults or {})
    if base is not None:
        data = _merge(data, base)
    elif getattr(args, "config", None):
        data = _merge(data, load_mapping(args.config))
    flags = _nest(given_fields(args))
    below = {**to_mapping(cls()), **data}
    for key, value in list(flags.items()):
        if isinstance(value, dict) and isinstance(below.get(key), dict) and not dataclasses.is_dataclass(
                _unwrap(typing.get_type_hints(cls)[key])[0][0]):
            flags[key] = {**below[key], **value}
    cfg = config_from_mapping(cls, _merge(data, flags))
    validate = getattr(cfg, "validate", None)
    return validate() if callable(validate) else cfg


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write `cfg` resolved, as YAML (JSON when the suffix is .json)."""
    from lymphosort.atomic import write_text_atomic

    path = Path(path)
    data = to_mapping(cfg)
    if path.suffix == ".json":
        return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    import yaml

    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=True))


def command_flags(cfg: Any, base: Any | None = None, prefix: str = "") -> list[str]:
    """The flags that turn `base` (default: the class defaults) into `cfg`: the command line a
    result table prints next to a run made from Python."""
    base = type(cfg)() if base is None else base
    out: list[str] = []
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        value, was = getattr(cfg, f.name), getattr(base, f.name)
        if value == was:
            continue
        name = _flag((prefix + f.name).replace(".", "_"))
        if dataclasses.is_dataclass(value):
            out += command_flags(value, was, prefix + f.name + ".")
        elif isinstance(value, bool):
            out.append(name if value else "--no-" + name[2:])
        elif value is None:
            out += [name, _NONE]
        elif isinstance(value, dict):
            for k, v in value.items():  # compact JSON, shell-quoted where needed: copy-paste safe
                out += [name, shlex.quote(f"{k}={json.dumps(v, separators=(',', ':')) if not isinstance(v, str) else v}")]
        elif isinstance(value, (list, tuple)):
            out += [name, ",".join(str(v) for v in value)]
        else:
            out += [name, str(value)]
    return out


def add_config_file(parser: argparse.ArgumentParser) -> None:
    """`--config FILE` for a command whose options are plain flags: the file's keys (the
    options' names, dashes or underscores) become the defaults, flags given still win.
    `apply_config_file` applies it after a first parse."""
    parser.add_argument("--config", dest="config_file", default=None, metavar="FILE",
                        help="YAML/JSON file of this command's options (data only); flags override it")
    parser.set_defaults(_config_parser=parser)


def apply_config_file(args: argparse.Namespace) -> bool:
    """Set the defaults of the parser that `add_config_file` marked from its `--config FILE`;
    True when the caller must parse again (unknown keys are refused)."""
    parser, path = getattr(args, "_config_parser", None), getattr(args, "config_file", None)
    if parser is None or not path:
        return False
    data = {str(k).replace("-", "_"): v for k, v in load_mapping(path).items()}
    known = {a.dest for a in parser._actions if a.dest not in ("help", "config_file")}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"config {path}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    parser.set_defaults(**data)
    return True
