"""`lookalike bench ...`: runs `python -m bench ...` in a child process, so the product never
imports the benchmarks (bench/ ships with the repository, not with the images)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.util import find_spec
from typing import TYPE_CHECKING

from lookalike.cli.runner import EXIT_ERROR

if TYPE_CHECKING:
    from lookalike.core.settings import Settings

# Options go to the benchmarks' own parser, `--help` included: this parser treats no argument
# as an option (an unused prefix character), so it passes every argument on as it came.
_PASS_THROUGH_PREFIX = "\x00"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench`, whose arguments go to `python -m bench` unparsed."""
    bench = commands.add_parser("bench", help="benchmarks (results go to docs/BENCHMARKS.md)",
                                add_help=False, prefix_chars=_PASS_THROUGH_PREFIX)
    bench.add_argument("bench_args", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    """Run the benchmark in `python -m bench`, with this interpreter; its exit code."""
    # find_spec looks the package up without running it.
    if find_spec("bench") is None:
        print("error: the benchmarks (the `bench` package) are not installed here; run "
              "`lookalike bench` from a checkout of the repository installed with "
              "`pip install -e '.[dev]'`", file=sys.stderr)
        return EXIT_ERROR
    return subprocess.run([sys.executable, "-m", "bench", *args.bench_args], check=False).returncode
