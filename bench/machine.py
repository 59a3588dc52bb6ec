"""A one-line description of the machine a measurement ran on."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any


def describe_machine() -> str:
    """CPU model, cores, memory, OS, Python and torch versions."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        kb = int(meminfo.read_text().split()[1])
        memory = f", {kb / 1024 / 1024:.0f} GiB RAM"
    try:
        import torch

        accel = f"torch {torch.__version__}, " + (
            f"GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "no GPU"
        )
    except ImportError:
        accel = "no torch"
    return (f"{cpu}, {os.cpu_count()} cores{memory}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}; {accel}")


def print_result(result: dict[str, Any], as_json: bool) -> None:
    """A benchmark's result: one JSON object, or one aligned `key: value` line per entry."""
    if as_json:
        print(json.dumps(result))
        return
    width = max((len(key) for key in result), default=0)
    for key, value in result.items():
        print(f"{key:>{width}}: {value}")


def print_row(result: dict[str, Any], as_json: bool, table_row: Callable[[dict[str, Any]], str]
              ) -> None:
    """A benchmark's result as one JSON object, or as its markdown table row."""
    if as_json:
        print_result(result, as_json=True)
    else:
        print(table_row(result), flush=True)


def replace_block(path: Path, begin: str, end: str, block: str, title: str,
                  heading: str = "") -> None:
    """Replace the part of `path` between the markers `begin` and `end` with `block` (which
    carries the markers), or append it under `heading`; a new file starts with `title`."""
    text = path.read_text() if path.exists() else f"# {title}\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + (f"## {heading}\n\n" if heading else "") + block + "\n"
    path.write_text(text)
