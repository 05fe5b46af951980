"""One incoming image made ready for indexing: its id and hash, decoded only when new.

The hash is looked up first: bytes the set already holds are not decoded again, so a
re-send costs one hash lookup. An image that cannot be used fails alone, as an
``Outcome`` with its status; the rest of its batch goes on.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

from ..errors import InvalidArgument
from ..models.loading import LoadedModel
from ..runtime.cache import image_key
from . import prepare
from .index_messages import IncomingImage, Outcome
from .records import SetInfo, check_member_id
from .store import SetStore

log = logging.getLogger(__name__)
UNUSABLE = "the image could not be prepared for the model"


class ReadyImage(NamedTuple):
    """An accepted image: its member id and hash, and either the decoded image (new bytes)
    or the id of the member already holding the same bytes."""

    member_id: str
    image_hash: str
    prepared: prepare.PreparedImage | None
    existing_id: str | None


def ready_image(
    store: SetStore, info: SetInfo, loaded: LoadedModel, image: IncomingImage, max_pixels: int
) -> Outcome | ReadyImage:
    """The image checked, hashed and (when the set lacks its bytes) decoded; or its failure."""
    try:
        if not image.encoded:
            raise InvalidArgument("the image bytes are empty")
        image_hash = image_key(image.encoded)
        existing = store.has(info.name, image_hash)
        if existing is not None:
            return ReadyImage(check_member_id(image.id or image_hash), image_hash, None, existing)
        ready = prepare.prepare(loaded, image.encoded, max_pixels)
        member_id = check_member_id(image.id or ready.image_hash)
        return ReadyImage(member_id, ready.image_hash, ready, None)
    except InvalidArgument as exc:
        return Outcome(image.id or "", "failed", code=exc.status, reason=str(exc))
    except ValueError as exc:  # a library's words about its insides: logged, not sent
        log.warning("image %r could not be prepared for indexing: %s", image.id, exc)
        return Outcome(image.id or "", "failed", code="INVALID_ARGUMENT", reason=UNUSABLE)


__all__ = ["ReadyImage", "ready_image"]
