"""The Redis ``SetStore``: image sets shared by every replica, written one whole record at a time.

Keys, per set ``S`` (the ``{S}`` hash tag keeps a set's keys on one Redis Cluster slot)::

    {prefix}:sets                 set of set names
    {prefix}:{S}:info             hash: desc (JSON), size, bytes, max_images, max_bytes, version
    {prefix}:{S}:ids              set of member ids
    {prefix}:{S}:hashes           hash: image hash -> member id (the idempotent re-send index)
    {prefix}:{S}:m:{id}           hash: core (record without image), media (image and thumbnail),
                                  cost, hash

A member is added by one Lua script that checks the set's limits and writes the member,
the hash index and the counters together, so a record is there whole or not at all and
the counters always match the members, whenever Redis goes away. Any Redis failure is
``Unavailable`` with a short message; where Redis is and what it said go to the log,
never to the caller. What was written before the failure stays.

Queries read only the ``core`` fields (embedding, channel maxima, positions, predicted
class), once per version of the set, and keep the stacked arrays in process until the
set changes: a map or a list of answers takes its labels from there. The ``media``
field (kept input and thumbnail) is read only for the members an answer shows, those
of one answer in one pipeline.
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import TypeVar, cast

import numpy as np
import redis

from ..errors import Unavailable
from ..runtime.cache_redis import redis_client
from .query_arrays import QueryArrays
from .records import (
    MemberRecord,
    RecordFormatError,
    SetFull,
    SetInfo,
    check_set_name,
    decode_record,
    encode_record,
)
from .store import (
    Predictions,
    check_create,
    check_layer,
    member_not_found,
    record_cost,
    set_not_found,
)

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_CHUNK = 500  # members per pipelined read or delete

# KEYS: info, member, hashes, ids. ARGV: id, image hash, cost, core, media.
# Returns {0} on success, {-1} no set (or being deleted), {-2, size, max} or {-3, bytes, max}.
_ADD_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'deleting') == 1 then
  return {-1}
end
local info = redis.call('HMGET', KEYS[1], 'size', 'bytes', 'max_images', 'max_bytes')
local size, used = tonumber(info[1]), tonumber(info[2])
local cost = tonumber(ARGV[3])
local old = redis.call('HMGET', KEYS[2], 'cost', 'hash')
local old_cost, new = 0, 1
if old[1] then
  old_cost, new = tonumber(old[1]), 0
end
if size + new > tonumber(info[3]) then return {-2, size, tonumber(info[3])} end
if used + cost - old_cost > tonumber(info[4]) then return {-3, used, tonumber(info[4])} end
if old[2] and redis.call('HGET', KEYS[3], old[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[3], old[2])
end
redis.call('HSET', KEYS[2], 'core', ARGV[4], 'media', ARGV[5], 'cost', ARGV[3], 'hash', ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'size', new)
redis.call('HINCRBY', KEYS[1], 'bytes', cost - old_cost)
redis.call('HINCRBY', KEYS[1], 'version', 1)
return {0}
"""

# KEYS: info, registry. ARGV: desc JSON, max_images, max_bytes, name. Returns the stored desc.
_CREATE_SCRIPT = """
if redis.call('HSETNX', KEYS[1], 'desc', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'size', 0, 'bytes', 0, 'version', 0,
             'max_images', ARGV[2], 'max_bytes', ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[4])
end
return redis.call('HGET', KEYS[1], 'desc')
"""


