"""The SDK's local side, no server: argument checks, request building, channel settings,
error mapping, reply decoding and the ``explain_many`` bookkeeping."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from camserve import _health, _inputs, results
from camserve._channel import ChannelConfig
from camserve._many import ManyRun
from camserve.errors import (
    CamserveError,
    ConflictError,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OverloadedError,
    UnauthenticatedError,
    UnavailableError,
    error_for,
    from_rpc_error,
    from_status,
)
from camserve.tensors import from_proto, to_proto
from camserve.v1 import explain_pb2 as pb


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"))


# --- images and tensors ----------------------------------------------------------------------


def test_every_image_form_encodes_to_the_same_pixels(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    raw = path.read_bytes()
    assert _inputs.encode_image(str(path)) == raw
    assert _inputs.encode_image(path) == raw
    assert _inputs.encode_image(raw) == raw
    assert _inputs.encode_image(bytearray(raw)) == raw
    assert _inputs.encode_image(memoryview(raw)) == raw
    for form in (pixels, Image.fromarray(pixels)):
        np.testing.assert_array_equal(_decode(_inputs.encode_image(form)), pixels)


def test_grey_rgba_and_cmyk_images_are_encoded() -> None:
    grey = np.arange(20, dtype=np.uint8).reshape(4, 5)
    np.testing.assert_array_equal(_decode(_inputs.encode_image(grey))[..., 0], grey)
    np.testing.assert_array_equal(_decode(_inputs.encode_image(grey[..., None]))[..., 0], grey)
    rgba = np.zeros((4, 5, 4), np.uint8)
    assert _decode(_inputs.encode_image(rgba)).shape == (4, 5, 3)
    cmyk = Image.new("CMYK", (3, 2))
    assert _decode(_inputs.encode_image(cmyk)).shape == (2, 3, 3)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 3), np.float32), "tensor="),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((0, 4, 3), np.uint8), "empty"),
        (b"", "empty"),
        (12, "got int"),
    ],
)
def test_bad_images_are_rejected(image: Any, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as caught:
        _inputs.encode_image(image)
    assert isinstance(caught.value, ValueError)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_unreadable_and_empty_files_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match=r"missing\.png"):
        _inputs.encode_image(tmp_path / "missing.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidArgumentError, match="empty"):
        _inputs.encode_image(tmp_path / "empty.png")


def test_tensors_are_sent_as_float32_3hw() -> None:
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 6))
    message = _inputs.tensor_proto(x)
    assert list(message.shape) == [3, 8, 6]
    assert message.dtype == pb.DTYPE_FLOAT32
    np.testing.assert_array_equal(from_proto(message), x[0].astype(np.float32))
    for bad in (np.zeros((3, 4, 4), np.uint8), np.zeros((4, 4, 3), np.float32), np.zeros(3)):
        with pytest.raises(InvalidArgumentError):
            _inputs.tensor_proto(bad)


def test_exactly_one_of_image_and_tensor() -> None:
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        _inputs.image_input(None, None)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        _inputs.image_input(b"x", np.zeros((3, 2, 2), np.float32))
    assert _inputs.image_input(b"x", None).encoded == b"x"
    assert _inputs.image_input(None, np.zeros((3, 2, 2), np.float32)).HasField("tensor")


# --- request fields ---------------------------------------------------------------------------


def test_option_values_by_type() -> None:
    assert _inputs.option_value("f", True).flag is True
    assert _inputs.option_value("f", np.bool_(False)).WhichOneof("kind") == "flag"
    assert _inputs.option_value("n", 16).number == 16.0
    assert _inputs.option_value("n", np.float32(0.5)).number == 0.5
    assert _inputs.option_value("s", "mean").text == "mean"
    assert list(_inputs.option_value("l", (16, 8)).numbers.values) == [16.0, 8.0]
    assert list(_inputs.option_value("l", np.array([1, 2])).numbers.values) == [1.0, 2.0]
    bad_values: list[Any] = [float("nan"), [1, float("inf")], {"a": 1}, None, [True]]
    for bad in bad_values:
        with pytest.raises(InvalidArgumentError):
            _inputs.option_value("bad", bad)


def test_option_defaults_decode_to_python_values() -> None:
    decode = _inputs.option_from_proto
    assert decode(pb.OptionValue(number=3.0)) == 3
    assert isinstance(decode(pb.OptionValue(number=3.0)), int)
    assert decode(pb.OptionValue(number=0.15)) == 0.15
    assert decode(pb.OptionValue(text="x")) == "x"
    assert decode(pb.OptionValue(flag=False)) is False
    assert decode(pb.OptionValue(numbers=pb.NumberList(values=[32, 0.5]))) == [32, 0.5]
    assert decode(pb.OptionValue()) is None


def test_targets() -> None:
    assert _inputs.targets_proto(None, None) is None
    assert list(_inputs.targets_proto(3, None).classes) == [3]  # type: ignore[union-attr]
    assert list(_inputs.targets_proto([2, 0], None).classes) == [2, 0]  # type: ignore[union-attr]
    assert _inputs.targets_proto(None, 4).top_k == 4  # type: ignore[union-attr]
    for targets, top_k in (([1], 2), ([], None), ([-1], None), (["1"], None), (None, 0)):
        with pytest.raises(InvalidArgumentError):
            _inputs.targets_proto(targets, top_k)  # type: ignore[arg-type]


def test_output_options() -> None:
    default = _inputs.output_proto(None, "float32", False)
    assert (default.height, default.width, default.dtype) == (0, 0, pb.DTYPE_FLOAT32)
    sized = _inputs.output_proto((32, 48), "uint8", True)
    assert (sized.height, sized.width, sized.dtype, sized.return_raw) == (
        32,
        48,
        pb.DTYPE_UINT8,
        True,
    )
    for size, dtype in (((0, 4), "float32"), ((4,), "float32"), ((9000, 4), "float32")):
        with pytest.raises(InvalidArgumentError, match="size"):
            _inputs.output_proto(size, dtype, False)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="dtype"):
        _inputs.output_proto(None, "int8", False)


def test_explain_template_and_items() -> None:
    template = _inputs.explain_template(
        model="r18", method="occlusion", top_k=2, layer="layer3", options={"window": 16}
    )
    assert not template.HasField("input")
    request = _inputs.with_input(template, b"img", None, "7")
    assert (request.model, request.method, request.layer, request.request_id) == (
        "r18",
        "occlusion",
        "layer3",
        "7",
    )
    assert request.targets.top_k == 2
    assert request.options["window"].number == 16.0
    assert request.input.encoded == b"img"
    assert not template.HasField("input")  # the template is left as it was
    tensor_item = _inputs.batch_item(template, np.zeros((3, 4, 4), np.float32), "0")
    assert tensor_item.input.HasField("tensor")
    with pytest.raises(InvalidArgumentError, match="model"):
        _inputs.explain_template(model="")
    with pytest.raises(InvalidArgumentError, match="method"):
        _inputs.explain_template(model="m", method="")


def test_other_requests() -> None:
    embed = _inputs.embed_request(b"x", None, model="m", normalize=True)
    assert (embed.model, embed.normalize, embed.layer) == ("m", True, "")
    acts = _inputs.activations_request(b"x", None, model="m", top_k=3)
    assert (acts.top_k, acts.mode) == (3, pb.ACTIVATIONS_MODE_FEATURE_MAPS)
    profile = _inputs.activations_request(b"x", None, model="m", profile_only=True)
    assert profile.mode == pb.ACTIVATIONS_MODE_CHANNEL_PROFILE
    with pytest.raises(InvalidArgumentError):
        _inputs.activations_request(b"x", None, model="m", top_k=-1)
    assert _inputs.filters_request("m", "conv1") == pb.FiltersRequest(model="m", layer="conv1")
    with pytest.raises(InvalidArgumentError):
        _inputs.filters_request("")


# --- channel settings -------------------------------------------------------------------------


def test_service_config_retries_only_unavailable() -> None:
    config = ChannelConfig("h:1")
    options = dict(config.options())
    assert options["grpc.enable_retries"] == 1
    assert options["grpc.max_send_message_length"] == 64 << 20
    assert options["grpc.max_receive_message_length"] == 64 << 20
    assert options["grpc.keepalive_time_ms"] == 60_000
    service = json.loads(options["grpc.service_config"])
    (method,) = service["methodConfig"]
    assert {"service": "camserve.v1.ExplainService"} in method["name"]
    policy = method["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert policy["maxAttempts"] == 5
    assert policy["initialBackoff"] == "0.1s"
    single = json.loads(ChannelConfig("h:1", max_attempts=1).service_config())
    assert "retryPolicy" not in single["methodConfig"][0]


def test_channel_config_checks_its_arguments() -> None:
    bad: list[dict[str, Any]] = [
        {"address": ""},
        {"address": "h:1", "timeout": 0},
        {"address": "h:1", "max_attempts": 6},
        {"address": "h:1", "certificate_chain": b"pem"},
        {"address": "h:1", "token": "a\nb"},
        {"address": "h:1", "max_message_bytes": 0},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidArgumentError):
            ChannelConfig(**kwargs)
    with pytest.raises(InvalidArgumentError):
        ChannelConfig("h:1").resolve_timeout(-1)
    assert ChannelConfig("h:1", timeout=None).resolve_timeout(None) is None
    assert ChannelConfig("h:1").resolve_timeout(2.5) == 2.5


def test_the_token_is_metadata_only_on_insecure_channels() -> None:
    insecure = ChannelConfig("h:1", token="t")
    assert insecure.metadata() == (("authorization", "Bearer t"),)
    assert insecure.credentials() is None
    secure = ChannelConfig("h:1", token="t", tls=True)
    assert secure.metadata() == ()
    assert secure.credentials() is not None
    assert ChannelConfig("h:1", root_certificates=b"pem").secure


# --- errors -----------------------------------------------------------------------------------


class _FakeRpcError(grpc.RpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str | None) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str | None:
        return self._details


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.OUT_OF_RANGE, InvalidArgumentError),
        (grpc.StatusCode.NOT_FOUND, NotFoundError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, OverloadedError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, UnauthenticatedError),
        (grpc.StatusCode.ALREADY_EXISTS, ConflictError),
        (grpc.StatusCode.FAILED_PRECONDITION, ConflictError),
        (grpc.StatusCode.INTERNAL, InternalError),
        (grpc.StatusCode.UNKNOWN, InternalError),
        (grpc.StatusCode.CANCELLED, InternalError),
    ],
)
def test_status_codes_map_to_classes(code: grpc.StatusCode, cls: type[CamserveError]) -> None:
    error = from_rpc_error(_FakeRpcError(code, "why"))
    assert type(error) is cls
    assert (error.code, error.details, error.index) == (code, "why", None)
    assert str(error) == f"{code.name}: why"
    numbered = from_status(code.value[0], "why", index=3)
    assert type(numbered) is cls and numbered.code == code and numbered.index == 3
    assert str(numbered) == f"item 3: {code.name}: why"


def test_error_edge_cases() -> None:
    assert from_status(999, "x").code == grpc.StatusCode.UNKNOWN
    assert from_rpc_error(_FakeRpcError(grpc.StatusCode.UNAVAILABLE, None)).details == "unavailable"
    assert InvalidArgumentError("bad").code == grpc.StatusCode.INVALID_ARGUMENT
    assert isinstance(error_for(grpc.StatusCode.INVALID_ARGUMENT, "x"), ValueError)


# --- health codec -----------------------------------------------------------------------------


def test_health_messages() -> None:
    assert _health.encode_request("") == b""
    assert _health.encode_request("svc") == b"\x0a\x03svc"
    assert _health.decode_response(b"") == "UNKNOWN"
    assert _health.decode_response(b"\x08\x01") == "SERVING"
    assert _health.decode_response(b"\x08\x02") == "NOT_SERVING"
    assert _health.decode_response(b"\x12\x02ab\x08\x03") == "SERVICE_UNKNOWN"  # unknown field
    assert _health.decode_response(b"\x08\x09") == "STATUS_9"
    long_name = "s" * 200
    assert _health.encode_request(long_name)[1:3] == b"\xc8\x01"
    with pytest.raises(InternalError):
        _health.decode_response(b"\x08")


# --- replies ----------------------------------------------------------------------------------


def _response(dtype: str = "float32", raw: bool = False) -> pb.ExplainResponse:
    rng = np.random.default_rng(2)
    heatmaps = []
    for target in (4, 1):
        values = rng.random((6, 5)).astype(np.float32)
        sent = np.rint(values * 255).astype(np.uint8) if dtype == "uint8" else values
        heatmap = pb.Heatmap(target=target, label=f"c{target}", map=to_proto(sent.astype(dtype)))
        if raw:
            heatmap.raw.CopyFrom(to_proto(rng.standard_normal((2, 2)).astype(np.float32)))
        heatmaps.append(heatmap)
    return pb.ExplainResponse(
        request_id="r",
        model="m",
        method="gradcam",
        variant="gradcam",
        layer="layer4",
        heatmaps=heatmaps,
        top_classes=[
            pb.ClassScore(index=4, label="c4", probability=0.7, logit=2.0),
            pb.ClassScore(index=1, label="", probability=0.2, logit=1.0),
        ],
        cache_hit=True,
        timings=pb.Timings(decode_ms=1, queue_ms=2, compute_ms=3, total_ms=7),
        metrics={"completeness_gap": 0.25},
        image_height=6,
        image_width=5,
    )


@pytest.mark.parametrize("dtype", ["float32", "float16", "uint8"])
def test_heatmaps_reach_the_caller_as_float32_in_unit_range(dtype: str) -> None:
    ex = results.explanation(_response(dtype))
    assert ex.dtype == dtype
    assert ex.heatmaps.dtype == np.float32
    assert ex.heatmaps.shape == (2, 6, 5)
    assert ex.heatmap.shape == (6, 5)
    assert ex.heatmaps.min() >= 0.0 and ex.heatmaps.max() <= 1.0
    reference = results.explanation(_response("float32"))
    np.testing.assert_allclose(ex.heatmaps, reference.heatmaps, atol=0.5 / 255 + 1e-3)
    assert ex.targets == [4, 1] and ex.labels == ["c4", "c1"]
    assert ex.raw is None
    assert ex.logits == {4: 2.0, 1: 1.0}
    assert ex.scores[1].name == "1" and ex.top.name == "c4"
    assert ex.timings.total_ms == 7 and ex.cache_hit
    assert ex.metrics == {"completeness_gap": 0.25}
    assert ex.image_size == (6, 5)
    assert ex.heatmaps.flags.writeable


def test_raw_maps_are_stacked() -> None:
    ex = results.explanation(_response(raw=True))
    assert ex.raw is not None and ex.raw.shape == (2, 2, 2) and ex.raw.dtype == np.float32


def test_no_heatmap_and_malformed_replies() -> None:
    ex = results.explanation(
        pb.ExplainResponse(method="feature_maps", image_height=3, image_width=4)
    )
    assert ex.heatmaps.shape == (0, 3, 4)
    with pytest.raises(InternalError, match="no heatmap"):
        _ = ex.heatmap
    broken = pb.ExplainResponse(
        heatmaps=[pb.Heatmap(map=pb.Tensor(shape=[2, 2], dtype=pb.DTYPE_FLOAT32, data=b"x"))]
    )
    with pytest.raises(InternalError, match="malformed"):
        results.explanation(broken)


def test_model_and_method_infos() -> None:
    info = results.model_info(
        pb.ModelInfo(name="m", input_height=8, input_width=9, has_labels=False, labels=["x"])
    )
    assert info.input_size == (8, 9) and info.labels == [] and info.label(0) == "0"
    method = results.method_info(
        pb.MethodInfo(
            id="occlusion",
            options=[
                pb.OptionInfo(
                    name="window",
                    default=pb.OptionValue(numbers=pb.NumberList(values=[32, 32])),
                    description="side",
                )
            ],
        )
    )
    assert method.options == {"window": [32, 32]}
    assert method.option_help == {"window": "side"}


# --- explain_many bookkeeping ------------------------------------------------------------------


def _reply(index: int, error: int | None = None) -> pb.ExplainStreamResponse:
    if error is not None:
        return pb.ExplainStreamResponse(
            request_id=str(index), error=pb.Error(code=error, message="e")
        )
    response = pb.ExplainResponse(request_id=str(index), method="gradcam")
    return pb.ExplainStreamResponse(request_id=str(index), response=response)


def _run(items: list[Any], **kwargs: Any) -> ManyRun:
    template = _inputs.explain_template(model="m")
    options: dict[str, Any] = {"concurrency": 2, "raise_errors": False, "progress": None}
    return ManyRun(items, template, **(options | kwargs))


def test_many_run_bounds_outstanding_and_keeps_order() -> None:
    progress: list[tuple[int, int]] = []
    run = _run([b"a", b"b", b"c"], progress=lambda d, t: progress.append((d, t)))
    first = run.next_requests()
    assert [r.request_id for r in first] == ["0", "1"]
    assert run.next_requests() == [] and run.outstanding == 2
    run.on_reply(_reply(1))
    assert [r.request_id for r in run.next_requests()] == ["2"]
    assert run.exhausted
    run.on_reply(_reply(2, error=5))
    run.on_reply(_reply(0))
    outcomes = run.finish(None)
    assert isinstance(outcomes[0], results.Explanation)
    assert isinstance(outcomes[2], NotFoundError) and outcomes[2].index == 2
    assert progress == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(InternalError, match="unknown request"):
        run.on_reply(_reply(0))


def test_many_run_records_local_failures_and_fills_gaps() -> None:
    run = _run([b"", b"ok", b"ok"], concurrency=5)
    sent = run.next_requests()
    assert [r.request_id for r in sent] == ["1", "2"]
    run.on_reply(_reply(1))
    outcomes = run.finish(UnavailableError("gone"))
    assert isinstance(outcomes[0], InvalidArgumentError) and outcomes[0].index == 0
    assert isinstance(outcomes[2], UnavailableError) and outcomes[2].index == 2


def test_many_run_raises_first_error_and_scales_its_deadline() -> None:
    run = _run([b"", b"ok"], raise_errors=True)
    with pytest.raises(InvalidArgumentError) as caught:
        run.next_requests()
    assert caught.value.index == 0
    run = _run([b"ok"] * 5)
    assert run.deadline(10.0) == 30.0
    assert run.deadline(None) is None
    with pytest.raises(InvalidArgumentError, match="concurrency"):
        _run([], concurrency=0)
    raising = _run([b"ok"], raise_errors=True)
    raising.next_requests()
    with pytest.raises(InternalError, match="ended"):
        raising.finish(None)
