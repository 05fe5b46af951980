"""Image sets through the SDK and the ``camserve`` command line: answers as Python objects,
and figures written that read back as the pictures they claim to be."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rpc_helpers import write_demo_pngs

from camserve import AsyncExplainClient, ExplainClient, InvalidArgumentError, NotFoundError
from camserve.cli import main
from server_harness import ServerThread

COUNT = 24


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Demo images as PNG files, named by index and true class."""
    folder = tmp_path_factory.mktemp("set-images")
    return write_demo_pngs(folder, COUNT, seed=21, name="{i:02d}-{label}.png")


@pytest.fixture
def client(server: ServerThread) -> ExplainClient:
    return ExplainClient(server.address, timeout=60)


def test_the_sdk_indexes_queries_and_deletes_a_set(client: ExplainClient, folder: Path) -> None:
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    paths = sorted(folder.glob("*.png"))
    calls: list[tuple[int, int]] = []
    result = client.index(
        name, paths, "demo", progress=lambda done, total: calls.append((done, total))
    )
    assert (result.indexed, result.skipped, result.failed) == (COUNT, 0, 0)
    assert calls[-1] == (COUNT, COUNT)
    assert sorted(o.id for o in result.outcomes) == [p.name for p in paths]  # ids: file names
    assert result.set.size == COUNT and result.set.model == "demo"

    again = client.index(name, {"copy": paths[0], "missing": folder / "nope.png"}, progress=False)
    assert (again.skipped, again.failed) == (1, 1)
    assert {o.id: o for o in again.outcomes}["copy"].existing_id == paths[0].name
    assert "cannot read image" in again.failures[0].reason

    top = client.top_activating(name, None, 3, k=5)
    assert len(top) == 5 and [t.activation for t in top] == sorted(
        (t.activation for t in top), reverse=True
    )
    x0, y0, x1, y1 = top[0].box
    assert top[0].patch.size == (x1 - x0, y1 - y0) and top[0].layer == result.set.layers[0]

    by_id = client.neighbours(name, id=paths[0].name, k=4)
    assert len(by_id) == 4 and paths[0].name not in [n.id for n in by_id]
    assert [n.distance for n in by_id] == sorted(n.distance for n in by_id)
    by_image = client.neighbours(name, image=np.asarray(Image.open(paths[5])), k=2, space="pixels")
    assert by_image[0].id == paths[5].name and by_image[0].distance == pytest.approx(0, abs=1e-4)

    projected = client.embedding_map(name, method="pca")
    assert projected.xy.shape == (COUNT, 2) and projected.classes.shape == (COUNT,)
    assert sorted(projected.ids) == [p.name for p in paths]

    assert name in [s.name for s in client.sets()]
    assert client.describe_set(name).bytes_used > 0
    assert client.delete_set(name) > 0
    with pytest.raises(NotFoundError, match="no image set"):
        client.describe_set(name)


def test_the_sdk_refuses_bad_arguments_before_sending(client: ExplainClient) -> None:
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        client.neighbours("any", image=b"x", id="y")
    with pytest.raises(InvalidArgumentError, match="space"):
        client.neighbours("any", id="y", space="colour")
    with pytest.raises(InvalidArgumentError, match="single image"):
        client.index("any", "one-path.png", "demo")
    with pytest.raises(InvalidArgumentError, match="method"):
        client.embedding_map("any", method="umap")


def test_the_cli_indexes_and_draws_patches_neighbours_and_a_map(
    server: ServerThread, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    connect = ["--server", server.address]
    assert main([*connect, "index", str(folder), "--set", name, "--model", "demo"]) == 0
    assert f"indexed {COUNT}" in capsys.readouterr().out

    grid = tmp_path / "grid.png"
    args = ["patches", "--set", name, "--channels", "0-3", "--k", "5", "--out", str(grid)]
    assert main([*connect, *args]) == 0
    with Image.open(grid) as picture:
        width, height = picture.size
    assert width > 5 * 64 and height > 4 * 64  # four rows of five 64-pixel patches
    assert "wrote" in capsys.readouterr().out

    row = tmp_path / "row.png"
    query = str(sorted(folder.glob("*.png"))[0])
    args = ["neighbours", query, "--set", name, "--k", "4", "--out", str(row)]
    assert main([*connect, *args]) == 0
    with Image.open(row) as picture:
        assert picture.size[0] > 5 * 96
    assert len(capsys.readouterr().out.strip().splitlines()) == 5  # 4 neighbours + "wrote"

    drawn = tmp_path / "map.png"
    args = ["map", "--set", name, "--grid", "6", "--thumb", "24", "--out", str(drawn)]
    assert main([*connect, *args]) == 0
    with Image.open(drawn) as picture:
        assert picture.size == (6 * 24, 6 * 24)
        assert np.asarray(picture.convert("L")).std() > 10  # thumbnails, not a blank canvas

    assert main([*connect, "sets"]) == 0
    assert name in capsys.readouterr().out
    assert main([*connect, "patches", "--set", "no-such", "--out", str(grid)]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main([*connect, "sets", "--delete", name]) == 0


def test_the_async_sdk_indexes_and_queries(server: ServerThread, folder: Path) -> None:
    name = f"async-{uuid.uuid4().hex[:8]}"
    paths = sorted(folder.glob("*.png"))[:6]

    async def run() -> tuple[int, int, int]:
        async with AsyncExplainClient(server.address, timeout=60) as aclient:
            result = await aclient.index(name, paths, "demo", progress=False)
            found = await aclient.neighbours(name, id=paths[0].name, k=3)
            freed = await aclient.delete_set(name)
            return result.indexed, len(found), freed

    indexed, neighbours, freed = asyncio.run(run())
    assert (indexed, neighbours) == (6, 3) and freed > 0
