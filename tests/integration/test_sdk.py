"""The client SDK against the real in-process server, and against tiny fake servers that
fail on purpose (to exercise every status mapping, retries, deadlines, TLS and tokens)."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from PIL import Image

from camserve import (
    AsyncExplainClient,
    CamserveError,
    ConflictError,
    DeadlineExceededError,
    ExplainClient,
    Explanation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OverloadedError,
    UnauthenticatedError,
    UnavailableError,
)
from camserve.v1 import explain_pb2 as pb
from camserve_server.demo import SAMPLES_DIR
from server_harness import ServerThread

SAMPLES = sorted(SAMPLES_DIR.glob("*.png"))
LABELS = ["circle", "square", "triangle", "cross", "ring", "star"]


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[ExplainClient]:
    with ExplainClient(server.address, timeout=60) as c:
        yield c


def _random_rgb(seed: int, size: tuple[int, int] = (40, 48)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


# --- the real server -----------------------------------------------------------------------


def test_models_lists_every_served_model(client: ExplainClient) -> None:
    models = client.models()
    assert [m.name for m in models] == ["demo", "r18", "mnv3"]
    demo = models[0]
    assert demo.labels == LABELS
    assert demo.num_classes == 6
    assert demo.input_size == (64, 64)
    assert demo.default_layer in demo.layers
    assert {"gradcam", "saliency", "occlusion"} <= set(demo.methods)
    assert demo.label(2) == "triangle"
    r18 = models[1]
    assert r18.labels == []
    assert r18.num_classes == 10
    assert r18.label(3) == "3"


def test_methods_lists_ids_families_and_option_defaults(client: ExplainClient) -> None:
    methods = {m.id: m for m in client.methods()}
    assert methods["gradcam"].family == "cam"
    assert methods["gradcam"].uses_layer
    assert methods["gradcam"].options == {}
    occlusion = methods["occlusion"]
    assert occlusion.family == "perturbation"
    assert not occlusion.uses_layer
    assert occlusion.options == {
        "window": [32, 32],
        "stride": [16, 16],
        "fill": 0,
        "batch_size": 0,
        "incremental": True,
        "approximate": False,
        "projective_field": 0.6,
    }
    assert set(occlusion.option_help) == set(occlusion.options)
    assert methods["integrated_gradients"].options["steps"] == 50


def test_health_reports_serving(client: ExplainClient) -> None:
    assert client.health() == "SERVING"
    assert client.health("camserve.v1.ExplainService") == "SERVING"


def test_explain_an_image_file(client: ExplainClient) -> None:
    ex = client.explain(image=str(SAMPLES[2]), model="demo")
    assert isinstance(ex, Explanation)
    assert ex.model == "demo"
    assert ex.method == "gradcam"
    assert ex.layer
    assert ex.heatmap.dtype == np.float32
    assert ex.heatmap.shape == (64, 64)
    assert ex.heatmaps.shape == (1, 64, 64)
    assert ex.heatmap.min() >= 0.0 and ex.heatmap.max() <= 1.0
    assert ex.raw is None
    assert ex.dtype == "float32"
    assert ex.image_size == (64, 64)
    assert ex.targets == [ex.scores[0].index]
    assert ex.labels == [LABELS[ex.targets[0]]]
    assert ex.top.label == "triangle"
    assert len(ex.scores) == 5
    probabilities = [s.probability for s in ex.scores]
    assert probabilities == sorted(probabilities, reverse=True)
    assert ex.logits == {s.index: s.logit for s in ex.scores}
    assert ex.empty == [False]
    assert ex.timings.total_ms > 0


def test_every_image_form_gives_the_same_heatmap(client: ExplainClient) -> None:
    path = SAMPLES[0]
    pixels = np.asarray(Image.open(path).convert("RGB"))
    forms: list[Any] = [str(path), path, path.read_bytes(), Image.open(path), pixels]
    maps = [client.explain(image=form, model="demo", targets=[1]).heatmap for form in forms]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], atol=1e-6)


def test_explain_a_tensor_with_occlusion_options_and_raw(client: ExplainClient) -> None:
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    ex = client.explain(
        tensor=x,
        model="r18",
        method="occlusion",
        targets=[3],
        layer=None,
        options={"window": 16, "stride": 8},
        return_raw=True,
    )
    assert ex.method == "occlusion"
    assert ex.targets == [3]
    assert ex.heatmap.shape == (64, 64)
    assert ex.raw is not None
    assert ex.raw.shape == (1, 3, 64, 64)
    assert ex.raw.dtype == np.float32


def test_cam_raw_is_at_feature_resolution(client: ExplainClient) -> None:
    ex = client.explain(image=_random_rgb(1), model="r18", top_k=2, return_raw=True)
    assert ex.heatmaps.shape == (2, 40, 48)
    assert ex.raw is not None
    assert ex.raw.shape == (2, 2, 2)  # layer4 of a ResNet-18 at 64x64
    assert ex.targets == [s.index for s in ex.scores[:2]]


def test_top_k_explains_the_most_probable_classes_in_order(client: ExplainClient) -> None:
    ex = client.explain(image=SAMPLES[1], model="demo", method="saliency", top_k=3)
    assert ex.heatmaps.shape == (3, 64, 64)
    assert ex.targets == [s.index for s in ex.scores[:3]]
    assert ex.labels[0] == "square"


@pytest.mark.parametrize("dtype", ["uint8", "float16"])
def test_size_and_wire_dtype_still_give_float32_in_unit_range(
    client: ExplainClient, dtype: str
) -> None:
    reference = client.explain(image=SAMPLES[3], model="demo", size=(32, 48))
    ex = client.explain(image=SAMPLES[3], model="demo", size=(32, 48), dtype=dtype)
    assert ex.dtype == dtype
    assert ex.heatmap.dtype == np.float32
    assert ex.heatmap.shape == (32, 48)
    assert ex.heatmap.min() >= 0.0 and ex.heatmap.max() <= 1.0
    np.testing.assert_allclose(ex.heatmap, reference.heatmap, atol=1 / 255 + 1e-3)


def test_integrated_gradients_reports_its_completeness_gap(client: ExplainClient) -> None:
    ex = client.explain(
        image=SAMPLES[4], model="demo", method="integrated_gradients", options={"steps": 8}
    )
    assert "completeness_gap" in ex.metrics


def test_embed_returns_a_vector(client: ExplainClient) -> None:
    vector = client.embed(image=SAMPLES[0], model="r18")
    assert vector.dtype == np.float32
    assert vector.shape == (512,)
    unit = client.embed(image=SAMPLES[0], model="r18", normalize=True)
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-4)


def test_activations_maps_top_k_and_profile(client: ExplainClient) -> None:
    every = client.activations(image=SAMPLES[0], model="r18", layer="layer3")
    assert every.layer == "layer3"
    assert every.maps is not None
    assert every.maps.shape == (256, 4, 4)
    assert every.channels == list(range(256))
    top = client.activations(image=SAMPLES[0], model="r18", layer="layer3", top_k=4)
    assert top.maps is not None and top.maps.shape == (4, 4, 4)
    assert len(top.channels) == 4
    assert list(top.profile) == sorted(top.profile, reverse=True)
    profile = client.activations(image=SAMPLES[0], model="r18", layer="layer3", profile_only=True)
    assert profile.maps is None
    assert profile.profile.shape == (256,)


def test_filters_returns_conv_weights(client: ExplainClient) -> None:
    first = client.filters("r18")
    assert first.weights.shape == (64, 3, 7, 7)
    assert first.weights.dtype == np.float32
    assert first.layer
    named = client.filters("r18", layer="layer1.0.conv1")
    assert named.layer == "layer1.0.conv1"
    assert named.weights.shape == (64, 64, 3, 3)


def test_explain_many_keeps_input_order_and_reports_progress(client: ExplainClient) -> None:
    items: list[Any] = [
        *map(str, SAMPLES),
        SAMPLES[0].read_bytes(),
        np.asarray(Image.open(SAMPLES[5]).convert("RGB")),
    ]
    seen: list[tuple[int, int]] = []
    results = client.explain_many(
        items,
        model="demo",
        method="gradcam",
        concurrency=3,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert [r.top.label for r in results] == [*LABELS, "circle", "star"]
    assert seen == [(i, len(items)) for i in range(1, len(items) + 1)]
    single = client.explain(image=SAMPLES[4], model="demo")
    np.testing.assert_allclose(results[4].heatmap, single.heatmap, atol=1e-6)


def test_explain_many_takes_tensors_and_explain_options(client: ExplainClient) -> None:
    rng = np.random.default_rng(5)
    tensors = [rng.standard_normal((3, 64, 64)).astype(np.float32) for _ in range(3)]
    results = client.explain_many(
        tensors, model="mnv3", method="saliency", targets=[7], size=(16, 16), dtype="uint8"
    )
    assert [r.targets for r in results] == [[7]] * 3
    assert all(r.heatmap.shape == (16, 16) and r.dtype == "uint8" for r in results)
    assert client.explain_many([], model="demo") == []


def test_explain_many_collects_errors_per_item(client: ExplainClient, tmp_path: Path) -> None:
    items: list[Any] = [SAMPLES[0], b"not an image", tmp_path / "missing.png", SAMPLES[1]]
    outcomes = client.explain_many(items, model="demo", raise_errors=False, concurrency=2)
    assert isinstance(outcomes[0], Explanation) and isinstance(outcomes[3], Explanation)
    assert outcomes[3].top.label == "square"
    server_side, local = outcomes[1], outcomes[2]
    assert isinstance(server_side, InvalidArgumentError) and server_side.index == 1
    assert isinstance(local, InvalidArgumentError) and local.index == 2
    assert "missing.png" in local.details


def test_explain_many_raises_the_first_error_by_default(client: ExplainClient) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        client.explain_many([SAMPLES[0], b"garbage", SAMPLES[1]], model="demo", concurrency=1)
    assert caught.value.index == 1
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_explain_many_checks_shared_arguments_before_sending(client: ExplainClient) -> None:
    with pytest.raises(InvalidArgumentError, match="dtype"):
        client.explain_many(SAMPLES, model="demo", dtype="int8", raise_errors=False)
    with pytest.raises(InvalidArgumentError, match="concurrency"):
        client.explain_many(SAMPLES, model="demo", concurrency=0)


def test_a_client_is_shared_by_threads(client: ExplainClient) -> None:
    with ThreadPoolExecutor(4) as pool:
        labels = list(pool.map(lambda p: client.explain(image=p, model="demo").top.label, SAMPLES))
    assert labels == LABELS


def test_server_refusals_map_to_the_error_tree(client: ExplainClient) -> None:
    with pytest.raises(NotFoundError) as missing:
        client.explain(image=SAMPLES[0], model="no-such-model")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert "demo" in missing.value.details
    with pytest.raises(InvalidArgumentError) as method:
        client.explain(image=SAMPLES[0], model="demo", method="no-such-method")
    assert isinstance(method.value, ValueError)
    assert method.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(InvalidArgumentError, match="window"):
        client.explain(image=SAMPLES[0], model="demo", method="occlusion", options={"window": -1})
    with pytest.raises(InvalidArgumentError, match="unknown option"):
        client.explain(image=SAMPLES[0], model="demo", options={"bogus": 1})
    with pytest.raises(InvalidArgumentError):
        client.explain(image=SAMPLES[0], model="demo", layer="no.such.layer")
    with pytest.raises(InvalidArgumentError):
        client.explain(image=SAMPLES[0], model="demo", targets=[99])
    with pytest.raises(NotFoundError):
        client.embed(image=SAMPLES[0], model="nope")
    with pytest.raises(CamserveError):
        client.filters("demo", layer="no.such.layer")


def test_local_checks_raise_before_sending(client: ExplainClient) -> None:
    x = np.zeros((3, 64, 64), np.float32)
    with pytest.raises(InvalidArgumentError, match="exactly one"):
        client.explain(image=SAMPLES[0], tensor=x, model="demo")
    with pytest.raises(InvalidArgumentError, match="not both"):
        client.explain(image=SAMPLES[0], model="demo", targets=[1], top_k=2)
    with pytest.raises(InvalidArgumentError, match="uint8"):
        client.explain(image=x, model="demo")


def test_async_client_mirrors_the_blocking_one(server: ServerThread) -> None:
    async def scenario() -> None:
        async with AsyncExplainClient(server.address, timeout=60) as aclient:
            assert [m.name for m in await aclient.models()] == ["demo", "r18", "mnv3"]
            assert "gradcam" in {m.id for m in await aclient.methods()}
            assert await aclient.health() == "SERVING"
            ex = await aclient.explain(image=SAMPLES[5], model="demo", top_k=2)
            assert ex.heatmaps.shape == (2, 64, 64) and ex.top.label == "star"
            progress: list[int] = []
            many = await aclient.explain_many(
                SAMPLES, model="demo", concurrency=2, progress=lambda d, t: progress.append(d)
            )
            assert [r.top.label for r in many] == LABELS
            assert progress == list(range(1, 7))
            outcomes = await aclient.explain_many(
                [SAMPLES[0], b"junk"], model="demo", raise_errors=False
            )
            assert isinstance(outcomes[1], InvalidArgumentError) and outcomes[1].index == 1
            with pytest.raises(InvalidArgumentError) as caught:
                await aclient.explain_many(
                    [SAMPLES[0], b"junk", SAMPLES[1]], model="demo", concurrency=1
                )
            assert caught.value.index == 1
            assert (await aclient.embed(image=SAMPLES[0], model="r18")).shape == (512,)
            acts = await aclient.activations(image=SAMPLES[0], model="r18", top_k=2)
            assert acts.maps is not None and acts.maps.shape[0] == 2
            assert (await aclient.filters("r18")).weights.ndim == 4
            with pytest.raises(NotFoundError):
                await aclient.explain(image=SAMPLES[0], model="missing")
            with pytest.raises(InvalidArgumentError):
                await aclient.explain(image=SAMPLES[0], model="demo", method="nope")

    asyncio.run(scenario())


# --- fake servers ----------------------------------------------------------------------------

MODELS_REPLY = pb.ListModelsResponse(models=[pb.ModelInfo(name="fake", num_classes=2)])


class FakeService(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers every RPC of the contract: fails the first ``failures`` calls with ``code``,
    sleeps ``delay`` seconds, then replies; counts attempts and keeps the last metadata."""

    def __init__(self) -> None:
        self.code = grpc.StatusCode.UNAVAILABLE
        self.failures: int | None = 0  # None: fail every call
        self.delay = 0.0
        self.attempts = 0
        self.metadata: dict[str, str] = {}
        self.stream_item_error: int | None = None
        self._lock = threading.Lock()

    def configure(self, code: grpc.StatusCode, failures: int | None) -> None:
        with self._lock:
            self.code, self.failures, self.attempts = code, failures, 0

    def _attempt(self, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.attempts += 1
            self.metadata = {k: str(v) for k, v in context.invocation_metadata()}
            fail = self.failures is None or self.attempts <= self.failures
        if fail:
            context.abort(self.code, f"fake {self.code.name.lower()}")
        time.sleep(self.delay)

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._attempt(context)
        return MODELS_REPLY.SerializeToString()

    def _stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._attempt(context)
        for raw in requests:
            request = pb.ExplainRequest.FromString(raw)
            error = pb.Error(code=self.stream_item_error or 13, message="fake item failure")
            reply = pb.ExplainStreamResponse(request_id=request.request_id, error=error)
            yield reply.SerializeToString()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if details.method.endswith("/ExplainStream"):
            return grpc.stream_stream_rpc_method_handler(self._stream)
        return grpc.unary_unary_rpc_method_handler(self._unary)


@pytest.fixture(scope="module")
def fake() -> Iterator[tuple[FakeService, str]]:
    service = FakeService()
    server = grpc.server(ThreadPoolExecutor(4), handlers=[service])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield service, f"127.0.0.1:{port}"
    server.stop(0)


@pytest.fixture
def fake_service(fake: tuple[FakeService, str]) -> FakeService:
    service = fake[0]
    service.configure(grpc.StatusCode.UNAVAILABLE, 0)
    service.delay = 0.0
    service.stream_item_error = None
    return service


STATUS_CLASSES: list[tuple[grpc.StatusCode, type[CamserveError]]] = [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
    (grpc.StatusCode.NOT_FOUND, NotFoundError),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, OverloadedError),
    (grpc.StatusCode.UNAVAILABLE, UnavailableError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
    (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
    (grpc.StatusCode.PERMISSION_DENIED, UnauthenticatedError),
    (grpc.StatusCode.ALREADY_EXISTS, ConflictError),
    (grpc.StatusCode.FAILED_PRECONDITION, ConflictError),
    (grpc.StatusCode.INTERNAL, InternalError),
    (grpc.StatusCode.UNIMPLEMENTED, InternalError),
]


@pytest.mark.parametrize(("code", "error"), STATUS_CLASSES, ids=lambda v: getattr(v, "name", ""))
def test_each_status_maps_to_its_error(
    fake: tuple[FakeService, str],
    fake_service: FakeService,
    code: grpc.StatusCode,
    error: type[CamserveError],
) -> None:
    fake_service.configure(code, None)
    with ExplainClient(fake[1], timeout=10, max_attempts=1) as c:
        with pytest.raises(error) as caught:
            c.models()
        with pytest.raises(error):
            c.explain(image=SAMPLES[0], model="fake")
    assert caught.value.code == code
    assert caught.value.details == f"fake {code.name.lower()}"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_unavailable_is_retried_until_it_succeeds(
    fake: tuple[FakeService, str], fake_service: FakeService
) -> None:
    fake_service.configure(grpc.StatusCode.UNAVAILABLE, 2)
    with ExplainClient(fake[1], timeout=10) as c:
        assert [m.name for m in c.models()] == ["fake"]
    assert fake_service.attempts == 3


@pytest.mark.parametrize(
    ("code", "failures", "limit", "error", "attempts"),
    [
        (grpc.StatusCode.UNAVAILABLE, None, {"max_attempts": 3}, UnavailableError, 3),
        (grpc.StatusCode.UNAVAILABLE, 1, {"max_attempts": 1}, UnavailableError, 1),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 1, {}, OverloadedError, 1),
    ],
    ids=["retries-stop-at-max-attempts", "one-attempt-is-not-retried", "other-codes-not-retried"],
)
def test_retries_stop_at_max_attempts_and_other_codes_are_not_retried(
    fake: tuple[FakeService, str],
    fake_service: FakeService,
    code: grpc.StatusCode,
    failures: int | None,
    limit: dict[str, Any],
    error: type[CamserveError],
    attempts: int,
) -> None:
    fake_service.configure(code, failures)
    with ExplainClient(fake[1], timeout=10, **limit) as c, pytest.raises(error):
        c.models()
    assert fake_service.attempts == attempts


def test_async_client_retries_unavailable_too(
    fake: tuple[FakeService, str], fake_service: FakeService
) -> None:
    fake_service.configure(grpc.StatusCode.UNAVAILABLE, 2)

    async def scenario() -> list[str]:
        async with AsyncExplainClient(fake[1], timeout=10) as c:
            return [m.name for m in await c.models()]

    assert asyncio.run(scenario()) == ["fake"]
    assert fake_service.attempts == 3


def test_the_default_deadline_applies(
    fake: tuple[FakeService, str], fake_service: FakeService
) -> None:
    fake_service.delay = 1.5
    started = time.monotonic()
    with ExplainClient(fake[1], timeout=0.3) as c, pytest.raises(DeadlineExceededError):
        c.models()
    assert time.monotonic() - started < 1.2
    with ExplainClient(fake[1], timeout=10) as c, pytest.raises(DeadlineExceededError):
        c.models(timeout=0.3)


def test_a_token_travels_as_bearer_metadata(
    fake: tuple[FakeService, str], fake_service: FakeService
) -> None:
    with ExplainClient(fake[1], token="s3cret") as c:
        c.models()
    assert fake_service.metadata["authorization"] == "Bearer s3cret"


def test_stream_item_errors_and_whole_stream_failures(
    fake: tuple[FakeService, str], fake_service: FakeService
) -> None:
    fake_service.stream_item_error = grpc.StatusCode.NOT_FOUND.value[0]
    with ExplainClient(fake[1], timeout=10) as c:
        outcomes = c.explain_many(SAMPLES[:3], model="fake", raise_errors=False)
        assert [type(o) for o in outcomes] == [NotFoundError] * 3
        assert [o.index for o in outcomes if isinstance(o, CamserveError)] == [0, 1, 2]
        fake_service.configure(grpc.StatusCode.RESOURCE_EXHAUSTED, None)
        with pytest.raises(OverloadedError):
            c.explain_many(SAMPLES[:3], model="fake")
        outcomes = c.explain_many(SAMPLES[:3], model="fake", raise_errors=False)
        assert [type(o) for o in outcomes] == [OverloadedError] * 3
        assert [o.index for o in outcomes if isinstance(o, CamserveError)] == [0, 1, 2]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_an_unreachable_server_fails_fast_with_unavailable() -> None:
    started = time.monotonic()
    with (
        ExplainClient(f"127.0.0.1:{_closed_port()}", timeout=5) as c,
        pytest.raises((UnavailableError, DeadlineExceededError)),
    ):
        c.models()
    assert time.monotonic() - started < 5.5


# --- TLS against a fake server -----------------------------------------------------------------


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("sdk-pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
                 "-extfile", str(d / "san.ext"), "-out", str(d / f"{name}.pem"))  # fmt: skip
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}


def test_mutual_tls_with_a_token(pki: dict[str, Path]) -> None:
    service = FakeService()
    server = grpc.server(ThreadPoolExecutor(2), handlers=[service])
    credentials = grpc.ssl_server_credentials(
        [(pki["server_key"].read_bytes(), pki["server_pem"].read_bytes())],
        root_certificates=pki["ca_pem"].read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        with ExplainClient(
            f"127.0.0.1:{port}",
            timeout=10,
            root_certificates=pki["ca_pem"],
            certificate_chain=pki["client_pem"],
            private_key=pki["client_key"].read_bytes(),
            token="tls-token",
        ) as c:
            assert [m.name for m in c.models()] == ["fake"]
        assert service.metadata["authorization"] == "Bearer tls-token"
        with (
            ExplainClient(
                f"127.0.0.1:{port}", timeout=3, tls=True, root_certificates=pki["ca_pem"]
            ) as c,
            pytest.raises(UnavailableError),
        ):
            c.models()  # no client certificate: the handshake fails
    finally:
        server.stop(0)


def test_unreadable_certificates_are_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="root certificates"):
        ExplainClient("127.0.0.1:1", root_certificates=tmp_path / "missing.pem")
