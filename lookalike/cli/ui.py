"""`lookalike ui`: the Streamlit UI. It reaches the platform over gRPC only, so neither this
command nor the UI process loads torch (the UI image has none)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lookalike.core.settings import Settings

APP = Path(__file__).parent.parent / "ui" / "streamlit_app.py"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ui`."""
    ui = commands.add_parser("ui", help="start the Streamlit UI")
    ui.add_argument("--host", default="127.0.0.1")
    ui.add_argument("--port", type=int, default=8501)
    ui.set_defaults(func=cmd_ui)


def cmd_ui(settings: Settings, args: argparse.Namespace) -> int:
    """Start the Streamlit UI (it reaches the server through LOOKALIKE_CLIENT__ADDRESS)."""
    command = [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.address", args.host, "--server.port", str(args.port),
        "--server.headless", "true", "--browser.gatherUsageStats", "false",
    ]
    # Become Streamlit, so that signals (Ctrl-C, SIGTERM from `make run`) reach it directly.
    os.execv(sys.executable, command)
