"""`lookalike health` against real servers on 127.0.0.1: SERVING (exit 0), NOT_SERVING (exit 1),
and, when no server answers, why (exit 2): nothing listens, no answer, or TLS on one side only."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from lookalike import cli
from lookalike.app.compose import blobs_from, engine_from, store_from
from lookalike.core.settings import ServerSettings, Settings
from lookalike.embedder.runtime import Embedder
from lookalike.services.client import LookalikeClient
from lookalike.services.reachability import PLAINTEXT_TO_TLS, TLS_TO_PLAINTEXT, HealthStatus
from lookalike.services.server import RunningServer, start_server
from tests.conftest import encode, free_port, gradient_image, make_settings
from tests.services.certs import self_signed


@dataclass
class Servers:
    """A plaintext and a TLS server over one collection, the TLS one's certificate, and the
    settings they were built from."""

    plain: RunningServer
    tls: RunningServer
    cert: Path
    settings: Settings


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, embedder: Embedder) -> Iterator[Servers]:
    """Both servers over an empty collection; their health reports every 0.1 s."""
    settings = make_settings(tmp_path_factory.mktemp("health-data"))
    cert, key = self_signed(tmp_path_factory.mktemp("health-certs"))
    engine = engine_from(settings, embedder, store_from(settings, embedder), blobs_from(settings))
    plain = start_server(engine, ServerSettings(host="127.0.0.1", port=0, health_interval_s=0.1))
    try:
        tls = start_server(engine, ServerSettings(host="127.0.0.1", port=0, tls_cert=str(cert),
                                                  tls_key=str(key), health_interval_s=0.1))
        try:
            yield Servers(plain, tls, cert, settings)
        finally:
            tls.stop(grace_s=1.0)
    finally:
        plain.stop(grace_s=1.0)


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.delenv("LOOKALIKE_CLIENT__TLS_CA", raising=False)


def _health(address: str, capsys: pytest.CaptureFixture[str],
            timeout_s: float = 3.0) -> tuple[int, str, str]:
    code = cli.main(["health", "--address", address, "--timeout", str(timeout_s)])
    out, err = capsys.readouterr()
    return code, out, err


def test_nothing_listening_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    """A port where nothing listens: exit 2, "cannot reach ADDRESS: connection refused"."""
    address = f"127.0.0.1:{free_port()}"
    assert _health(address, capsys) == (
        cli.EXIT_UNREACHABLE, "", f"error: cannot reach {address}: connection refused\n"
    )


def test_a_silent_listener_is_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    """A port that accepts connections but never answers: exit 2, "connection accepted, but no
    answer", in under two seconds with a 0.5 s timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        code, out, err = _health(address, capsys, timeout_s=0.5)
        took = time.monotonic() - started
    assert (code, out, err) == (
        cli.EXIT_UNREACHABLE, "",
        f"error: cannot reach {address}: connection accepted, but no answer within 0.5 s\n",
    )
    assert took < 2.0


def test_plaintext_server_and_client_serve(
    servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plaintext client of a plaintext server: exit 0, "ADDRESS: SERVING"."""
    address = servers.plain.address
    assert _health(address, capsys) == (cli.EXIT_OK, f"{address}: SERVING\n", "")


def test_tls_client_of_a_plaintext_server_gets_a_hint(
    servers: Servers, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TLS client (LOOKALIKE_CLIENT__TLS_CA set) of a plaintext server: exit 2 and the hint
    that the server speaks plaintext."""
    monkeypatch.setenv("LOOKALIKE_CLIENT__TLS_CA", str(servers.cert))
    address = servers.plain.address
    assert _health(address, capsys) == (
        cli.EXIT_UNREACHABLE, "", f"error: cannot reach {address}: {TLS_TO_PLAINTEXT}\n"
    )
    assert "LOOKALIKE_CLIENT__TLS_CA" in TLS_TO_PLAINTEXT


def test_plaintext_client_of_a_tls_server_gets_a_hint(
    servers: Servers, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plaintext client of a TLS server: exit 2 and the hint to set LOOKALIKE_CLIENT__TLS_CA;
    with it set to the server's certificate: SERVING."""
    address = servers.tls.address
    assert _health(address, capsys) == (
        cli.EXIT_UNREACHABLE, "", f"error: cannot reach {address}: {PLAINTEXT_TO_TLS}\n"
    )
    assert "set LOOKALIKE_CLIENT__TLS_CA" in PLAINTEXT_TO_TLS
    monkeypatch.setenv("LOOKALIKE_CLIENT__TLS_CA", str(servers.cert))
    assert _health(address, capsys) == (cli.EXIT_OK, f"{address}: SERVING\n", "")


def test_tls_client_trusting_another_ca_is_no_mismatch(
    servers: Servers, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A TLS client of a TLS server whose certificate it does not trust: exit 2 with gRPC's
    reason, not a transport hint."""
    other, _ = self_signed(tmp_path, "other")
    monkeypatch.setenv("LOOKALIKE_CLIENT__TLS_CA", str(other))
    code, out, err = _health(servers.tls.address, capsys)
    assert (code, out) == (cli.EXIT_UNREACHABLE, "")
    assert err.startswith(f"error: cannot reach {servers.tls.address}: ")
    assert "LOOKALIKE_CLIENT__TLS_CA" not in err
    assert "CERTIFICATE_VERIFY_FAILED" in err


def test_other_commands_get_the_transport_hint(
    servers: Servers, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`lookalike search` in plaintext against a TLS server ends with the same hint (exit 1)."""
    image = tmp_path / "query.jpg"
    image.write_bytes(encode(gradient_image()))
    code = cli.main(["search", str(image), "--address", servers.tls.address])
    out, err = capsys.readouterr()
    assert (code, out) == (cli.EXIT_ERROR, "")
    assert err.startswith("error: unavailable: ")
    assert err.endswith(f" ({PLAINTEXT_TO_TLS})\n")


def test_not_serving_server_exits_1(
    tmp_path: Path, embedder: Embedder, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server that answers NOT_SERVING (its blob store is gone): exit 1, "ADDRESS: NOT_SERVING"."""
    settings = make_settings(tmp_path / "data")
    engine = engine_from(settings, embedder, store_from(settings, embedder), blobs_from(settings))
    running = start_server(engine, ServerSettings(host="127.0.0.1", port=0, health_interval_s=0.1,
                                                  tokens=[SecretStr("t")]))
    try:
        shutil.rmtree(settings.data_dir / "blobs")
        with LookalikeClient(running.address, timeout_s=5) as client:
            deadline = time.monotonic() + 10
            while client.health().status is not HealthStatus.NOT_SERVING:
                assert time.monotonic() < deadline, "the server never turned NOT_SERVING"
                time.sleep(0.05)
        address = running.address
        assert _health(address, capsys) == (cli.EXIT_ERROR, f"{address}: NOT_SERVING\n", "")
    finally:
        running.stop(grace_s=1.0)
