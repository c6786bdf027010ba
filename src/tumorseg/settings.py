"""Typed settings from plain data: dataclass defaults, checked mappings, one flag per key.

The model's config (what a network is) and the training config (how it is trained) are both
dataclasses of plain values; this module turns YAML mappings and command-line flags into them
and names the key whenever a value is wrong. Values are checked, never coerced blindly: a
list of widths holds ints, a float is finite, and a message quotes the value cut short.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, Field, field, fields
from pathlib import Path

import yaml

from tumorseg.errors import TumorsegError, first_line, short

#: Longest list a setting takes (the widths of a deep network, a slice size).
MAX_LIST = 16


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


def plain(value: object, kind: type) -> bool:
    """Whether ``value`` reads as a ``kind``: an int for int (or a whole number), a finite number for
    float (PyYAML reads ``1e-3`` as the string "1e-3", so numeric strings count), a string for str."""
    if isinstance(value, bool):
        return kind is bool
    if kind in (int, float) and isinstance(value, str) and len(value) < 40:
        try:
            value = float(value)
        except ValueError:
            return False
    if kind is int:
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    if kind is str:  # a word or a number (``workers: auto`` or ``workers: 4``)
        return isinstance(value, str | int)
    return isinstance(value, kind)


def convert(value: object, kind: type) -> object:
    """A value that ``plain`` accepted, as ``kind``."""
    if kind is int:
        return int(float(value)) if isinstance(value, str) else int(value)
    return kind(value)  # str(4) is "4"


def coerce(spec: Field, value: object, where: str) -> object:
    """``value`` as the type of the field's default, or an error naming the key."""
    kind, key = type(default_of(spec)), spec.name
    if kind is bool:
        if not isinstance(value, bool):
            raise TumorsegError(f"{where}: {key} must be true or false, not {short(value)}")
        return value
    if kind is list:
        if not isinstance(value, list | tuple):
            raise TumorsegError(f"{where}: {key} must be a list, not {short(value)}")
        item = type(default_of(spec)[0])
        if len(value) > MAX_LIST or not all(plain(v, item) for v in value):
            raise TumorsegError(f"{where}: {key} must be a list of {item.__name__}, not {short(value)}")
        return [convert(v, item) for v in value]
    if not plain(value, kind):
        what = "a finite float" if kind is float else kind.__name__
        raise TumorsegError(f"{where}: {key} must be {what}, not {short(value)}")
    return convert(value, kind)


def unknown_key(key: object, known: dict, where: str) -> TumorsegError:
    close = [k for k in known if isinstance(key, str) and key.replace("-", "_") == k]
    hint = f" (did you mean {close[0]}?)" if close else ""
    return TumorsegError(f"{where}: unknown config key {short(key)}{hint}")


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
            value = short(getattr(values, key))
            raise TumorsegError(f"{where}: {key} = {value} is out of range (expected {expected})")


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


#: A config file is a few dozen lines; anything much larger is not one.
MAX_CONFIG_BYTES = 64 * 1024


class PlainLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: a config has no use for them, and nested aliases let a few
    hundred bytes stand for gigabytes."""

    def compose_node(self, parent, index):  # noqa: ANN001, ANN201 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: anchors and aliases are not allowed")
        return super().compose_node(parent, index)


def read_config(path: Path) -> dict:
    """The mapping a YAML config file holds (a recipe, or a run's config.yaml); a file too large,
    malformed, or with anchors is one TumorsegError naming it."""
    try:
        if Path(path).stat().st_size > MAX_CONFIG_BYTES:
            raise TumorsegError(f"{path}: larger than a config file can be ({MAX_CONFIG_BYTES // 1024} kB)")
        values = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=PlainLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError as err:
        raise TumorsegError(f"{path}: config file does not exist") from err
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise TumorsegError(f"{path}: not valid YAML ({first_line(err)})") from err
    except ValueError as err:  # Python reads no integer of over 4,300 digits
        raise TumorsegError(f"{path}: not valid YAML (holds an integer too long to read)") from err
    except (OSError, RecursionError) as err:
        raise TumorsegError(f"{path}: cannot read the config file ({first_line(err)})") from err
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise TumorsegError(f"{path}: a config file is a mapping of key: value")
    return values
