"""`python -m bench <name> ...`: the benchmarks' own entry point. `lookalike bench <name> ...`
runs this in a child process, so the product never imports bench/."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from lookalike.cli.runner import run_command

# Modules of bench/ that expose `register(commands)`; each sets `func(settings, args) -> int`.
BENCHMARKS: tuple[str, ...] = ("embed", "int8", "ingest", "api", "burst", "search", "routing",
                               "codes_floats", "presets", "profiles", "verify")


def build_parser() -> argparse.ArgumentParser:
    """The benchmarks' command line, under the name users type: `lookalike bench`."""
    parser = argparse.ArgumentParser(prog="lookalike bench")
    commands = parser.add_subparsers(dest="bench_command", required=True)
    for module in BENCHMARKS:
        import_module(f"bench.{module}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one benchmark with the settings of the environment; typed errors become a one-line
    message and exit code 1, as in `lookalike`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # The results print the command that made them, as users type it.
    args.command_line = " ".join(["lookalike", "bench", *argv])
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
