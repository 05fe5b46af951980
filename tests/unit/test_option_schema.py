"""The one option schema: types read from defaults, validation messages naming what is
valid, defaults filled, and every declared method and job option consistent."""

from __future__ import annotations

from typing import Any

import pytest

from camserve_server.errors import InvalidArgument
from camserve_server.jobs import JOB_METHODS
from camserve_server.methods import METHODS
from camserve_server.options import Option, parse_options

STEPS = Option("steps", 50, "quadrature points", minimum=1, maximum=1000)
EPSILON = Option("epsilon", 0.03, "budget", minimum=0.0, maximum=1.0)
NORMALIZE = Option("normalize", False, "L2-normalise")
ATTACK = Option("attack", "pgd", "the attack", choices=("pgd", "fgsm"))
LAYERS = Option("layers", "", "style layers")
WINDOW = Option("window", (32, 32), "window size", minimum=1, maximum=4096)


def test_the_default_gives_the_type() -> None:
    kinds = [option.kind for option in (STEPS, EPSILON, NORMALIZE, ATTACK, LAYERS, WINDOW)]
    assert kinds == ["integer", "number", "flag", "text", "text", "pair"]


@pytest.mark.parametrize(
    ("option", "given", "parsed"),
    [
        (STEPS, 7, 7),
        (STEPS, 7.0, 7),
        (STEPS, "12", 12),
        (EPSILON, 0.5, 0.5),
        (EPSILON, "8/255", 8 / 255),
        (EPSILON, 1, 1.0),
        (NORMALIZE, True, True),
        (NORMALIZE, "false", False),
        (NORMALIZE, 1, True),
        (NORMALIZE, 0.0, False),
        (NORMALIZE, "yes", True),
        (ATTACK, "fgsm", "fgsm"),
        (LAYERS, "a,b", "a,b"),
        (WINDOW, 8, (8, 8)),
        (WINDOW, [4, 6], (4, 6)),
        (WINDOW, (4.0, 6), (4, 6)),
    ],
)
def test_a_valid_value_is_parsed_to_the_options_type(
    option: Option, given: Any, parsed: object
) -> None:
    value = option.parse(given)
    assert value == pytest.approx(parsed) if isinstance(parsed, float) else value == parsed
    assert type(value) is type(parsed)


@pytest.mark.parametrize(
    ("option", "given", "message"),
    [
        (STEPS, 2.5, r"option steps must be an integer in \[1, 1000\], got 2.5"),
        (STEPS, 0, r"option steps must be in \[1, 1000\], got 0"),
        (STEPS, True, r"option steps must be a number, got True"),
        (STEPS, "abc", r"option steps must be a number"),
        (STEPS, [1], r"option steps must be a number"),
        (STEPS, float("nan"), r"option steps must be finite"),
        (EPSILON, "1/0", r"option epsilon must be a number"),
        (EPSILON, "inf", r"option epsilon must be finite"),
        (EPSILON, 1.5, r"option epsilon must be in \[0, 1\], got 1.5"),
        (NORMALIZE, "maybe", r"option normalize must be true or false, got 'maybe'"),
        (NORMALIZE, 2, r"option normalize must be true or false"),
        (ATTACK, "cw", r"option attack must be one of pgd, fgsm, got 'cw'"),
        (WINDOW, [1, 2, 3], r"option window must be an integer or \[h, w\], got \[1, 2, 3\]"),
        (WINDOW, [0, 4], r"option window must be in \[1, 4096\], got 0"),
        (WINDOW, -2, r"option window must be in \[1, 4096\], got -2"),
    ],
)
def test_an_invalid_value_says_what_is_valid(option: Option, given: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        option.parse(given)


def test_the_description_is_the_help_then_the_valid_values() -> None:
    assert STEPS.description == "quadrature points; an integer in [1, 1000]"
    assert Option("lr", 0.05, "rate", minimum=1e-6, maximum=10.0).description == (
        "rate; a number in [1e-06, 10]"
    )
    assert NORMALIZE.description == "L2-normalise; true or false"
    assert ATTACK.description == "the attack; one of pgd, fgsm"
    assert LAYERS.description == "style layers"
    assert WINDOW.description == "window size; an integer or [h, w], each in [1, 4096]"
    assert Option("shift", 0.0, "any shift").description == "any shift; a number"


def test_parse_options_fills_the_defaults_and_parses_the_given() -> None:
    parsed = parse_options("m", (STEPS, NORMALIZE, WINDOW), {"steps": "3", "window": 5})
    assert parsed == {"steps": 3, "normalize": False, "window": (5, 5)}
    assert parse_options("m", (STEPS,), None) == {"steps": 50}


def test_parse_options_refuses_unknown_names_listing_the_valid_ones() -> None:
    with pytest.raises(
        InvalidArgument,
        match=r"unknown option\(s\) a, b for method 'm'; valid options: steps, normalize",
    ):
        parse_options("m", (STEPS, NORMALIZE), {"b": 1, "a": 2, "steps": 3})
    with pytest.raises(InvalidArgument, match="valid options: none"):
        parse_options("m", (), {"steps": 1})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"default": 0, "minimum": 1, "maximum": 4}, r"must be in \[1, 4\]"),
        ({"default": (0, 2), "minimum": 1}, r"must be in \[1, inf\]"),
        ({"default": 1.0, "choices": ("a",)}, "only a text option has choices"),
        ({"default": "c", "choices": ("a", "b")}, "is not a choice"),
        ({"default": "a", "maximum": 3}, "only a numeric option has bounds"),
        ({"default": True, "minimum": 0}, "only a numeric option has bounds"),
    ],
)
def test_a_wrong_declaration_fails_at_once(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Option("x", help="", **fields)


DECLARED = [
    (f"{kind}:{owner.id}", owner.options)
    for kind, registry in (("method", METHODS), ("job", JOB_METHODS))
    for owner in registry.values()
]


@pytest.mark.parametrize(("owner", "options"), DECLARED, ids=[owner for owner, _ in DECLARED])
def test_every_declared_option_is_named_once_helped_and_its_default_valid(
    owner: str, options: tuple[Option, ...]
) -> None:
    names = [option.name for option in options]
    assert len(names) == len(set(names)), owner
    for option in options:
        assert option.help and "\n" not in option.help
        assert option.parse(option.default) == option.default
