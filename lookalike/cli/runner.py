"""How a command ends: its exit code, and a typed error as one `error:` line, not a traceback.

Both entry points, `lookalike` and `python -m bench`, run their commands through `run_command`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from lookalike.core.errors import LookalikeError
from lookalike.embedder.errors import EmbedderError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_SOME_FILES_FAILED = 3
# `lookalike health`: no server answered (nothing listens, or it speaks the other transport).
EXIT_UNREACHABLE = 2


def run_command(args: argparse.Namespace) -> int:
    """Build the settings once and run `args.func(settings, args)`; typed errors become a
    one-line message and exit code 1."""
    # Loaded here, not at start: `--help` and a parse error need no pydantic.
    from lookalike.core.settings import Settings

    # Milvus Lite logs a traceback for conditions this CLI reports in one line of its own
    # (a data file locked by a running server, say).
    logging.getLogger("milvus_lite").setLevel(logging.CRITICAL)
    settings = Settings()
    try:
        return int(args.func(settings, args))
    except (LookalikeError, EmbedderError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        line = _client_error_line(exc)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return EXIT_ERROR


def _client_error_line(exc: Exception) -> str | None:
    """The `error:` line of a failed gRPC call (with why no server answered, when none did);
    None when `exc` is something else. The client, and grpc with it, load only here: a command
    that raised a client error has loaded them already, the others need not pay for them."""
    from lookalike.services.client import ClientError

    if not isinstance(exc, ClientError):
        return None
    hint = ""
    if exc.unreachable:
        from lookalike.services.reachability import HealthStatus, diagnose_unreachable

        why = diagnose_unreachable(exc.address, exc.tls, exc.message)
        hint = (f" ({why.detail})" if why.status is HealthStatus.TRANSPORT_MISMATCH
                else " (is `lookalike serve` running there?)")
    return f"error: {exc.code.name.lower()}: {exc.message}{hint}"