class RedisSetStore:
    """Image sets in Redis under ``prefix``; every method raises ``Unavailable`` if Redis fails."""

    def __init__(self, client: redis.Redis, *, prefix: str = "camserve:sets:v1") -> None:
        self.client = client
        self.prefix = prefix
        self._add = client.register_script(_ADD_SCRIPT)
        self._create = client.register_script(_CREATE_SCRIPT)
        self._lock = threading.Lock()
        self._snapshots: dict[str, tuple[int, QueryArrays]] = {}  # name -> (version, arrays)
        kwargs = client.connection_pool.connection_kwargs
        self._where = str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "camserve:sets:v1",
        timeout_s: float = 5.0,
        connect_timeout_s: float = 1.0,
    ) -> RedisSetStore:
        """A store for ``redis://host:port/db``; connects lazily."""
        client = redis_client(url, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s)
        return cls(client, prefix=prefix)

    # keys

    def _registry(self) -> str:
        return f"{self.prefix}:sets"

    def _key(self, name: str, part: str) -> str:
        return f"{self.prefix}:{{{name}}}:{part}"

    def member_key(self, name: str, member_id: str) -> str:
        return self._key(name, f"m:{member_id}")

    # protocol

    def create(self, info: SetInfo) -> None:
        check_set_name(info.name)
        check_create(None, info)
        desc = _describe(replace(info, created=info.created or time.time()))
        stored = self._call(
            "create",
            lambda: self._create(
                keys=[self._key(info.name, "info"), self._registry()],
                args=[desc, info.max_images, info.max_bytes, info.name],
            ),
        )
        existing = _info_from(info.name, {b"desc": stored, b"size": b"0", b"bytes": b"0"})
        check_create(existing, info)

    def get(self, name: str) -> SetInfo:
        check_set_name(name)
        fields = self._info_fields(name)
        if not fields or b"desc" not in fields:
            raise set_not_found(name)
        return _info_from(name, fields)

    def list(self) -> builtins.list[SetInfo]:
        infos = []
        for name in sorted(self._names()):
            fields = self._info_fields(name)
            if fields and b"desc" in fields:
                infos.append(_info_from(name, fields))
        return infos

    def delete(self, name: str) -> int:
        """Mark the set as being deleted (adds stop), remove its members, then its keys."""
        info = self.get(name)
        info_key = self._key(name, "info")
        self._call("delete", lambda: self.client.hset(info_key, "deleting", 1))
        ids_key = self._key(name, "ids")
        while True:
            batch = cast(
                "list[bytes]",
                self._call("delete", lambda: self.client.srandmember(ids_key, _CHUNK)),
            )
            if not batch:
                break
            pipe = self.client.pipeline(transaction=False)
            for raw in batch:
                pipe.unlink(self.member_key(name, raw.decode()))
            pipe.srem(ids_key, *batch)
            self._call("delete", pipe.execute)
        pipe = self.client.pipeline(transaction=True)
        pipe.unlink(ids_key, self._key(name, "hashes"), info_key)
        pipe.srem(self._registry(), name)
        self._call("delete", pipe.execute)
        with self._lock:
            self._snapshots.pop(name, None)
        return info.bytes_used

    def has(self, name: str, image_hash: str) -> str | None:
        check_set_name(name)
        found = self._call("has", lambda: self.client.hget(self._key(name, "hashes"), image_hash))
        if found is None:
            self.get(name)  # NotFound for a missing set
            return None
        return cast("bytes", found).decode()

    def add(self, name: str, records: builtins.list[MemberRecord]) -> None:
        check_set_name(name)
        for record in records:
            core = encode_record(replace(record, image=b"", pixels=None))
            media = encode_record(
                replace(record, embedding=np.zeros(0, np.float32), maxima={}, positions={})
            )
            cost = record_cost(len(core) + len(media), record.id)
            keys = [
                self._key(name, "info"),
                self.member_key(name, record.id),
                self._key(name, "hashes"),
                self._key(name, "ids"),
            ]
            args: list[str | int | bytes] = [record.id, record.image_hash, cost, core, media]
            result = cast("list[int]", self._call("add", partial(self._add, keys=keys, args=args)))
            code = int(result[0])
            if code == -1:
                raise set_not_found(name)
            if code == -2:
                raise SetFull(
                    f"image set {name!r} holds {result[1]} of at most {result[2]} images; "
                    f"cannot add {record.id!r} (delete the set or make a new one)"
                )
            if code == -3:
                raise SetFull(
                    f"image set {name!r} uses {result[1]} of at most {result[2]} bytes; "
                    f"cannot add {record.id!r} ({cost} bytes)"
                )

    def members(self, name: str) -> Iterator[MemberRecord]:
        ids = self._ids(name)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for member_id in chunk:
                pipe.hmget(self.member_key(name, member_id), "core", "media")
            rows = cast("list[list[bytes | None]]", self._call("members", pipe.execute))
            for core, media in rows:
                if core is not None and media is not None:  # None: deleted since the ids were read
                    yield _merge(decode_record(core), decode_record(media))

    def matrix(self, name: str) -> tuple[builtins.list[str], np.ndarray]:
        arrays = self._arrays(name)
        with self._lock:
            return arrays.matrix()

    def channel_column(
        self, name: str, layer: str
    ) -> tuple[builtins.list[str], np.ndarray, np.ndarray]:
        check_layer(self.get(name), layer)
        arrays = self._arrays(name)
        with self._lock:
            return arrays.channel_column(layer)

    def predictions(self, name: str) -> Predictions:
        arrays = self._arrays(name)
        with self._lock:
            return arrays.predictions()

    def images(self, name: str, ids: Sequence[str]) -> builtins.list[bytes]:
        check_set_name(name)
        images: builtins.list[bytes] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            pipe = self.client.pipeline(transaction=False)
            for member_id in chunk:
                pipe.hget(self.member_key(name, member_id), "media")
            blobs = cast("list[bytes | None]", self._call("read", pipe.execute))
            for member_id, media in zip(chunk, blobs, strict=True):
                if media is None:
                    self.get(name)  # NotFound for a missing set first
                    raise member_not_found(name, member_id)
                images.append(decode_record(media).image)
        return images

    def member(self, name: str, member_id: str) -> MemberRecord:
        check_set_name(name)
        core, media = cast(
            "list[bytes | None]",
            self._call(
                "member",
                lambda: self.client.hmget(self.member_key(name, member_id), "core", "media"),
            ),
        )
        if core is None or media is None:
            self.get(name)  # NotFound for a missing set first
            raise member_not_found(name, member_id)
        return _merge(decode_record(core), decode_record(media))

    def close(self) -> None:
        self.client.close()

    def used_memory(self, name: str) -> int:
        """Bytes Redis itself reports for the set's keys (``MEMORY USAGE``), for benchmarks."""
        keys = [self._key(name, part) for part in ("info", "ids", "hashes")]
        keys += [self.member_key(name, member_id) for member_id in self._ids(name)]
        total = 0
        for start in range(0, len(keys), _CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for key in keys[start : start + _CHUNK]:
                pipe.memory_usage(key, samples=0)
            total += sum(int(n or 0) for n in self._call("memory", pipe.execute))
        return total

    # helpers

    def _info_fields(self, name: str) -> dict[bytes, bytes]:
        key = self._key(name, "info")
        return cast("dict[bytes, bytes]", self._call("read", lambda: self.client.hgetall(key)))

    def _names(self) -> builtins.list[str]:
        raw = cast("set[bytes]", self._call("list", lambda: self.client.smembers(self._registry())))
        return [n.decode() for n in raw]

    def _ids(self, name: str) -> builtins.list[str]:
        self.get(name)
        raw = cast(
            "set[bytes]", self._call("read", lambda: self.client.smembers(self._key(name, "ids")))
        )
        return sorted(n.decode() for n in raw)

    def _arrays(self, name: str) -> QueryArrays:
        """The set's query arrays, read again only when its version moved."""
        version = self._call("read", lambda: self.client.hget(self._key(name, "info"), "version"))
        if version is None:
            raise set_not_found(name)
        current = int(cast("bytes", version))
        with self._lock:
            held = self._snapshots.get(name)
            if held is not None and held[0] == current:
                return held[1]
        ids = self._ids(name)
        records: builtins.list[MemberRecord] = []
        for start in range(0, len(ids), _CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for member_id in ids[start : start + _CHUNK]:
                pipe.hget(self.member_key(name, member_id), "core")
            for core in cast("list[bytes | None]", self._call("read", pipe.execute)):
                if core is not None:
                    records.append(decode_record(core))
        arrays = QueryArrays(records)
        with self._lock:
            self._snapshots[name] = (current, arrays)
        return arrays

    def _call(self, what: str, call: Callable[[], _T]) -> _T:
        """Run Redis commands; a failure becomes ``Unavailable``.

        The caller learns that the store failed and what to do about it. Where Redis is
        and what it said (its errors quote key types and Lua script hashes) are the
        operator's business: they go to the log, one line per failure.
        """
        try:
            return call()
        except redis.ResponseError as exc:
            log.warning("Redis %s refused the set store's %s: %s", self._where, what, _line(exc))
            raise Unavailable(
                "the image-set store refused the request (the server log has the details); "
                "members written before this are kept"
            ) from exc
        except (redis.RedisError, OSError) as exc:
            log.warning(
                "Redis %s unreachable during the set store's %s: %s: %s",
                self._where,
                what,
                type(exc).__name__,
                _line(exc),
            )
            raise Unavailable(
                "the image-set store is unreachable; members written before this are kept: "
                "retry later (re-sent images already indexed are skipped)"
            ) from exc


def _line(exc: BaseException) -> str:
    """An error's text on one line, for the log."""
    return " ".join(str(exc).split())


def _describe(info: SetInfo) -> str:
    """The fixed part of a set's description, as JSON."""
    return json.dumps(
        {
            "model": info.model,
            "layers": list(info.layers),
            "embedding_layer": info.embedding_layer,
            "created": info.created,
        },
        sort_keys=True,
    )


def _info_from(name: str, fields: dict[bytes, bytes]) -> SetInfo:
    try:
        desc = json.loads(fields[b"desc"])
        return SetInfo(
            name=name,
            model=str(desc["model"]),
            layers=tuple(str(layer) for layer in desc["layers"]),
            embedding_layer=str(desc["embedding_layer"]),
            size=int(fields.get(b"size", b"0")),
            bytes_used=int(fields.get(b"bytes", b"0")),
            created=float(desc["created"]),
            max_images=int(fields.get(b"max_images", b"0")),
            max_bytes=int(fields.get(b"max_bytes", b"0")),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RecordFormatError(f"unreadable description of image set {name!r}: {exc}") from exc


def _merge(core: MemberRecord, media: MemberRecord) -> MemberRecord:
    return replace(core, image=media.image, pixels=media.pixels)
