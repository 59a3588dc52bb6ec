"""The path policy: every file a request makes the server read is checked here first.

A request names paths in two ways: a job's source or folder (checked against the server's job
roots by `JobRoots`), and the file names a dataset's manifest lists (checked against the dataset
folder by `manifest_member`). Both are resolved (`..` and links followed) and then required to
lie inside; names are refused as malformed before the file system sees them (NUL bytes, longer
than the kernel takes). A refusal names what the request said and never what lies outside: it
reads the same whether anything exists there or not. `read_exact` then reads a checked file
and refuses it when a link put in its way since the check redirects the open.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from lookalike.core.errors import ConfigError, InvalidArgument, NotFound

ROOTS_SETTING = "LOOKALIKE_SERVER__JOB_ROOTS"
# Linux's PATH_MAX (4096 with its NUL) and NAME_MAX: longer names fail in the kernel
# (ENAMETOOLONG), so they are refused as malformed requests before any file-system call.
MAX_PATH_BYTES = 4095
MAX_NAME_BYTES = 255
# How much of a refused name a message quotes: a 4 KB name does not belong in a log line.
_SHOWN_CHARS = 120
_PROC_FD = Path("/proc/self/fd")


class PathRefused(InvalidArgument):
    """A path the server will not read: malformed, outside the job roots, or leading out of the
    folder that named it."""


class LinkRedirected(OSError):
    """A checked file whose path a link now redirects elsewhere (it changed after the check)."""


def shown(text: str) -> str:
    """`text` quoted for a message, cut to a readable length."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"


def checked_name(text: str, what: str) -> str:
    """`text` when the file system can take it as a path; PathRefused naming `what` for NUL
    bytes and for paths or names longer than the kernel allows."""
    if "\x00" in text:
        raise PathRefused(f"{what} {shown(text)} contains a NUL byte")
    encoded = os.fsencode(text)
    if len(encoded) > MAX_PATH_BYTES:
        raise PathRefused(f"{what} {shown(text)} is {len(encoded)} bytes long: paths are limited "
                          f"to {MAX_PATH_BYTES}")
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > MAX_NAME_BYTES:
        raise PathRefused(f"{what} {shown(text)} has a name of {longest} bytes: names are "
                          f"limited to {MAX_NAME_BYTES}")
    return text


def _resolved(path: Path, what: str, text: str) -> Path:
    try:
        return path.expanduser().resolve()
    except RuntimeError:  # `~user` of a user this machine does not have
        raise PathRefused(f"{what} {shown(text)}: no such user's home on the server") from None
    except OSError:
        raise PathRefused(f"{what} {shown(text)} cannot be resolved on the server") from None


class JobRoots:
    """The folders and s3://bucket/prefix roots a server's jobs may read (server.job_roots)."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = tuple(roots)

    def source(self, text: str, what: str = "source") -> str:
        """`text` as a job reads it: an s3:// address under an s3 root, or a path resolved (so
        `..` and links cannot leave a root) inside a folder root. ConfigError without roots;
        PathRefused for a malformed or outside path, decided without looking at whether
        anything exists outside; NotFound for a path inside that does not exist."""
        text = text.strip()
        if not self.roots:
            raise ConfigError(
                f"this server reads no job sources: set server.job_roots ({ROOTS_SETTING}, a "
                "JSON list) to the folders and s3://bucket/prefix roots its jobs may read"
            )
        if not text:
            raise InvalidArgument(f"give a folder on the server or an s3://bucket/prefix as the "
                                  f"{what}")
        checked_name(text, what)
        if text.startswith("s3://"):
            return self._s3(text, what)
        if "://" in text:
            raise PathRefused(f"{what} {shown(text)}: jobs read folders on the server and "
                              "s3://bucket/prefix addresses only")
        if any(c in text for c in "*?["):
            raise PathRefused(f"{what} {shown(text)}: give one folder or file, not a pattern")
        resolved = _resolved(Path(text), what, text)
        inside = [root for r in self.roots if "://" not in r
                  for root in (_resolved(Path(r), "job root", r),)]
        if not any(resolved.is_relative_to(root) for root in inside):
            raise self._outside(text, what)
        try:
            exists = resolved.exists()
        except OSError as exc:
            raise PathRefused(f"{what} {shown(text)} cannot be read: {exc.strerror}") from None
        if not exists:
            raise NotFound(f"{resolved} does not exist on the server")
        return str(resolved)

    def folder(self, text: str, what: str) -> Path:
        """A folder inside the roots (`source` on a path that must be a folder): `what` names
        what the folder is for in messages."""
        source = self.source(text, f"{what} folder")
        if source.startswith("s3://") or not Path(source).is_dir():
            raise InvalidArgument(f"{source} is not a folder on the server: {what} reads a "
                                  "labelled folder")
        return Path(source)

    def _s3(self, text: str, what: str) -> str:
        if any(part in (".", "..") for part in text.removeprefix("s3://").split("/")):
            raise PathRefused(f"{what} {shown(text)}: '.' and '..' are not allowed in s3:// "
                              "addresses")
        for root in self.roots:
            prefix = root.rstrip("/")
            if root.startswith("s3://") and (text.rstrip("/") == prefix
                                             or text.startswith(prefix + "/")):
                return text
        raise self._outside(text, what)

    def _outside(self, text: str, what: str) -> PathRefused:
        return PathRefused(f"{what} {shown(text)} is outside the job roots "
                           f"({', '.join(self.roots)}); the operator can add it to "
                           f"{ROOTS_SETTING}")


def relative_name(name: object, what: str) -> PurePosixPath:
    """`name`, a file name a manifest lists, when it is relative and has no `..`; PathRefused
    naming `what` otherwise, decided before any file-system call."""
    if not isinstance(name, str) or not name:
        raise PathRefused(f"{what} {name!r} is not a file name")
    checked_name(name, what)
    pure = PurePosixPath(name)
    if pure.is_absolute():
        raise PathRefused(f"{what} {shown(name)} is an absolute path: name files relative to the "
                          "dataset folder")
    if ".." in pure.parts:
        raise PathRefused(f"{what} {shown(name)} contains '..': name files inside the dataset "
                          "folder")
    return pure


def within_dataset(root: Path, path: Path, what: str) -> Path:
    """`path` resolved, when it lies inside the resolved dataset folder `root`; PathRefused
    saying that `what` leads outside otherwise (through a link), without saying where."""
    resolved = _resolved(path, what, str(path))
    if not resolved.is_relative_to(root):
        raise PathRefused(f"{what} leads outside the dataset folder (through a link)")
    return resolved


def read_exact(path: Path) -> bytes:
    """The bytes of the resolved path `path`, refusing (LinkRedirected) a path that a link put
    in its way since it was resolved now leads elsewhere: the last name is opened without
    following links, and the file opened is checked to be `path` before a byte is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last name became a link
            raise LinkRedirected(f"{path} is now a link; not read") from None
        raise
    try:
        # Where the kernel actually opened: a link swapped in for a folder on the way shows here.
        try:
            opened = os.readlink(_PROC_FD / str(fd))
        except OSError:  # no /proc (not Linux): O_NOFOLLOW alone guards the last name
            opened = str(path)
        # A file removed since it was opened reads as "<path> (deleted)": still the one checked.
        if opened not in (str(path), f"{path} (deleted)"):
            raise LinkRedirected(f"{path} now leads elsewhere through a link; not read")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)
