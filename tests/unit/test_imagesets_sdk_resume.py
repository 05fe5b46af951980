"""The SDK's resumption of a cut ``index`` stream, without a server: which images a new
stream sends, how outcomes add up across streams, and when the SDK gives up."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import grpc
import pytest

from camserve._resume import ResumePolicy, SentLedger
from camserve._sets import IndexRun
from camserve.errors import InvalidArgumentError
from camserve.v1 import imagesets_pb2 as pb


class _Cut(grpc.RpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def _counting(n: int, taken: list[int]) -> Iterator[int]:
    for i in range(n):
        taken.append(i)
        yield i


def test_the_ledger_takes_each_item_once_and_gives_back_the_unanswered() -> None:
    taken: list[int] = []
    ledger = SentLedger(_counting(5, taken))
    assert [ledger.get(i) for i in range(3)] == [0, 1, 2]
    ledger.acknowledge(2)
    assert ledger.acknowledged == 2 and ledger.unanswered == 1
    assert [ledger.get(i) for i in range(2, 6)] == [2, 3, 4, None]  # a new stream
    assert ledger.get(0) is None  # answered: only a stream already cut asks
    assert taken == [0, 1, 2, 3, 4]


def test_an_item_taken_by_a_cut_stream_is_kept_for_the_next() -> None:
    release, started = threading.Event(), threading.Event()

    def slow_source() -> Iterator[str]:
        yield "a"
        started.set()
        release.wait(5)
        yield "b"

    ledger = SentLedger(slow_source())
    assert ledger.get(0) == "a"
    stale: list[str | None] = []
    thread = threading.Thread(target=lambda: stale.append(ledger.get(1)))
    thread.start()  # the cut stream's request thread, waiting on the source
    assert started.wait(5)
    release.set()
    assert ledger.get(1) == "b"  # the next stream waits for it, then sends it
    thread.join(5)
    assert stale == ["b"] and ledger.get(2) is None and ledger.unanswered == 2


def _reply(
    statuses: list[pb.IndexStatus.ValueType], ids: list[str], *, done: bool = False
) -> pb.IndexImagesResponse:
    reply = pb.IndexImagesResponse(
        outcomes=[pb.IndexOutcome(id=i, status=s) for i, s in zip(ids, statuses, strict=True)],
        done=done,
    )
    if done:
        reply.set.CopyFrom(pb.ImageSetInfo(name="s", model="demo", size=len(ids)))
    return reply


def _images(run: IndexRun) -> list[str]:
    return [image.id for message in run.requests() for image in message.images]


def test_a_new_stream_sends_only_the_unanswered_and_counts_add_up() -> None:
    images = {f"m{i}": bytes([i]) * 8 for i in range(10)}
    progress: list[tuple[int, int]] = []
    run = IndexRun(
        "s",
        images,
        model="demo",
        layers=None,
        embedding_layer=None,
        progress=lambda done, total: progress.append((done, total)),
        chunk=4,
    )
    first = run.requests()
    sent = [image.id for image in next(first).images] + [image.id for image in next(first).images]
    assert sent == [f"m{i}" for i in range(8)]
    indexed, skipped = pb.INDEX_STATUS_INDEXED, pb.INDEX_STATUS_SKIPPED
    run.on_reply(_reply([indexed] * 3, ["m0", "m1", "m2"]))
    assert run.resume_delay(_Cut(grpc.StatusCode.UNAVAILABLE)) is not None
    assert _images(run) == [f"m{i}" for i in range(3, 10)]  # the unanswered, then the rest
    run.on_reply(_reply([skipped] + [indexed] * 6, [f"m{i}" for i in range(3, 10)]))
    run.on_reply(_reply([], [], done=True))
    result = run.finish()
    assert (result.indexed, result.skipped, result.failed, result.resumed) == (9, 1, 0, 1)
    assert [o.id for o in result.outcomes] == list(images)
    assert progress[-1] == (10, 10) and [d for d, _ in progress] == sorted(d for d, _ in progress)


def _one_image_run(policy: ResumePolicy) -> IndexRun:
    return IndexRun(
        "s",
        {"a": b"x"},
        model="demo",
        layers=None,
        embedding_layer=None,
        progress=None,
        policy=policy,
    )


def test_only_unavailable_is_resumed_and_only_so_often_without_an_answer() -> None:
    run = _one_image_run(ResumePolicy(max_idle=3, initial_backoff_s=0.01, max_backoff_s=0.05))
    run.requests()
    assert run.resume_delay(_Cut(grpc.StatusCode.INVALID_ARGUMENT)) is None
    delays = []
    for _ in range(3):
        run.requests()
        delays.append(run.resume_delay(_Cut(grpc.StatusCode.UNAVAILABLE)))
    assert all(d is not None and 0 < d <= 0.05 for d in delays)
    run.requests()
    assert run.resume_delay(_Cut(grpc.StatusCode.UNAVAILABLE)) is None  # a 4th in a row
    assert run.resumed == 3


def test_a_call_not_resumed_ends_its_progress_and_raises_the_sdk_error() -> None:
    ended: list[bool] = []
    run = _one_image_run(ResumePolicy(initial_backoff_s=0.01, max_backoff_s=0.05))
    run.close_progress = lambda: ended.append(True)
    run.requests()
    assert 0 < run.resume_or_raise(_Cut(grpc.StatusCode.UNAVAILABLE)) <= 0.05
    assert not ended
    with pytest.raises(InvalidArgumentError):
        run.resume_or_raise(_Cut(grpc.StatusCode.INVALID_ARGUMENT))
    assert ended == [True]


def test_no_resumption_past_the_deadline() -> None:
    run = _one_image_run(ResumePolicy(initial_backoff_s=1.0))
    assert run.time_left(0.05, None) == pytest.approx(0.05, abs=0.01)
    run.requests()
    assert run.resume_delay(_Cut(grpc.StatusCode.UNAVAILABLE)) is None
