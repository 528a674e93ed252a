"""One way to configure: every config is a frozen dataclass with a comment on each field.

``Config`` (a mixin) gives each of them a JSON round trip that refuses unknown fields and rebuilds
nested configs, and ``add_arguments`` / ``from_arguments`` turn any of them into command-line flags
whose help is the field's comment and whose default is shown, so a CLI never spells a field twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import io
import json
import tokenize
import types
import typing
from typing import Any, Iterable


class Config:
    """Mixin for frozen config dataclasses: ``to_dict``/``from_dict``/``to_json``/``from_json``."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; valid: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        values = {}
        for name, value in data.items():
            nested = _dataclass_type(hints.get(name))
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value)
            elif isinstance(value, list) and _is_tuple(hints.get(name)):
                value = tuple(value)  # JSON has no tuples
            values[name] = value
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


def _dataclass_type(hint) -> type | None:
    return hint if isinstance(hint, type) and dataclasses.is_dataclass(hint) and issubclass(hint, Config) else None


def _is_tuple(hint) -> bool:
    return hint is tuple or typing.get_origin(hint) is tuple


@functools.lru_cache(maxsize=None)
def field_comments(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field line in the class body: the field's documentation."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        names = {f.name for f in dataclasses.fields(klass)}
        lines = source.splitlines()
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type != tokenize.COMMENT:
                continue
            code = lines[tok.start[0] - 1][: tok.start[1]].strip()
            name = code.split(":", 1)[0].strip()
            if name in names and ":" in code:
                out[name] = tok.string.lstrip("#").strip()
    return out


def _scalar_type(hint):
    """The type argparse converts to, for a field annotation like ``int`` or ``str | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        return rest[0] if len(rest) == 1 else str
    return hint


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                  exclude: Iterable[str] = (), defaults: dict | None = None, required: Iterable[str] = ()) -> None:
    """One flag per field of config dataclass ``cls`` (nested configs flattened), help from the field's
    comment, default shown. ``exclude``: fields the command sets itself; ``defaults``: other defaults."""
    exclude, required, defaults = set(exclude), set(required), defaults or {}
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        nested = _dataclass_type(hints[f.name])
        if nested is not None:
            base = _default_of(f)
            nested_defaults = {**(base.to_dict() if base is not None else {}), **defaults}
            add_arguments(parser, nested, exclude=exclude, defaults=nested_defaults)
            continue
        default = defaults.get(f.name, _default_of(f))
        kind = _scalar_type(hints[f.name])
        help_text = comments.get(f.name, "").replace("%", "%%")  # argparse formats help: "59% distinct" is no "% d"
        flag = "--" + f.name.replace("_", "-")
        if kind is dict:
            raise TypeError(f"{cls.__name__}.{f.name} is a dict: give it a flag of its own and exclude it here")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default,
                                help=f"{help_text} (default: {default})")
        elif _is_tuple(kind):
            parser.add_argument(flag, dest=f.name, nargs="+", default=default, metavar="VALUE",
                                help=f"{help_text} (default: {' '.join(map(str, default or ())) or 'none'})")
        else:
            parser.add_argument(flag, dest=f.name, type=kind if kind in (int, float) else str,
                                default=default, required=f.name in required,
                                help=help_text + ("" if f.name in required else " (default: %(default)s)"))


def from_arguments(cls: type, args: argparse.Namespace, **fixed):
    """Build ``cls`` from the flags ``add_arguments`` made (``fixed`` fields are given directly)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in fixed:
            values[f.name] = fixed[f.name]
            continue
        nested = _dataclass_type(hints[f.name])
        if nested is not None:
            base = _default_of(f)  # its fields without a flag (sizes filled in from the data) keep their default
            keep = {g.name: getattr(base, g.name) for g in dataclasses.fields(nested)
                    if base is not None and not hasattr(args, g.name)}
            values[f.name] = from_arguments(nested, args, **{**keep, **fixed})
        elif hasattr(args, f.name):
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values)


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def parse_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from a command line, VALUE read as JSON when it parses (true, 8, "x"), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. precision=float32), got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value
