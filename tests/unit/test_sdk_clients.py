"""Both clients are made from one description of each method, no server: the same names,
signatures and documentation; coroutines on the asyncio side; each error class's default
status code; the CLI's checked number arguments."""

from __future__ import annotations

import argparse
import asyncio
import inspect

import grpc
import pytest

from camserve import AsyncExplainClient, ExplainClient, errors
from camserve._arguments import checked, count, positive, unit

PUBLIC = sorted(
    name
    for name, value in vars(ExplainClient).items()
    if not name.startswith("_") and callable(value) and name != "close"
)


def test_both_clients_have_every_method_with_one_signature_and_docstring() -> None:
    assert len(PUBLIC) == 20
    for name in PUBLIC:
        blocking, awaiting = getattr(ExplainClient, name), getattr(AsyncExplainClient, name)
        parameters = list(inspect.signature(blocking).parameters)
        assert inspect.signature(blocking) == inspect.signature(awaiting), name
        assert parameters[0] == "self" and "timeout" in parameters, name
        assert blocking.__doc__ and blocking.__doc__ == awaiting.__doc__, name
        assert blocking.__name__ == name


def test_asyncio_methods_are_coroutines_except_the_event_streams() -> None:
    for name in PUBLIC:
        expected = name not in ("visualize_events", "evaluate_events")
        assert inspect.iscoroutinefunction(getattr(AsyncExplainClient, name)) is expected, name
        assert not inspect.iscoroutinefunction(getattr(ExplainClient, name)), name


def test_a_bound_method_keeps_its_first_argument() -> None:
    client = ExplainClient("127.0.0.1:1")
    try:
        assert list(inspect.signature(client.explain).parameters)[:2] == ["image", "model"]
        with pytest.raises(errors.InvalidArgumentError, match="model is required"):
            client.explain(b"x", model="")
    finally:
        client.close()


def test_asyncio_arguments_are_checked_when_awaited() -> None:
    async def run() -> None:
        client = AsyncExplainClient("127.0.0.1:1")
        try:
            pending = client.top_activating("", None, 0)  # nothing is checked yet
            with pytest.raises(errors.InvalidArgumentError, match="set must be"):
                await pending
            events = client.visualize_events(method="", model="m")
            with pytest.raises(errors.InvalidArgumentError, match="method is required"):
                await events.__anext__()
        finally:
            await client.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("cls", "code"),
    [
        (errors.CamserveError, grpc.StatusCode.INTERNAL),
        (errors.InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
        (errors.OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
        (errors.DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
        (errors.UnauthenticatedError, grpc.StatusCode.UNAUTHENTICATED),
        (errors.ConflictError, grpc.StatusCode.ALREADY_EXISTS),
        (errors.InternalError, grpc.StatusCode.INTERNAL),
    ],
)
def test_each_error_class_has_its_default_code(
    cls: type[errors.CamserveError], code: grpc.StatusCode
) -> None:
    assert cls.default_code == code
    assert cls("why").code == code


def test_checked_number_arguments() -> None:
    assert positive("0.5") == 0.5 and count("3") == 3 and unit("1") == 1.0
    cases = [
        (positive, "x", "not a number: 'x'"),
        (positive, "0", "must be positive: '0'"),
        (positive, "nan", "must be positive: 'nan'"),
        (count, "1.5", "not an integer: '1.5'"),
        (count, "0", "must be at least 1: '0'"),
        (unit, "1.5", r"must be in \[0, 1\]: '1.5'"),
        (checked(int, lambda value: value <= 256, "at most 256"), "300", "must be at most 256"),
    ]
    for parse, text, message in cases:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(text)
