"""`make eval`: `lookalike eval --ablation --json` on every dataset; tables and P@K plots written
into docs/QUALITY.md and docs/quality/."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.machine import describe_machine, replace_block

BEGIN = "<!-- make eval: begin -->"
END = "<!-- make eval: end -->"


def find_datasets(root: Path) -> list[Path]:
    """Dataset folders under `root` (those with labels.json or groundtruth.json)."""
    return sorted(
        p for p in root.iterdir()
        if p.is_dir() and ((p / "labels.json").exists() or (p / "groundtruth.json").exists())
    )


LATENCY_DATASET = "corel1k"
LATENCY_QUERIES = 16


def run_eval(dataset: Path, plots: Path) -> list[dict[str, Any]]:
    """One dataset's ablation through the CLI; one JSON object per configuration."""
    command = [sys.executable, "-m", "lookalike.cli", "eval", str(dataset), "--ablation", "--json",
               "--no-progress", "--plot", str(plots / f"{dataset.name}_pk.png")]
    if dataset.name == LATENCY_DATASET:
        command += ["--latency", str(LATENCY_QUERIES)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"eval of {dataset} failed:\n{done.stderr[-4000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _fmt(value: Any, column: str = "") -> str:
    if isinstance(value, float):
        return f"{value:.1f}" if column.startswith("latency") else f"{value:.3f}"
    return str(value)


def _table(rows: list[dict[str, Any]]) -> list[str]:
    kind = rows[0]["kind"]
    columns = ["config", "p@1", "p@10", "map", "ndcg@10", "recall@10"]
    if kind == "instance":
        columns.insert(1, "top1")
    if any("latency_total_ms" in r for r in rows):
        columns += ["latency_total_ms", "latency_embed_ms", "latency_rank_ms", "latency_verify_ms"]
    columns.append("levers")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, ""), c) for c in columns) + " |")
    return lines


def render(results: dict[str, list[dict[str, Any]]], command: str, plots: Path, out: Path) -> str:
    """The markdown block for QUALITY.md: one ablation table (and plot) per dataset."""
    lines = [
        BEGIN,
        f"Command: `{command}`  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Machine: {describe_machine()}",
        "",
    ]
    for name, rows in results.items():
        first = rows[0]
        lines += [
            f"### {name} ({first['kind']}: {first['images']} images, {first['queries']} queries)",
            "",
            f"Command: `lookalike eval ../shared/datasets/{name} --ablation --json"
            + (f" --latency {LATENCY_QUERIES}" if name == LATENCY_DATASET else "") + "`",
            "",
            *_table(rows),
            "",
            f"![P@K per configuration]({(plots / f'{name}_pk.png').relative_to(out.parent)})",
            "",
        ]
    lines.append(END)
    return "\n".join(lines)


def write_block(path: Path, block: str) -> None:
    """Replace the make-eval block in `path` (or append it)."""
    replace_block(path, BEGIN, END, block, "Retrieval quality")


def load_rows(plots: Path, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The stored results of every dataset that has them, in `names` order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        path = plots / f"{name}.jsonl"
        if path.is_file():
            out[name] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def main() -> None:
    """Run the ablation on every dataset (or those named) and write the tables of all."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--only", nargs="*", help="dataset names to (re-)run (default: all); the "
                        "others' last results, kept in docs/quality/<name>.jsonl, stay in the page")
    args = parser.parse_args()
    plots = args.out.parent / "quality"
    plots.mkdir(parents=True, exist_ok=True)
    datasets = find_datasets(args.datasets)
    for dataset in datasets:
        if args.only and dataset.name not in args.only:
            continue
        rows = run_eval(dataset, plots)
        for row in rows:
            print(json.dumps(row), flush=True)
        (plots / f"{dataset.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = "make eval" + (f" (python -m bench.eval --only {' '.join(args.only)})"
                             if args.only else "")
    results = load_rows(plots, [d.name for d in datasets])
    write_block(args.out, render(results, command, plots, args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
