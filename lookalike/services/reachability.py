"""Why no gRPC server answered at an address: nothing listens, it does not answer, or it
speaks TLS to a plaintext client (or plaintext to a TLS one); and what a health check found."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from enum import StrEnum


class HealthStatus(StrEnum):
    """A health check's outcome: what a server answered, or why none did."""

    SERVING = "SERVING"
    NOT_SERVING = "NOT_SERVING"
    # Nothing answered: refused, unresolvable, silent, or a gRPC failure the probe cannot explain.
    UNREACHABLE = "UNREACHABLE"
    # A server listens, but speaks TLS to this plaintext client or plaintext to this TLS one.
    TRANSPORT_MISMATCH = "TRANSPORT_MISMATCH"


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """A health check's outcome and, for any but SERVING, what to tell the user ("" when the
    server simply answered NOT_SERVING)."""

    status: HealthStatus
    detail: str = ""


class Listener(StrEnum):
    """What `probe_transport` found at an address."""

    NOTHING = "nothing"  # no TCP connection: refused, unresolvable or unanswered
    SILENT = "silent"  # a TCP connection is accepted, then nothing answers the TLS handshake
    TLS = "tls"  # a TLS handshake completes
    PLAINTEXT = "plaintext"  # a TCP connection is accepted, the TLS handshake refused
    UNKNOWN = "unknown"  # not a host:port the probe can connect to (a unix socket, say)


@dataclass(frozen=True, slots=True)
class TransportProbe:
    """What listens at an address and, when nothing does or it is silent, why."""

    listener: Listener
    reason: str = ""


PLAINTEXT_TO_TLS = ("the server speaks TLS and this client connects in plaintext: set "
                    "LOOKALIKE_CLIENT__TLS_CA to the CA certificate (PEM) that signed the "
                    "server's")
TLS_TO_PLAINTEXT = ("the server speaks plaintext and this client connects with TLS: unset "
                    "LOOKALIKE_CLIENT__TLS_CA, or give the server a certificate "
                    "(LOOKALIKE_SERVER__TLS_CERT and LOOKALIKE_SERVER__TLS_KEY)")


def _host_port(address: str) -> tuple[str, int] | None:
    """The host and port of a gRPC target ("host:port", "[v6]:port", "dns:///host:port",
    "ipv4:a.b.c.d:port"); None for any other form."""
    for scheme in ("dns:///", "ipv4:", "ipv6:"):
        address = address.removeprefix(scheme)
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or "," in host:
        return None
    return host.removeprefix("[").removesuffix("]"), int(port)


def probe_transport(address: str, timeout_s: float = 1.0) -> TransportProbe:
    """What listens at `address`: a TCP connect tells whether anything does (refused, or no
    answer within `timeout_s`), then a TLS handshake offering ALPN h2, certificate unverified,
    whether it speaks TLS (a gRPC server over TLS completes it; a plaintext one drops a
    connection that does not open with the HTTP/2 preface)."""
    target = _host_port(address)
    if target is None:
        return TransportProbe(Listener.UNKNOWN)
    host, port = target
    try:
        connection = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror as exc:
        return TransportProbe(Listener.NOTHING, f"cannot resolve {host}: {exc.strerror}")
    except ConnectionRefusedError:
        return TransportProbe(Listener.NOTHING, "connection refused")
    except TimeoutError:
        return TransportProbe(Listener.NOTHING, f"no answer within {timeout_s:g} s")
    except OSError as exc:
        return TransportProbe(Listener.NOTHING, exc.strerror or str(exc))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with connection:
        try:
            # On failure the TLS socket closes the connection's descriptor itself.
            with context.wrap_socket(connection, server_hostname=host):
                return TransportProbe(Listener.TLS)
        except TimeoutError:
            return TransportProbe(Listener.SILENT,
                                  f"connection accepted, but no answer within {timeout_s:g} s")
        except OSError:  # a TLS alert, a reset or end of stream: not TLS
            return TransportProbe(Listener.PLAINTEXT)


def diagnose_unreachable(
    address: str, tls: bool, failure: str, timeout_s: float = 1.0
) -> HealthCheck:
    """Why a client (over TLS or not) got no answer from `address`: TRANSPORT_MISMATCH with
    what to change when the server speaks the other transport, else UNREACHABLE with the
    probe's reason (connection refused, no answer within ...) or, when a server listens on
    the right transport, `failure` (gRPC's explanation: a certificate it does not trust, say).
    """
    probe = probe_transport(address, timeout_s)
    if probe.listener in (Listener.NOTHING, Listener.SILENT):
        return HealthCheck(HealthStatus.UNREACHABLE, probe.reason)
    if probe.listener is Listener.TLS and not tls:
        return HealthCheck(HealthStatus.TRANSPORT_MISMATCH, PLAINTEXT_TO_TLS)
    if probe.listener is Listener.PLAINTEXT and tls:
        return HealthCheck(HealthStatus.TRANSPORT_MISMATCH, TLS_TO_PLAINTEXT)
    return HealthCheck(HealthStatus.UNREACHABLE, failure)
