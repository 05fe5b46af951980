"""TLS, mutual TLS and bearer-token auth on a real channel; health stays open for probes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rpc_helpers import request, tensor_input

from camserve.v1 import explain_pb2_grpc
from server_harness import ServerThread, settings_for, write_r18_config

TOKEN = "s3cret-token"


def _certificate(folder: Path, name: str, ca: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.pem"
    subject = ["-subj", f"/CN={name}"]
    if ca is None:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(key), "-out", str(cert), *subject,
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        return key, cert
    csr = folder / f"{name}.csr"
    ext = folder / f"{name}.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(csr), *subject],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("pki")
    ca = _certificate(folder, "camserve-test-ca")
    return {
        "ca": ca,
        "server": _certificate(folder, "localhost", ca),
        "client": _certificate(folder, "client", ca),
    }


@pytest.fixture(scope="module")
def secure_server(
    tmp_path_factory: pytest.TempPathFactory, pki: dict[str, tuple[Path, Path]]
) -> Iterator[ServerThread]:
    config = write_r18_config(tmp_path_factory.mktemp("secure"))
    key, cert = pki["server"]
    settings = settings_for(
        config,
        tls_cert=str(cert),
        tls_key=str(key),
        tls_client_ca=str(pki["ca"][1]),
        auth_tokens=(TOKEN, "another-token"),
    )
    thread = ServerThread(settings)
    thread.start()
    yield thread
    thread.stop()


def _channel(
    server: ServerThread, pki: dict[str, tuple[Path, Path]], *, client_cert: bool = True
) -> grpc.Channel:
    key, cert = pki["client"]
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"][1].read_bytes(),
        private_key=key.read_bytes() if client_cert else None,
        certificate_chain=cert.read_bytes() if client_cert else None,
    )
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


def test_valid_token_over_mutual_tls_is_served(
    secure_server: ServerThread, pki: dict[str, tuple[Path, Path]]
) -> None:
    stub = explain_pb2_grpc.ExplainServiceStub(_channel(secure_server, pki))
    reply = stub.Explain(
        request("r18", "gradcam", tensor_input(1)),
        metadata=[("authorization", f"Bearer {TOKEN}")],
    )
    assert reply.heatmaps


@pytest.mark.parametrize(
    "metadata", [[], [("authorization", "Bearer wrong")], [("authorization", TOKEN)]]
)
def test_missing_or_wrong_token_is_unauthenticated(
    secure_server: ServerThread, pki: dict[str, tuple[Path, Path]], metadata: list[tuple[str, str]]
) -> None:
    stub = explain_pb2_grpc.ExplainServiceStub(_channel(secure_server, pki))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request("r18", "gradcam", tensor_input(1)), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_stream_without_token_is_unauthenticated(
    secure_server: ServerThread, pki: dict[str, tuple[Path, Path]]
) -> None:
    stub = explain_pb2_grpc.ExplainServiceStub(_channel(secure_server, pki))
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.ExplainStream(iter([request("r18", "gradcam", tensor_input(1))])))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_token(
    secure_server: ServerThread, pki: dict[str, tuple[Path, Path]]
) -> None:
    health = health_pb2_grpc.HealthStub(_channel(secure_server, pki))
    reply = health.Check(health_pb2.HealthCheckRequest(service=""))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_client_without_certificate_is_refused(
    secure_server: ServerThread, pki: dict[str, tuple[Path, Path]]
) -> None:
    health = health_pb2_grpc.HealthStub(_channel(secure_server, pki, client_cert=False))
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_cannot_talk_to_a_tls_server(secure_server: ServerThread) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{secure_server.port}")
    stub = explain_pb2_grpc.ExplainServiceStub(channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Explain(request("r18", "gradcam", tensor_input(1)), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
