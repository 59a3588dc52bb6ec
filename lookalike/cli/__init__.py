"""`lookalike`: the composition root. Builds settings once and passes them down.

One module per command group registers its sub-commands; `runner` holds the exit codes and
turns typed errors into `error:` lines.
"""

from lookalike.cli.entry_point import build_parser, main
from lookalike.cli.runner import EXIT_ERROR, EXIT_OK, EXIT_SOME_FILES_FAILED, EXIT_UNREACHABLE

__all__ = ["EXIT_ERROR", "EXIT_OK", "EXIT_SOME_FILES_FAILED", "EXIT_UNREACHABLE", "build_parser",
           "main"]
