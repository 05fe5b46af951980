"""Typed, validated options: one schema for explanation methods and optimisation jobs.

Each method declares its options as ``Option``s. An option's default gives its type
(bool, int, float, str, or an int-or-``[h, w]`` pair of ints); its bounds or choices
give its valid values. ``parse_options`` checks a request's options against the
declarations and fills in the defaults; ``ListMethods`` and ``ListJobMethods`` list
the same declarations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal

from .config import parse_flag
from .errors import InvalidArgument, choices

OptionValue = bool | int | float | str | tuple[int, int]
OptionKind = Literal["flag", "integer", "number", "text", "pair"]


@dataclass(frozen=True)
class Option:
    """One named option: a default whose type is the option's type, a one-line help, and
    its valid values: ``minimum`` and ``maximum`` for a number (each side of a pair),
    ``choices`` for text (empty: any text). A bound left at None is no bound."""

    name: str
    default: OptionValue
    help: str
    _: KW_ONLY
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.choices and self.kind != "text":
            raise ValueError(f"option {self.name}: only a text option has choices")
        if self.choices and self.default not in self.choices:
            raise ValueError(f"option {self.name}: default {self.default!r} is not a choice")
        bounded = self.minimum is not None or self.maximum is not None
        if bounded and self.kind not in ("integer", "number", "pair"):
            raise ValueError(f"option {self.name}: only a numeric option has bounds")
        if isinstance(self.default, tuple):
            if len(self.default) != 2 or not all(type(side) is int for side in self.default):
                raise ValueError(f"option {self.name}: a pair default is two integers")
            self.parse(list(self.default))
        elif bounded:
            self.parse(self.default)

    @property
    def kind(self) -> OptionKind:
        """The option's type, read from its default."""
        if isinstance(self.default, bool):
            return "flag"
        if isinstance(self.default, int):
            return "integer"
        if isinstance(self.default, float):
            return "number"
        if isinstance(self.default, str):
            return "text"
        return "pair"

    @property
    def allowed(self) -> str:
        """The valid values in words ("an integer in [1, 1000]"); empty for any text."""
        within = f" in {self.bounds}" if self.bounds else ""
        if self.kind == "flag":
            return "true or false"
        if self.kind == "text":
            return f"one of {choices(self.choices)}" if self.choices else ""
        if self.kind == "pair":
            return f"an integer or [h, w], each{within}"
        return ("an integer" if self.kind == "integer" else "a number") + within

    @property
    def bounds(self) -> str:
        """``[minimum, maximum]`` as text; empty when the option has neither bound."""
        if self.minimum is None and self.maximum is None:
            return ""
        return f"[{_bound(self.minimum, '-inf')}, {_bound(self.maximum, 'inf')}]"

    @property
    def description(self) -> str:
        """The help, then the valid values: what the option does and what it takes."""
        return f"{self.help}; {self.allowed}" if self.allowed else self.help

    def parse(self, value: Any) -> OptionValue:
        """``value`` as this option's type, or ``InvalidArgument`` saying what is valid."""
        if self.kind == "flag":
            if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1):
                return bool(value)
            return parse_flag(f"option {self.name}", value)
        if self.kind == "text":
            return self._text(value)
        if self.kind == "pair":
            return self._pair(value)
        if self.kind == "integer":
            return self._integer(value)
        return self._in_range(_finite_number(self.name, value), value)

    def _text(self, value: Any) -> str:
        text = str(value)
        if self.choices and text not in self.choices:
            raise InvalidArgument(
                f"option {self.name} must be one of {choices(self.choices)}, got {value!r}"
            )
        return text

    def _integer(self, value: Any) -> int:
        number = _finite_number(self.name, value)
        if number != int(number):
            within = f" in {self.bounds}" if self.bounds else ""
            raise InvalidArgument(f"option {self.name} must be an integer{within}, got {value!r}")
        return int(self._in_range(number, value))

    def _pair(self, value: Any) -> tuple[int, int]:
        if isinstance(value, list | tuple):
            if len(value) != 2:
                raise InvalidArgument(
                    f"option {self.name} must be an integer or [h, w], got {value!r}"
                )
            return (self._integer(value[0]), self._integer(value[1]))
        side = self._integer(value)
        return (side, side)

    def _in_range(self, number: float, value: Any) -> float:
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        if not low <= number <= high:
            raise InvalidArgument(f"option {self.name} must be in {self.bounds}, got {value!r}")
        return number


def parse_options(
    owner_id: str, declared: Sequence[Option], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Every declared option of method ``owner_id``: the given values parsed, the others
    at their defaults; an unknown name is ``InvalidArgument`` listing the valid ones."""
    known = {option.name: option for option in declared}
    given = given or {}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise InvalidArgument(
            f"unknown option(s) {', '.join(unknown)} for method {owner_id!r}; "
            f"valid options: {choices(known) if known else 'none'}"
        )
    return {
        name: option.parse(given[name]) if name in given else option.default
        for name, option in known.items()
    }


def _finite_number(name: str, value: Any) -> float:
    """A finite number from a number or its text; text may be a fraction ("8/255")."""
    if isinstance(value, bool):
        raise InvalidArgument(f"option {name} must be a number, got {value!r}")
    try:
        if isinstance(value, str) and "/" in value:
            numerator, _, denominator = value.partition("/")
            number = float(numerator) / float(denominator)
        else:
            number = float(value)
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        raise InvalidArgument(f"option {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidArgument(f"option {name} must be finite, got {value!r}")
    return number


def _bound(value: float | None, unbounded: str) -> str:
    if value is None:
        return unbounded
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
