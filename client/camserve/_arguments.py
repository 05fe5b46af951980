"""What the CLI's command modules share: the handler and registration types, and number
arguments checked by argparse."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from camserve.client import ExplainClient

Handler = Callable[[argparse.Namespace, ExplainClient], int]
"""A command: parsed arguments and a connected client in, exit code out."""
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]
"""``command(name, handler, help)``: adds a command; its parser comes back for the flags."""

Number = TypeVar("Number", int, float)


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

__all__ = ["AddCommand", "Handler", "checked", "count", "positive", "unit"]
