"""The `lookalike` command: its parser, assembled from one module per command group, and `main`.

Starting it loads only argparse and these modules; each command loads what it needs (torch,
pymilvus, grpc, the composition in `lookalike.app.compose`) when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lookalike.cli import bench, evaluate, ingest, maintenance, models, reindex, remote, serve, train, ui
from lookalike.cli.runner import EXIT_ERROR, run_command

# In the order `lookalike --help` lists their commands.
COMMAND_GROUPS = (ingest, maintenance, reindex, models, serve, remote, evaluate, train, bench, ui)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="lookalike", description="Search by image.")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: typed errors become a one-line message and exit code 1."""
    args = build_parser().parse_args(argv)
    if args.command == "ingest" and not (args.demo or args.path):
        print("error: give a folder to ingest, or --demo", file=sys.stderr)
        return EXIT_ERROR
    return run_command(args)
