"""`lookalike bench profiles`: what each search profile costs, on each engine, in one run.

Per profile and engine: `lookalike ingest` of one class set into a fresh data dir (wall time,
so the model's start, DBA and the index seal are in it), and the per-query latency of
`lookalike eval --latency` (the query given as bytes: embed, rank, QE, verification), on a set
of the profile's kind. The engines alternate within each profile, so that a busy neighbour
slows both alike. The medians go into core/profiles.py, which the Admin page shows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.machine import describe_machine
from lookalike.core.profiles import PROFILES

if TYPE_CHECKING:
    from lookalike.core.settings import Settings

ENGINES = ("onnxruntime", "torch")
INGEST_SET = "corel1k"
# The set each profile's queries are timed on: one of the kind of collection it is for.
QUERY_SET = {"fast": "corel1k", "balanced": "corel1k", "quality": "corel1k",
             "instance": "dvd_covers"}


def _lookalike(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "lookalike.cli", *args], capture_output=True,
                          text=True, check=False, env={**os.environ, **env})
    if done.returncode not in (0, 3):
        raise SystemExit(f"lookalike {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return done


def ingest_rate(folder: Path, profile: str, engine: str) -> float:
    """Images per second of wall time for `lookalike ingest` of `folder` into an empty store."""
    images = sum(1 for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    with tempfile.TemporaryDirectory(prefix="lookalike-profile-") as data:
        started = time.perf_counter()
        _lookalike(["ingest", str(folder), "--no-progress"],
                   {"LOOKALIKE_DATA_DIR": data, "LOOKALIKE_SEARCH__PROFILE": profile,
                    "LOOKALIKE_MODEL__ENGINE": engine})
        return images / (time.perf_counter() - started)


def query_latency(dataset: Path, profile: str, engine: str, queries: int) -> dict[str, Any]:
    """The eval row of `profile` on `dataset`, with its latency medians and p95."""
    done = _lookalike(["eval", str(dataset), "--config", profile, "--latency", str(queries),
                       "--json", "--no-ann", "--no-progress"],
                      {"LOOKALIKE_MODEL__ENGINE": engine})
    row: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return row


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Measure every profile on every engine and print the table."""
    lines = [f"Command: `{args.command_line}`  ", f"Machine: {describe_machine()}", "",
             f"| profile | engine | ingest img/s (wall, {INGEST_SET}) | query set | query ms median "
             "| query ms p95 | of which verify ms | p@10 | map | top1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in PROFILES:
        for engine in ENGINES:
            rate = ingest_rate(args.datasets / INGEST_SET, name, engine)
            row = query_latency(args.datasets / QUERY_SET[name], name, engine, args.queries)
            print(json.dumps({"profile": name, "engine": engine, "ingest_images_per_s": rate,
                              **row}), flush=True)
            lines.append(
                f"| {name} | {engine} | {rate:.1f} | {QUERY_SET[name]} "
                f"| {row['latency_total_ms']:.1f} | {row['latency_total_p95_ms']:.1f} "
                f"| {row['latency_verify_ms']:.1f} | {row['p@10']:.4f} | {row['map']:.4f} "
                f"| {row.get('top1', '')} |")
    print("\n".join(lines))
    return 0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `profiles`."""
    profiles = commands.add_parser("profiles", help="ingest rate and query latency of each "
                                   "search profile on each engine")
    profiles.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    profiles.add_argument("--queries", type=int, default=32, help="timed queries per profile")
    profiles.set_defaults(func=run)
