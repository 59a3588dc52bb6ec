"""`lookalike bench search`'s Milvus server: a standalone server restarted over the same data, and
the resident memory that loading collections adds to it."""

from __future__ import annotations

import contextlib
import fcntl
import gc
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from lookalike.core.settings import MilvusSettings
from lookalike.core.vector_store import connect_milvus

# As the test fixture: the server's embedded etcd always takes port 2380, one server at a time.
SERVER_LOCK = "/tmp/lookalike-milvus-server.lock"


class Server:
    """A Milvus 2.3 standalone server in `base_dir`, restartable over the same data."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self._server: Any = None

    def start(self) -> str:
        from milvus import MilvusServer

        self._server = MilvusServer(wait_for_started=True)
        self._server.set_base_dir(str(self.base_dir))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            self._server.start()
            gc.collect()
        return f"http://127.0.0.1:{self._server.listen_port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def memory(self) -> Memory:
        """Resident memory of the server process, with its anonymous part."""
        pid = self._server.server_proc.pid
        fields = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                fields[key] = int(value.split()[0]) * 1024
        return Memory(rss=fields.get("VmRSS", 0), anon=fields.get("RssAnon", 0))


@dataclass(frozen=True, slots=True)
class Memory:
    """A process's resident bytes: all of them, and the anonymous ones (not file-backed)."""

    rss: int
    anon: int

    def growth(self, before: Memory) -> Memory:
        """What was added since `before` (nothing where it shrank)."""
        return Memory(rss=max(0, self.rss - before.rss), anon=max(0, self.anon - before.anon))

    def since(self, before: Memory) -> dict[str, int]:
        """Growth since `before`, as the `*_after_bytes` columns."""
        grown = self.growth(before)
        return {"memory_after_bytes": grown.rss, "anon_after_bytes": grown.anon}


@contextlib.contextmanager
def milvus_server(base_dir: Path) -> Iterator[Server]:
    with open(SERVER_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        server = Server(base_dir)
        try:
            yield server
        finally:
            server.stop()


def loaded_memory(server: Server, uri_holder: list[str], collections: list[str]) -> tuple[
        Memory, Memory]:
    """Restart the server, load `collections`; the resident memory they added (all of it and
    the anonymous part), and the server's memory before loading them."""
    # Released first: a restarted server loads again what was loaded when it stopped.
    client = connect_milvus(uri_holder[0], MilvusSettings(uri=uri_holder[0], timeout_s=600))
    for name in client.list_collections():
        client.release_collection(name)
    client.close()
    server.stop()
    uri_holder[0] = server.start()
    time.sleep(3)
    client = connect_milvus(uri_holder[0], MilvusSettings(uri=uri_holder[0], timeout_s=600))
    # A restarted server's data node registers late, and writes after this (the hash codes)
    # would fail until it has: a flush goes through once it is there.
    for name in collections:
        when_ready(partial(client.flush, name), f"flush {name}")
    before = server.memory()
    for name in collections:
        when_ready(partial(client.load_collection, name), f"load {name}")
    grown = settled(server.memory).growth(before)
    client.close()
    return grown, before


def settled(read: Callable[[], Memory], every_s: float = 1.0, window: int = 5,
            tolerance: float = 0.01, timeout_s: float = 120.0) -> Memory:
    """`read()` once it has stopped moving: the last `window` readings, `every_s` apart, within
    `tolerance` of each other (a load's buffers are freed a while after the load returns: 3.06
    GB five seconds after loading a 1M FLAT collection, 1.69 GB later); the last reading."""
    readings = [read()]
    deadline = time.monotonic() + timeout_s
    while not is_steady([m.rss for m in readings[-window:]], window, tolerance) \
            and time.monotonic() < deadline:
        time.sleep(every_s)
        readings.append(read())
    return readings[-1]


def is_steady(values: list[int], window: int, tolerance: float) -> bool:
    """Whether there are `window` values and they lie within `tolerance` of their largest."""
    return len(values) >= window and max(values) - min(values) <= tolerance * max(values)


def when_ready(call: Callable[[], object], what: str, timeout_s: float = 300.0) -> None:
    """`call()`, again every 5 s while it fails: a server just restarted refuses loads until
    its query node has registered, and flushes until its data node has."""
    from pymilvus.exceptions import MilvusException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            call()
            return
        except MilvusException as exc:
            if time.monotonic() > deadline:
                raise
            print(f"{what}: {exc.message.splitlines()[0]}; retrying", file=sys.stderr)
            time.sleep(5)
