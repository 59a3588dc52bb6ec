"""`lookalike bench burst`: the server's memory under a burst of large concurrent uploads.

A server process (an empty collection, the default model) is sent `--clients` concurrent Search
requests of one `--mb` MB JPEG each, from a separate client process; its resident memory is
read before the burst, sampled during it (the peak), and read again once it has settled after.
Three servers side by side in one run: without a byte budget and without handing memory back
(the behaviour before the budget), without a budget but handing memory back, and the default
(budget and hand-back).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.machine import describe_machine, print_result, replace_block
from lookalike.app.compose import blobs_from, embedder_from, engine_from, store_from
from lookalike.core.settings import ServerSettings, Settings
from lookalike.services.client import ClientError, LookalikeClient

BEGIN = "<!-- bench burst: begin -->"
END = "<!-- bench burst: end -->"
MB = 1024 * 1024
# (name, budget MB (0: none, i.e. every request fits), hand memory back)
CONFIGS = (("no budget, memory kept (before)", 0, False),
           ("no budget, memory handed back", 0, True),
           ("budget 256 MB + memory handed back (default)", 256, True))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `burst` to `lookalike bench`."""
    parser = commands.add_parser("burst", help="server memory under concurrent large uploads")
    parser.add_argument("--clients", type=int, default=64, help="concurrent uploads")
    parser.add_argument("--mb", type=float, default=31.0, help="size of each upload (a JPEG)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="write the markdown block into this file")
    parser.set_defaults(func=run)


def noisy_jpeg(megabytes: float) -> bytes:
    """A JPEG of random pixels a little under `megabytes` MB (noise barely compresses)."""
    rng = np.random.default_rng(0)
    side = 512
    while True:
        pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="JPEG", quality=95)
        size = out.tell()
        if 0.97 * megabytes * MB <= size <= megabytes * MB:
            return out.getvalue()
        side = max(8, int(side * (0.99 * megabytes * MB / size) ** 0.5))


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def settled_rss_mb(pid: int, timeout_s: float = 60.0) -> float:
    """Resident memory once five readings 0.5 s apart agree within 1%."""
    readings: list[float] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        readings.append(rss_mb(pid))
        last = readings[-5:]
        if len(last) == 5 and max(last) - min(last) <= 0.01 * max(last):
            break
        time.sleep(0.5)
    return statistics.median(readings[-5:])


def _serve(data_dir: str, budget_mb: int, return_memory: bool,
           port: Any, stop: Any) -> None:
    """Child process: serve an empty collection until `stop` is set; its port goes to `port`."""
    from lookalike.services.server import start_server

    settings = Settings(data_dir=Path(data_dir))
    embedder = embedder_from(settings)
    store = store_from(settings, embedder)
    blobs = blobs_from(settings)
    server = ServerSettings(host="127.0.0.1", port=0,
                            inflight_budget_mb=budget_mb or 65536)
    running = start_server(engine_from(settings, embedder, store, blobs), server,
                           return_memory=return_memory)
    port.put(running.port)
    stop.wait()
    running.stop(grace_s=5.0)


def _burst(address: str, payload: bytes, clients: int) -> dict[str, int]:
    """Child process: `clients` threads each send one Search by `payload`; the codes seen."""
    def one(_: int) -> str:
        with LookalikeClient(address, timeout_s=600.0, max_message_mb=64) as client:
            try:
                client.search(image=payload, top_k=3)
            except ClientError as exc:
                return str(exc.code.name)
        return "OK"

    with ThreadPoolExecutor(clients) as pool:
        return dict(Counter(pool.map(one, range(clients))))


@dataclass(slots=True)
class Peak:
    """The highest resident memory of a process seen by a sampling thread."""

    pid: int
    peak: float = 0.0
    running: bool = True

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.02)


def measure_one(budget_mb: int, return_memory: bool, payload: bytes, clients: int,
                context: Any) -> dict[str, Any]:
    """One server's memory before, at the peak of and after the burst, and the codes seen."""
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-burst-") as tmp:
        port, stop = context.Queue(), context.Event()
        server = context.Process(target=_serve, args=(tmp, budget_mb, return_memory, port, stop))
        server.start()
        try:
            address = f"127.0.0.1:{port.get(timeout=300)}"
            with LookalikeClient(address, timeout_s=60.0) as client:
                client.search(image=noisy_jpeg(0.2), top_k=3)
            before = settled_rss_mb(server.pid)
            peak = Peak(server.pid)
            sampler = threading.Thread(target=peak.sample, daemon=True)
            sampler.start()
            started = time.perf_counter()
            with context.Pool(1) as pool:
                codes = pool.apply(_burst, (address, payload, clients))
            seconds = time.perf_counter() - started
            peak.running = False
            sampler.join()
            after = settled_rss_mb(server.pid)
        finally:
            stop.set()
            server.join(60)
            if server.is_alive():
                server.kill()
    return {"before_mb": round(before), "peak_mb": round(peak.peak), "after_mb": round(after),
            "seconds": round(seconds, 1), "codes": codes}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every configuration of CONFIGS, one after the other, on the same payload."""
    payload = noisy_jpeg(args.mb)
    context = multiprocessing.get_context("spawn")
    rows = []
    for name, budget_mb, return_memory in CONFIGS:
        row = measure_one(budget_mb, return_memory, payload, args.clients, context)
        rows.append({"config": name, **row})
        print(f"{name}: {row}", file=sys.stderr, flush=True)
    return {"clients": args.clients, "payload_mb": round(len(payload) / MB, 1), "rows": rows}


def render(result: dict[str, Any]) -> str:
    """The markdown block for docs/BENCHMARKS.md."""
    lines = [
        BEGIN,
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}  ",
        f"{result['clients']} concurrent Search requests of one {result['payload_mb']} MB JPEG "
        "each, from a separate process, to a server (its own process, an empty collection, "
        "default settings otherwise); resident memory of the server process.",
        "",
        "| server | RSS before, MB | peak, MB | after (settled), MB | answers | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        answers = ", ".join(f"{code} {count}" for code, count in sorted(row["codes"].items()))
        lines.append(f"| {row['config']} | {row['before_mb']} | {row['peak_mb']} "
                     f"| {row['after_mb']} | {answers} | {row['seconds']} |")
    lines += ["", "A request refused by the budget is answered RESOURCE_EXHAUSTED before it is "
              "parsed; its client retries later.", END]
    return "\n".join(lines)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Measure, print (and optionally write) the result."""
    result = measure(args)
    result["machine"] = describe_machine()
    result["command"] = args.command_line
    print_result(result, args.json)
    if args.out:
        replace_block(args.out, BEGIN, END, render(result), "Benchmarks", "API")
    return 0
