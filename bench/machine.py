"""A one-line description of the machine a measurement ran on."""

from __future__ import annotations

import json
import os
import platform
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
