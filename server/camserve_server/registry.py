"""Registered things by id (explanation methods, job methods), read-only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Protocol, TypeVar

from .errors import InvalidArgument, choices


class Identified(Protocol):
    """Anything registered: it has an ``id``."""

    @property
    def id(self) -> str: ...


T = TypeVar("T", bound=Identified)


class Registry(Mapping[str, T]):
    """Members by id, in the order given; a read-only ``Mapping`` (``registry[id]`` is a
    plain ``KeyError`` for an unknown id; ``lookup`` is the request path's refusal)."""

    def __init__(self, kind: str, members: Iterable[T], *, plural: str | None = None) -> None:
        """``kind`` names a member in messages ("method"); ``plural`` the list of valid
        ones ("methods" by default: ``kind`` plus s). Two members with one id are refused."""
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._members: dict[str, T] = {}
        for member in members:
            if member.id in self._members:
                raise ValueError(f"two {self.plural} have the id {member.id!r}")
            self._members[member.id] = member

    def lookup(self, member_id: str) -> T:
        """The member ``member_id``, or ``InvalidArgument`` naming the valid ids."""
        try:
            return self._members[member_id]
        except KeyError:
            raise InvalidArgument(
                f"unknown {self.kind} {member_id!r}; valid {self.plural}: {choices(self._members)}"
            ) from None

    def __getitem__(self, member_id: str) -> T:
        return self._members[member_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, ids={list(self._members)})"
