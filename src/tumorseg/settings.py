"""Typed settings from plain data: dataclass defaults, checked mappings, one flag per key.

The model's config (what a network is) and the training config (how it is trained) are both
dataclasses of plain values; this module turns YAML mappings and command-line flags into them
and names the key whenever a value is wrong.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, field, fields

from tumorseg.errors import TumorsegError


def option(default: object, help: str, flag: bool = True) -> object:
    """A dataclass field with a default and the help text its command-line flag shows."""
    metadata = {"help": help, "flag": flag}
    if isinstance(default, list | tuple):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def default_of(spec: Field) -> object:
    return spec.default if spec.default is not MISSING else spec.default_factory()


def keys(cls: type) -> dict[str, Field]:
    """The settings of a dataclass: its fields that carry a help text."""
    return {f.name: f for f in fields(cls) if "help" in f.metadata}


def coerce(spec: Field, value: object, where: str) -> object:
    """``value`` as the type of the field's default, or an error naming the key."""
    kind, key = type(default_of(spec)), spec.name
    if kind is bool:
        if not isinstance(value, bool):
            raise TumorsegError(f"{where}: {key} must be true or false, not {value!r}")
        return value
    if kind is list:
        if not isinstance(value, list | tuple):
            raise TumorsegError(f"{where}: {key} must be a list, not {value!r}")
        item = type(default_of(spec)[0])
        try:
            return [item(v) for v in value]
        except (TypeError, ValueError) as err:
            raise TumorsegError(f"{where}: {key} must be a list of {item.__name__}, not {value!r}") from err
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError) as err:
        raise TumorsegError(f"{where}: {key} must be {kind.__name__}, not {value!r}") from err


def unknown_key(key: str, known: dict, where: str) -> TumorsegError:
    close = [k for k in known if key.replace("-", "_") == k]
    hint = f" (did you mean {close[0]}?)" if close else ""
    return TumorsegError(f"{where}: unknown config key {key!r}{hint}")


def merged(cls: type, values: dict, where: str, base: object | None = None) -> dict:
    """The keyword arguments of ``cls``: ``base`` (or the defaults) updated with checked ``values``."""
    known = keys(cls)
    result = {name: getattr(base, name) if base else default_of(spec) for name, spec in known.items()}
    for key, value in values.items():
        if key not in known:
            raise unknown_key(key, known, where)
        result[key] = coerce(known[key], value, where)
    return result


def check(checks: list[tuple[bool, str, str]], values: object, where: str) -> None:
    """Raise for the first (ok, key, expected) whose ok is false, naming the key and its value."""
    for ok, key, expected in checks:
        if not ok:
            raise TumorsegError(
                f"{where}: {key} = {getattr(values, key)!r} is out of range (expected {expected})"
            )


def add_flags(group: argparse._ArgumentGroup, cls: type, flag_names: dict[str, str] | None = None) -> None:
    """One flag per setting (--batch-size, --amp/--no-amp, ...); a flag not given stays unset."""
    for name, spec in keys(cls).items():
        if not spec.metadata["flag"]:
            continue
        flag = "--" + (flag_names or {}).get(name, name).replace("_", "-")
        default = default_of(spec)
        help_text = f"{spec.metadata['help']} (default {default})"
        if isinstance(default, bool):
            group.add_argument(
                flag,
                dest=name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif isinstance(default, list):
            group.add_argument(
                flag, dest=name, type=type(default[0]), nargs="+", default=argparse.SUPPRESS, help=help_text,
                metavar="N" if isinstance(default[0], int) else "NAME",
            )  # fmt: skip
        else:
            group.add_argument(flag, dest=name, type=type(default), default=argparse.SUPPRESS, help=help_text)
