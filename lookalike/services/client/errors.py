"""The one error a client call raises: the gRPC status, the server's explanation and where the
call went."""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """A call that failed, with the gRPC status, the server's explanation and, when the server
    answered, the request id it logged the call under; the address called, and whether over TLS
    (for `diagnose_unreachable`)."""

    def __init__(
        self, code: grpc.StatusCode, message: str, request_id: str = "", *, address: str = "",
        tls: bool = False,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.address = address
        self.tls = tls

    @property
    def unreachable(self) -> bool:
        """Whether the server could not be reached at all (rather than answering UNAVAILABLE
        because one of its own stores is down)."""
        return bool(self.code == grpc.StatusCode.UNAVAILABLE) and not self.request_id


def request_id(exc: grpc.RpcError) -> str:
    """The request id the server sent back with its error; "" when no server answered."""
    trailing = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    return next((str(v) for k, v in trailing or () if k == "x-request-id"), "")
