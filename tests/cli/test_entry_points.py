"""The command starts light: `lookalike --help` and `lookalike ui --help` load no torch and no
benchmark, and `lookalike bench ...` runs `python -m bench ...` in a child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lookalike.cli import EXIT_ERROR, main

REPO = Path(__file__).resolve().parents[2]


def _imported_modules(*args: str) -> list[str]:
    """The modules `python -X importtime -m lookalike ARGS` loads, from its import-time report."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "lookalike", *args],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    # Lines read "import time: <self us> | <cumulative us> | <indented module name>".
    return [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2]


@pytest.mark.parametrize("args", [["--help"], ["ui", "--help"]])
def test_help_loads_no_torch_and_no_benchmark(args: list[str]) -> None:
    """Neither torch nor anything of bench/ is imported to print the help."""
    modules = _imported_modules(*args)
    assert "lookalike.cli" in modules
    heavy = [m for m in modules if m.split(".")[0] in ("torch", "torchvision", "bench")]
    assert heavy == []


def test_bench_help_is_the_benchmarks_own() -> None:
    """`lookalike bench --help` prints the help of `python -m bench` (options pass through)."""
    done = subprocess.run([sys.executable, "-m", "lookalike", "bench", "--help"],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: lookalike bench [-h]")
    assert "{embed,int8,ingest,api,burst,search,routing,codes-floats,presets,profiles,verify}" in done.stdout


def test_bench_exit_code_passes_through() -> None:
    """A usage error of the benchmarks' parser is the exit code of `lookalike bench`."""
    done = subprocess.run([sys.executable, "-m", "lookalike", "bench", "no-such-benchmark"],
                          capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    assert done.returncode == 2
    assert "invalid choice: 'no-such-benchmark'" in done.stderr


def test_bench_without_the_package_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Where bench/ is not installed (the Docker images) the command says so, exit code 1."""
    monkeypatch.setenv("LOOKALIKE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr("lookalike.cli.bench.find_spec", lambda name: None)
    assert main(["bench", "embed"]) == EXIT_ERROR
    assert capsys.readouterr().err.startswith("error: the benchmarks (the `bench` package) are "
                                              "not installed here")


def test_python_m_lookalike_is_the_command() -> None:
    """`python -m lookalike` and `python -m lookalike.cli` run the same parser."""
    for module in ("lookalike", "lookalike.cli"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                              text=True, timeout=60, check=False,
                              env={**os.environ, "COLUMNS": "100"})
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: lookalike [-h]")
