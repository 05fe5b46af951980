"""What the CLI's command modules share: the handler and registration types, and the
argument parsers argparse calls (numbers, index ranges, fractions, ``name=value`` options)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, TypeVar

from camserve.client import ExplainClient

Handler = Callable[[argparse.Namespace, ExplainClient], int]
"""A command: parsed arguments and a connected client in, exit code out."""
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]
"""``command(name, handler, help)``: adds a command; its parser comes back for the flags."""

Number = TypeVar("Number", int, float)


class CommandError(Exception):
    """A failure to report as one line: bad paths, unknown model, method or option."""


MAX_INDICES = 1024  # the most channels or classes one argument may name


def checked(
    kind: type[Number], accept: Callable[[Number], bool], rule: str
) -> Callable[[str], Number]:
    """An argparse ``type``: text read as ``kind``, refused unless ``accept`` holds ("must
    be ``rule``")."""
    what = "an integer" if kind is int else "a number"

    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {rule}: {text!r}")
        return value

    return parse


positive = checked(float, lambda value: value > 0, "positive")
count = checked(int, lambda value: value >= 1, "at least 1")
unit = checked(float, lambda value: 0.0 <= value <= 1.0, "in [0, 1]")
percent = checked(float, lambda value: 0.0 <= value < 100.0, "in [0, 100)")


def parse_indices(text: str) -> list[int]:
    """``"0-15"``, ``"3"`` or ``"0,4,8-11"`` as a list of indices, in the order given."""
    indices: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, dash, last = part.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an index or range: {part!r}") from None
        if low < 0 or high < low:
            raise argparse.ArgumentTypeError(f"bad range {part!r}: need 0 <= first <= last")
        indices.extend(range(low, high + 1))
        if len(indices) > MAX_INDICES:
            raise argparse.ArgumentTypeError(f"at most {MAX_INDICES} indices")
    if not indices:
        raise argparse.ArgumentTypeError(f"no index in {text!r}")
    return indices


def parse_fraction(text: str) -> float:
    """A number, or a fraction such as ``8/255``."""
    numerator, slash, denominator = text.partition("/")
    try:
        value = float(numerator) / float(denominator) if slash else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or fraction: {text!r}") from None
    return value


def _number(text: str) -> int | float:
    value = parse_fraction(text)
    return int(value) if value.is_integer() and "." not in text else value


def parse_option(text: str) -> tuple[str, Any]:
    """``name=value``: a number where the value reads as one (``8/255`` too), a list of
    numbers for ``12,12``, true/false, else text."""
    name, equals, raw = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"options are name=value, got {text!r}")
    value: Any = raw.strip()
    if value.lower() in ("true", "false"):
        return name.strip(), value.lower() == "true"
    try:
        if "," in value:
            value = [_number(part.strip()) for part in value.split(",")]
        else:
            value = _number(value)
    except argparse.ArgumentTypeError:
        value = raw.strip()
    return name.strip(), value


__all__ = [
    "AddCommand",
    "CommandError",
    "Handler",
    "checked",
    "count",
    "parse_fraction",
    "parse_indices",
    "parse_option",
    "percent",
    "positive",
    "unit",
]
