"""The one registry helper: a read-only mapping by id that refuses duplicates and names
the valid ids when asked for an unknown one."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from camserve_server.errors import InvalidArgument
from camserve_server.jobs import JOB_METHODS, get_job_method
from camserve_server.methods import METHODS, get_method
from camserve_server.registry import Registry


@dataclass(frozen=True)
class Named:
    id: str


def test_a_registry_is_a_mapping_in_the_order_given() -> None:
    registry = Registry("thing", (Named("b"), Named("a")))
    assert list(registry) == ["b", "a"] and len(registry) == 2
    assert "a" in registry and "c" not in registry
    assert registry["a"] == Named("a") and registry.get("c") is None
    assert dict(registry.items()) == {"b": Named("b"), "a": Named("a")}
    with pytest.raises(KeyError):
        registry["c"]


def test_lookup_names_the_valid_ids() -> None:
    registry = Registry("thing", (Named("b"), Named("a")))
    assert registry.lookup("a") == Named("a")
    with pytest.raises(InvalidArgument, match=r"^unknown thing 'c'; valid things: b, a$"):
        registry.lookup("c")


def test_two_members_with_one_id_are_refused() -> None:
    with pytest.raises(ValueError, match="two things have the id 'a'"):
        Registry("thing", (Named("a"), Named("a")))


def test_the_method_registries_keep_their_messages() -> None:
    with pytest.raises(InvalidArgument) as method:
        get_method("gradcamm")
    assert str(method.value) == (f"unknown method 'gradcamm'; valid methods: {', '.join(METHODS)}")
    with pytest.raises(InvalidArgument) as job:
        get_job_method("dream")
    assert str(job.value) == (
        f"unknown visualisation method 'dream'; valid methods: {', '.join(JOB_METHODS)}"
    )
    assert get_method("gradcam") is METHODS["gradcam"]
    assert get_job_method("deepdream") is JOB_METHODS["deepdream"]
