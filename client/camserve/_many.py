"""The bookkeeping of one ``explain_many`` call, shared by the blocking and asyncio clients.

The clients move messages; this class decides what to send next (never more
than ``concurrency`` requests outstanding), files each reply under its input's
position, reports progress, and decides when an error ends the call.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from camserve._inputs import batch_item
from camserve.errors import CamserveError, InternalError, InvalidArgumentError, from_status
from camserve.results import Explanation, explanation
from camserve.v1 import explain_pb2 as pb

Progress: TypeAlias = Callable[[int, int], object]
"""Called as ``progress(done, total)`` after each item completes (or fails)."""
Outcome: TypeAlias = Explanation | CamserveError


class ManyRun:
    """One batch of images explained over ``ExplainStream``; results kept in input order."""

    def __init__(
        self,
        items: Iterable[Any],
        template: pb.ExplainRequest,
        *,
        concurrency: int,
        raise_errors: bool,
        progress: Progress | None,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidArgumentError(
                f"concurrency must be a positive integer, got {concurrency!r}"
            )
        self.items = list(items)
        self.total = len(self.items)
        self.template = template
        self.concurrency = concurrency
        self.raise_errors = raise_errors
        self.progress = progress
        self.results: list[Outcome | None] = [None] * self.total
        self.outstanding = 0
        self.done = 0
        self._next = 0

    @property
    def exhausted(self) -> bool:
        """Whether every item has been sent (or failed before sending)."""
        return self._next >= self.total

    def deadline(self, per_call: float | None) -> float | None:
        """The stream's deadline: ``per_call`` seconds for each wave of ``concurrency`` items."""
        if per_call is None:
            return None
        return per_call * max(1, math.ceil(self.total / self.concurrency))

    def next_requests(self) -> list[pb.ExplainRequest]:
        """Requests to send now, up to ``concurrency`` outstanding; items failing locally are
        recorded (or raised, with ``raise_errors``)."""
        batch: list[pb.ExplainRequest] = []
        while self.outstanding + len(batch) < self.concurrency and not self.exhausted:
            index = self._next
            self._next += 1
            try:
                batch.append(batch_item(self.template, self.items[index], str(index)))
            except CamserveError as exc:
                self._record(index, exc)
        self.outstanding += len(batch)
        return batch

    def on_reply(self, reply: pb.ExplainStreamResponse) -> None:
        """File one reply under its item."""
        try:
            index = int(reply.request_id)
        except ValueError:
            index = -1
        if not 0 <= index < self.total or self.results[index] is not None:
            raise InternalError(f"the server answered an unknown request {reply.request_id!r}")
        self.outstanding -= 1
        if reply.WhichOneof("result") == "response":
            self._record(index, explanation(reply.response))
        else:
            self._record(index, from_status(reply.error.code, reply.error.message))

    def finish(self, stream_error: CamserveError | None) -> list[Outcome]:
        """The results in input order; items left unanswered get ``stream_error``."""
        missing = [i for i, result in enumerate(self.results) if result is None]
        if missing:
            error = stream_error or InternalError("the stream ended before every item was answered")
            if self.raise_errors:
                raise error
            for index in missing:
                self._record(index, type(error)(error.details, error.code))
        return [result for result in self.results if result is not None]

    def _record(self, index: int, outcome: Outcome) -> None:
        if isinstance(outcome, CamserveError):
            outcome.index = index
            if self.raise_errors:
                raise outcome
        self.results[index] = outcome
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


__all__ = ["ManyRun", "Outcome", "Progress"]
