"""``ImageSetService`` RPCs: protobuf to domain objects and back, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
from grpc import aio

from camserve.v1 import imagesets_pb2 as pb
from camserve.v1 import imagesets_pb2_grpc

from ..errors import InvalidArgument
from .index_messages import IncomingImage, IndexChunk, IndexProgress, Outcome
from .map_query import MapAnswer
from .neighbour_query import NeighboursAnswer
from .query_arguments import ShownMember
from .records import SetInfo
from .service import ImageSetService
from .top_query import TopActivatingAnswer

_STATUS = {
    "indexed": pb.INDEX_STATUS_INDEXED,
    "skipped": pb.INDEX_STATUS_SKIPPED,
    "failed": pb.INDEX_STATUS_FAILED,
}
_SPACE_OF = {"features": pb.NEIGHBOUR_SPACE_FEATURES, "pixels": pb.NEIGHBOUR_SPACE_PIXELS}
_SPACES = {pb.NEIGHBOUR_SPACE_UNSPECIFIED: "features", **{v: k for k, v in _SPACE_OF.items()}}
_PROJECTION_OF = {"pca": pb.PROJECTION_METHOD_PCA, "tsne": pb.PROJECTION_METHOD_TSNE}
_PROJECTIONS = {
    pb.PROJECTION_METHOD_UNSPECIFIED: "pca",
    **{v: k for k, v in _PROJECTION_OF.items()},
}


def set_info(info: SetInfo) -> pb.ImageSetInfo:
    """A ``SetInfo`` as an ``ImageSetInfo``."""
    return pb.ImageSetInfo(
        name=info.name,
        model=info.model,
        layers=list(info.layers),
        embedding_layer=info.embedding_layer,
        size=info.size,
        bytes_used=info.bytes_used,
        created=info.created,
        max_images=info.max_images,
        max_bytes=info.max_bytes,
    )


def index_chunk(request: pb.IndexImagesRequest) -> IndexChunk:
    """One ``IndexImagesRequest`` as a domain chunk."""
    return IndexChunk(
        set=request.set,
        model=request.model,
        layers=tuple(request.layers),
        embedding_layer=request.embedding_layer,
        images=tuple(IncomingImage(id=i.id, encoded=i.encoded) for i in request.images),
    )


def _outcome(outcome: Outcome) -> pb.IndexOutcome:
    code = getattr(grpc.StatusCode, outcome.code, grpc.StatusCode.UNKNOWN) if outcome.code else None
    return pb.IndexOutcome(
        id=outcome.id,
        status=_STATUS[outcome.status],
        code=code.value[0] if code is not None else 0,
        reason=outcome.reason,
        existing_id=outcome.existing_id,
    )


def progress_reply(progress: IndexProgress) -> pb.IndexImagesResponse:
    """A progress report as an ``IndexImagesResponse``."""
    reply = pb.IndexImagesResponse(
        outcomes=[_outcome(o) for o in progress.outcomes],
        received=progress.received,
        indexed=progress.indexed,
        skipped=progress.skipped,
        failed=progress.failed,
        done=progress.done,
    )
    if progress.info is not None:
        reply.set.CopyFrom(set_info(progress.info))
    return reply


def _shown(member: ShownMember) -> dict[str, Any]:
    """The fields every shown member carries, as keywords of its protobuf message."""
    return {
        "id": member.id,
        "predicted": member.predicted,
        "label": member.label,
        "thumbnail": member.thumbnail,
    }


def top_reply(answer: TopActivatingAnswer) -> pb.TopActivatingResponse:
    """A ``TopActivatingAnswer`` as a ``TopActivatingResponse``."""
    return pb.TopActivatingResponse(
        layer=answer.layer,
        channel=answer.channel,
        channels=answer.channels,
        receptive_field=list(answer.receptive_field),
        items=[
            pb.ActivatingPatch(
                id=item.id,
                activation=item.activation,
                row=item.position[0],
                col=item.position[1],
                box=list(item.box),
                patch=item.patch,
                predicted=item.predicted,
                label=item.label,
            )
            for item in answer.items
        ],
    )


def neighbours_reply(answer: NeighboursAnswer) -> pb.NearestNeighboursResponse:
    """A ``NeighboursAnswer`` as a ``NearestNeighboursResponse``."""
    return pb.NearestNeighboursResponse(
        space=_SPACE_OF[answer.space],
        query_predicted=answer.query_predicted,
        query_label=answer.query_label,
        neighbours=[pb.Neighbour(distance=n.distance, **_shown(n)) for n in answer.neighbours],
    )


def map_reply(answer: MapAnswer) -> pb.EmbeddingMapResponse:
    """A ``MapAnswer`` as a ``EmbeddingMapResponse``."""
    return pb.EmbeddingMapResponse(
        method=_PROJECTION_OF[answer.method],
        projected=answer.projected,
        points=[pb.MapPoint(x=p.xy[0], y=p.xy[1], **_shown(p)) for p in answer.points],
    )


def _enum(table: Mapping[Any, str], value: int, what: str) -> str:
    if value not in table:
        raise InvalidArgument(f"unknown {what} {value}")
    return table[value]


class ImageSetServicer(imagesets_pb2_grpc.ImageSetServiceServicer):  # type: ignore[misc,unused-ignore]
    """The RPC surface of ``ImageSetService``."""

    def __init__(self, service: ImageSetService) -> None:
        self.service = service

    async def IndexImages(
        self, requests: AsyncIterator[pb.IndexImagesRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.IndexImagesResponse]:
        async def chunks() -> AsyncIterator[IndexChunk]:
            async for request in requests:
                yield index_chunk(request)

        async for progress in self.service.index(chunks()):
            yield progress_reply(progress)

    async def TopActivating(
        self, request: pb.TopActivatingRequest, context: aio.ServicerContext
    ) -> pb.TopActivatingResponse:
        answer = await self.service.top_activating(
            request.set, request.layer, request.channel, request.k
        )
        return top_reply(answer)

    async def NearestNeighbours(
        self, request: pb.NearestNeighboursRequest, context: aio.ServicerContext
    ) -> pb.NearestNeighboursResponse:
        which = request.WhichOneof("query")
        answer = await self.service.neighbours(
            request.set,
            image=request.image if which == "image" else None,
            member_id=request.id if which == "id" else None,
            k=request.k,
            space=_enum(_SPACES, request.space, "neighbour space"),
            thumbnail_size=request.thumbnail_size,
        )
        return neighbours_reply(answer)

    async def EmbeddingMap(
        self, request: pb.EmbeddingMapRequest, context: aio.ServicerContext
    ) -> pb.EmbeddingMapResponse:
        answer = await self.service.embedding_map(
            request.set,
            method=_enum(_PROJECTIONS, request.method, "projection method"),
            seed=request.seed,
            max_points=request.max_points,
            thumbnail_size=request.thumbnail_size,
        )
        return map_reply(answer)

    async def ListSets(
        self, request: pb.ListSetsRequest, context: aio.ServicerContext
    ) -> pb.ListSetsResponse:
        return pb.ListSetsResponse(sets=[set_info(i) for i in await self.service.list_sets()])

    async def DescribeSet(
        self, request: pb.DescribeSetRequest, context: aio.ServicerContext
    ) -> pb.ImageSetInfo:
        return set_info(await self.service.describe(request.set))

    async def DeleteSet(
        self, request: pb.DeleteSetRequest, context: aio.ServicerContext
    ) -> pb.DeleteSetResponse:
        info, freed = await self.service.delete(request.set)
        return pb.DeleteSetResponse(set=info.name, bytes_freed=freed, members=info.size)


__all__ = ["ImageSetServicer"]
