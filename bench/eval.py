"""`make eval`: `lookalike eval --json` on every dataset, the table written into docs/QUALITY.md."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.machine import describe_machine

BEGIN = "<!-- make eval: begin -->"
END = "<!-- make eval: end -->"


def find_datasets(root: Path) -> list[Path]:
    """Dataset folders under `root` (those with labels.json or groundtruth.json)."""
    return sorted(
        p for p in root.iterdir()
        if p.is_dir() and ((p / "labels.json").exists() or (p / "groundtruth.json").exists())
    )


def run_eval(dataset: Path) -> dict[str, Any]:
    """One dataset through the CLI; its JSON line."""
    command = [sys.executable, "-m", "lookalike.cli", "eval", str(dataset), "--json",
               "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"eval of {dataset} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def render(results: list[dict[str, Any]], command: str) -> str:
    """The markdown block for QUALITY.md."""
    # Speed belongs in BENCHMARKS.md (`make bench`); queries/s here is full-ranking evaluation.
    columns = ["dataset", "kind", "images", "queries", "p@1", "p@5", "p@10", "map", "top1",
               "queries_per_s"]
    lines = [
        BEGIN,
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Machine: {describe_machine()}  ",
        f"Backbone: {', '.join(sorted({str(r['backbone']) for r in results}))}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in results:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
    lines.append(END)
    return "\n".join(lines)


def write_block(path: Path, block: str) -> None:
    """Replace the make-eval block in `path` (or append it)."""
    text = path.read_text() if path.exists() else "# Retrieval quality\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    """Evaluate every dataset and write the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="dataset names to run (default: all)")
    args = parser.parse_args()
    results = []
    for dataset in find_datasets(args.datasets):
        if args.only and dataset.name not in args.only:
            continue
        result = run_eval(dataset)
        print(json.dumps(result), flush=True)
        results.append(result)
    command = "make eval" + (f" (python -m bench.eval --only {' '.join(args.only)})"
                             if args.only else "")
    write_block(args.out, render(results, command))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
