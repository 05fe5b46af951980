"""A re-sent image is skipped on its bytes' hash alone: the server does not decode it again."""

from __future__ import annotations

import uuid

import pytest
from rpc_helpers import png_bytes

from camserve import ExplainClient
from camserve_server.demo.data import make_dataset
from camserve_server.imagesets import prepare
from server_harness import ServerThread, settings_for


def test_a_resend_is_skipped_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    images = {f"img-{i}": png_bytes(s.image) for i, s in enumerate(make_dataset(5, seed=11))}
    name = f"resend-{uuid.uuid4().hex[:8]}"
    with ServerThread(settings_for()) as server, ExplainClient(server.address) as client:
        first = client.index(name, images, model="demo", progress=False)
        assert first.indexed == 5

        def no_decoding(*_args: object) -> prepare.PreparedImage:
            raise AssertionError("a re-sent image was decoded again")

        monkeypatch.setattr(prepare, "prepare", no_decoding)
        renamed = {f"again-{key}": data for key, data in images.items()}
        again = client.index(name, renamed, progress=False)
        assert (again.indexed, again.skipped, again.failed) == (0, 5, 0)
        assert [o.existing_id for o in again.outcomes] == list(images)
        assert client.describe_set(name).size == 5
