"""An ``index`` call longer than the server's connection age: the server cuts its stream
(``UNAVAILABLE: max connection age``) and the SDK resumes it, sending again only the
images not answered yet, until every image is in the set exactly once.

The server here closes connections after 1 s plus 1 s of grace; the images come from a
generator that waits between them, so one call spans several connections.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rpc_helpers import write_demo_pngs

from camserve import AsyncExplainClient, ExplainClient
from camserve.sets import IndexResult
from server_harness import ServerThread, settings_for

COUNT = 240
PAUSE_S = 0.015  # between images: 240 images take over 3.6 s, past the 2 s a connection lives


@pytest.fixture(scope="module")
def short_lived() -> Iterator[ServerThread]:
    settings = settings_for(max_connection_age_s=1.0, max_connection_age_grace_s=1.0)
    with ServerThread(settings) as server:
        yield server


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_pngs(tmp_path_factory.mktemp("resume-images"), COUNT, seed=31)


def _slowly(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        time.sleep(PAUSE_S)
        yield path


def _check(result: IndexResult, names: list[str], progress: list[int]) -> None:
    assert result.resumed >= 1, "the call was never cut: the test did not cross the age"
    assert result.failed == 0 and result.indexed + result.skipped == len(names)
    assert sorted(o.id for o in result.outcomes) == names  # one outcome per image
    # An image written just before a cut, its answer lost, is skipped as itself.
    assert all(o.existing_id == o.id for o in result.outcomes if o.status == "skipped")
    assert result.set.size == len(names)
    assert progress == sorted(progress) and progress[-1] == len(names)


def test_index_resumes_across_connection_age_cuts(short_lived: ServerThread, folder: Path) -> None:
    name = f"resume-{uuid.uuid4().hex[:8]}"
    paths = sorted(folder.glob("*.png"))
    names = [path.name for path in paths]
    progress: list[int] = []
    with ExplainClient(short_lived.address, timeout=120) as client:
        result = client.index(
            name, _slowly(paths), "demo", progress=lambda done, _: progress.append(done)
        )
        _check(result, names, progress)
        assert sorted(client.embedding_map(name, method="pca").ids) == names  # each once
        client.delete_set(name)


def test_async_index_resumes_across_connection_age_cuts(
    short_lived: ServerThread, folder: Path
) -> None:
    name = f"resume-async-{uuid.uuid4().hex[:8]}"
    paths = sorted(folder.glob("*.png"))[: COUNT * 2 // 3]
    names = [path.name for path in paths]
    progress: list[int] = []

    async def run() -> tuple[IndexResult, list[str]]:
        async with AsyncExplainClient(short_lived.address, timeout=120) as client:
            result = await client.index(
                name, _slowly(paths), "demo", progress=lambda done, _: progress.append(done)
            )
            mapped = await client.embedding_map(name, method="pca")
            await client.delete_set(name)
            return result, sorted(mapped.ids)

    result, mapped = asyncio.run(run())
    _check(result, names, progress)
    assert mapped == names
