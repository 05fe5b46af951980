"""Real pictures as people send them: EXIF rotation, alpha, grayscale, 16-bit depth.

The heatmap must land on the right spot of the picture as a viewer shows it.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image
from rpc_helpers import heatmap, request, stub

from camserve_server.demo.data import Sample, make_dataset
from server_harness import ServerThread

SCALE = 3  # send pictures larger than the model's input: the map is placed back onto them


def _upright(sample: Sample) -> Image.Image:
    image = Image.fromarray(sample.image)
    return image.resize((image.width * SCALE, image.height * SCALE), Image.Resampling.NEAREST)


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def exif_rotated(sample: Sample) -> bytes:
    """Pixels stored rotated; EXIF orientation 6 tells viewers to turn them upright."""
    stored = _upright(sample).rotate(90, expand=True)  # counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    return _encode(stored, "JPEG", quality=95, exif=exif)


def with_alpha(sample: Sample) -> bytes:
    rgba = _upright(sample).convert("RGBA")
    alpha = np.full((rgba.height, rgba.width), 128, dtype=np.uint8)
    rgba.putalpha(Image.fromarray(alpha))
    return _encode(rgba, "PNG")


def grayscale(sample: Sample) -> bytes:
    return _encode(_upright(sample).convert("L"), "PNG")


def sixteen_bit(sample: Sample) -> bytes:
    gray = np.asarray(_upright(sample).convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    return _encode(Image.fromarray(gray), "PNG")


def gray_as_rgb(sample: Sample) -> bytes:
    """What grayscale and 16-bit pictures must become: gray replicated to three channels."""
    return _encode(_upright(sample).convert("L").convert("RGB"), "PNG")


def plain(sample: Sample) -> bytes:
    return _encode(_upright(sample), "PNG")


def _peak_in_box(server: ServerThread, data: bytes, sample: Sample) -> bool:
    reply = stub(server.address).Explain(request("demo", "gradcam", data, classes=(sample.label,)))
    values = heatmap(reply.heatmaps[0])
    assert values.shape == (64 * SCALE, 64 * SCALE)
    y, x = np.unravel_index(int(values.argmax()), values.shape)
    x0, y0, x1, y1 = (v * SCALE for v in sample.box)
    return bool(x0 <= x <= x1 + SCALE - 1 and y0 <= y <= y1 + SCALE - 1)


@pytest.fixture(scope="module")
def samples(server: ServerThread) -> list[Sample]:
    """Held-out samples whose plain upright picture is explained correctly."""
    chosen = [s for s in make_dataset(12, 777) if _peak_in_box(server, plain(s), s)]
    assert len(chosen) >= 8
    return chosen


def test_exif_rotated_heatmap_lands_on_the_object_as_shown(
    server: ServerThread, samples: list[Sample]
) -> None:
    hits = [_peak_in_box(server, exif_rotated(s), s) for s in samples]
    assert sum(hits) >= 0.8 * len(hits), hits


def _map(server: ServerThread, data: bytes, label: int) -> np.ndarray:
    reply = stub(server.address).Explain(request("demo", "gradcam", data, classes=(label,)))
    return heatmap(reply.heatmaps[0])


@pytest.mark.parametrize(
    ("encode", "equivalent"),
    [(with_alpha, plain), (grayscale, gray_as_rgb), (sixteen_bit, gray_as_rgb)],
    ids=["alpha", "grayscale", "16-bit"],
)
def test_converted_pictures_are_explained_like_their_rgb_equivalent(
    server: ServerThread,
    samples: list[Sample],
    encode: Callable[[Sample], bytes],
    equivalent: Callable[[Sample], bytes],
) -> None:
    for sample in samples[:4]:
        converted = _map(server, encode(sample), sample.label)
        expected = _map(server, equivalent(sample), sample.label)
        assert converted.shape == expected.shape == (64 * SCALE, 64 * SCALE)
        np.testing.assert_allclose(converted, expected, atol=1e-6)


def test_exif_rotation_is_applied_before_the_model_sees_the_image(
    server: ServerThread, samples: list[Sample]
) -> None:
    sample = samples[0]
    rotated = stub(server.address).Explain(request("demo", "gradcam", exif_rotated(sample)))
    upright = stub(server.address).Explain(request("demo", "gradcam", plain(sample)))
    assert (rotated.image_height, rotated.image_width) == (
        upright.image_height,
        upright.image_width,
    )
    assert rotated.top_classes[0].index == upright.top_classes[0].index == sample.label
