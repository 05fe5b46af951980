"""``python -m camserve_server.healthcheck`` (the images' HEALTHCHECK, the TLS exec probes)
against real servers: plaintext, TLS, a stopped server, an unknown service."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from camserve_server import healthcheck
from camserve_server.app import SERVICE_NAME
from server_harness import ServerThread, settings_for


def _env(port: int, **extra: str) -> dict[str, str]:
    """The container's view: the server's settings as CAMSERVE_* variables."""
    return {"CAMSERVE_HOST": "0.0.0.0", "CAMSERVE_PORT": str(port), **extra}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    thread = ServerThread(settings_for())  # the demo model, on 127.0.0.1
    thread.start()
    yield thread
    thread.stop(grace_s=0.5)


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA and a server certificate signed by it, naming 'camserve' (not localhost)."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))  # fmt: skip
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=camserve",
             "-keyout", str(d / "tls.key"), "-out", str(d / "tls.csr"))  # fmt: skip
    (d / "ext").write_text("subjectAltName=DNS:camserve,DNS:camserve-headless\n")
    _openssl("x509", "-req", "-in", str(d / "tls.csr"), "-CA", str(d / "ca.crt"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
             "-extfile", str(d / "ext"), "-out", str(d / "tls.crt"))  # fmt: skip
    return {"ca": d / "ca.crt", "cert": d / "tls.crt", "key": d / "tls.key"}


def test_serving_server_exits_0(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main([], env=_env(server.port)) == 0
    assert "SERVING" in capsys.readouterr().err


def test_the_explain_service_is_checked_by_name(server: ServerThread) -> None:
    assert healthcheck.main(["--service", SERVICE_NAME], env=_env(server.port)) == 0


def test_an_unknown_service_exits_1(
    server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    assert healthcheck.main(["--service", "no.such.Service"], env=_env(server.port)) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_nothing_listening_exits_1_within_the_timeout() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert healthcheck.main(["--timeout", "1"], env=_env(port)) == 1


def test_a_draining_server_is_not_serving(tmp_path: Path) -> None:
    thread = ServerThread(settings_for())
    thread.start()
    try:
        assert thread.runtime is not None
        thread.call(thread.runtime.health.enter_graceful_shutdown())  # what SIGTERM does first
        assert healthcheck.main([], env=_env(thread.port)) == 1
    finally:
        thread.stop(grace_s=0.5)


def test_tls_with_the_ca_and_the_certificate_name(pki: dict[str, Path]) -> None:
    settings = settings_for(tls_cert=str(pki["cert"]), tls_key=str(pki["key"]))
    thread = ServerThread(settings)
    thread.start()
    try:
        env = _env(
            thread.port,
            CAMSERVE_TLS_CERT=str(pki["cert"]),
            CAMSERVE_TLS_KEY=str(pki["key"]),
            CAMSERVE_HEALTHCHECK_CA=str(pki["ca"]),
            CAMSERVE_HEALTHCHECK_SERVER_NAME="camserve",
        )
        assert healthcheck.main([], env=env) == 0
        # Without the name in the certificate, verification fails: no silent downgrade.
        assert healthcheck.main(["--server-name", "", "--timeout", "2"], env=env) == 1
        # A plaintext check of a TLS port fails.
        assert healthcheck.main(["--timeout", "2"], env=_env(thread.port)) == 1
    finally:
        thread.stop(grace_s=0.5)


def test_the_module_runs_without_importing_torch(server: ServerThread) -> None:
    """A probe runs every few seconds: it must stay a small Python process."""
    code = (
        "import sys, runpy\n"
        "sys.argv = ['healthcheck']\n"
        "try:\n"
        "    runpy.run_module('camserve_server.healthcheck', run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    assert 'torch' not in sys.modules, 'torch was imported'\n"
        "    raise\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={"CAMSERVE_PORT": str(server.port), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
