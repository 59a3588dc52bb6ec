"""Filter expressions over the stored fields, built from plain values so that nobody has to
quote Milvus strings by hand: labels, tags, where an image came from, when it was ingested."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from lookalike.core.errors import InvalidArgument


def quote(text: str) -> str:
    """`text` as a Milvus string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_unix(value: str) -> int:
    """Unix seconds of an ISO date (2026-11-23, midnight UTC) or date-time, or of a number."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgument(
            f"{value!r} is not a date: use YYYY-MM-DD, an ISO date-time or unix seconds"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


def build_filter(
    *,
    labels: Sequence[str] = (),
    tags: Sequence[str] = (),
    source_prefix: str = "",
    since: str | date | None = None,
    until: str | date | None = None,
    expression: str = "",
) -> str:
    """One expression: any of `labels`, all of `tags`, a source starting with `source_prefix`,
    ingested at or after `since` and before `until`, and `expression` as given; "" for none."""
    clauses = []
    if labels:
        clauses.append(f"label in [{', '.join(quote(x) for x in labels)}]")
    clauses += [f"ARRAY_CONTAINS(tags, {quote(t)})" for t in tags]
    if source_prefix:
        escaped = source_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(f"source like {quote(escaped + '%')}")
    if since is not None:
        clauses.append(f"ingested_at >= {_seconds(since)}")
    if until is not None:
        clauses.append(f"ingested_at < {_seconds(until)}")
    if expression.strip():
        clauses.append(f"({expression})")
    return " and ".join(clauses)


def _seconds(value: str | date) -> int:
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp())
    return to_unix(value)
