"""Typed, validated method options: every method declares its options with defaults."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgument, choices

OptionValue = int | float | str | bool | tuple[int, int]


@dataclass(frozen=True)
class Option:
    """One named option: its default, a one-line help, and a parser that validates."""

    name: str
    default: OptionValue | None
    help: str
    parse: Callable[[str, Any], OptionValue]


def parse_options(
    method_id: str, declared: tuple[Option, ...], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Return every declared option, given values validated, others at their defaults."""
    known = {option.name: option for option in declared}
    unknown = sorted(set(given or {}) - set(known))
    if unknown:
        valid = choices(known) if known else "none"
        raise InvalidArgument(
            f"unknown option(s) {', '.join(unknown)} for method {method_id!r}; "
            f"valid options: {valid}"
        )
    values: dict[str, Any] = {}
    for name, option in known.items():
        if given is not None and name in given:
            values[name] = option.parse(name, given[name])
        else:
            values[name] = option.default
    return values


def int_in(low: int, high: int) -> Callable[[str, Any], OptionValue]:
    """Parser for an integer in [low, high]."""

    def parse(name: str, value: Any) -> OptionValue:
        number = _number(name, value)
        if number != int(number) or not low <= number <= high:
            raise InvalidArgument(
                f"option {name} must be an integer in [{low}, {high}], got {value!r}"
            )
        return int(number)

    return parse


def float_in(low: float, high: float) -> Callable[[str, Any], OptionValue]:
    """Parser for a finite number in [low, high]."""

    def parse(name: str, value: Any) -> OptionValue:
        number = _number(name, value)
        if not low <= number <= high:
            raise InvalidArgument(f"option {name} must be in [{low}, {high}], got {value!r}")
        return float(number)

    return parse


def pair_in(low: int, high: int) -> Callable[[str, Any], OptionValue]:
    """Parser for an int or an ``[h, w]`` pair of ints in [low, high]."""
    single = int_in(low, high)

    def parse(name: str, value: Any) -> OptionValue:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise InvalidArgument(f"option {name} must be an integer or [h, w], got {value!r}")
            return (int(single(name, value[0])), int(single(name, value[1])))  # type: ignore[arg-type]
        side = int(single(name, value))  # type: ignore[arg-type]
        return (side, side)

    return parse


def flag(name: str, value: Any) -> OptionValue:
    """Parser for a boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    raise InvalidArgument(f"option {name} must be true or false, got {value!r}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidArgument(f"option {name} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidArgument(f"option {name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise InvalidArgument(f"option {name} must be finite, got {value!r}")
    return number
