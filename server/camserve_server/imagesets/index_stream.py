"""An ``IndexImages`` stream: the set its first message names, then images as they arrive.

A reader task puts the incoming images on a bounded queue; the indexing loop takes what
is there, up to one batch, and never holds a batch back waiting for more, so a caller
that waits for progress before sending more is answered. Each batch's outcomes go back
as one progress report, and a last report carries the set's description.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from ..errors import InvalidArgument
from .batch_indexing import StreamCounts, index_images
from .context import ImageSetContext
from .index_messages import IncomingImage, IndexChunk, IndexProgress
from .records import SetInfo
from .set_management import open_set

MAX_IMAGES_PER_CALL_BATCH = 64


def batch_size(context: ImageSetContext) -> int:
    """Images per indexing batch: the server's batch size, at most ``MAX_IMAGES_PER_CALL_BATCH``."""
    return max(1, min(context.settings.max_batch_size, MAX_IMAGES_PER_CALL_BATCH))


async def index_stream(
    context: ImageSetContext, chunks: AsyncIterator[IndexChunk]
) -> AsyncGenerator[IndexProgress, None]:
    """Index a stream of images into the set its first message names.

    Each image's fate is reported; a failure of the store (Redis gone) ends the call
    with its status, and every record written before it stays written.
    """
    first = await anext(chunks, None)
    if first is None:
        raise InvalidArgument("the stream is empty: the first message must name the set")
    info = await open_set(context, first)
    loaded = context.set_model(info)
    size = batch_size(context)
    queue: asyncio.Queue[IncomingImage | None] = asyncio.Queue(maxsize=4 * size)
    counts = StreamCounts()

    async def read() -> None:
        for image in first.images:
            await queue.put(image)
        async for chunk in chunks:
            _check_followup(chunk, info)
            for image in chunk.images:
                await queue.put(image)
        await queue.put(None)

    reader = asyncio.create_task(read())
    try:
        finished = False
        while not finished:
            batch: list[IncomingImage] = []
            item = await _next_image(queue, reader)
            while item is not None:
                batch.append(item)
                if len(batch) >= size or queue.empty():
                    break
                item = queue.get_nowait()
            finished = item is None
            if batch:
                counts.received += len(batch)
                outcomes = await index_images(context, info, loaded, batch, counts)
                yield IndexProgress(
                    outcomes, counts.received, counts.indexed, counts.skipped, counts.failed
                )
        await reader
        final = await context.off_loop(context.store.get, info.name)
        yield IndexProgress(
            [],
            counts.received,
            counts.indexed,
            counts.skipped,
            counts.failed,
            done=True,
            info=final,
        )
    finally:
        reader.cancel()


async def _next_image(
    queue: asyncio.Queue[IncomingImage | None], reader: asyncio.Task[None]
) -> IncomingImage | None:
    """The next image; a reader that failed (a bad follow-up message) raises here."""
    getter = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
    if getter in done:
        return getter.result()
    getter.cancel()
    reader.result()  # raises the reader's error, if any
    return await queue.get()


def _check_followup(chunk: IndexChunk, info: SetInfo) -> None:
    if chunk.set and chunk.set != info.name:
        raise InvalidArgument(
            f"one IndexImages call indexes one set: got {chunk.set!r} after {info.name!r}"
        )
    if chunk.model and chunk.model != info.model:
        raise InvalidArgument(
            f"image set {info.name!r} is indexed with model {info.model!r}, not {chunk.model!r}"
        )


__all__ = ["MAX_IMAGES_PER_CALL_BATCH", "batch_size", "index_stream"]
