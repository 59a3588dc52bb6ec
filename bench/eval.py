"""`make eval`: `lookalike eval --ablation --json` on every dataset; tables and P@K plots written
into docs/QUALITY.md and docs/quality/."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
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
# Instance sets are timed on their own query photos: what verification adds is the number their
# users wait for.
INSTANCE_LATENCY_QUERIES = 64


def latency_queries(dataset: Path) -> int:
    """How many queries of `dataset` the ablation times (0: none)."""
    if dataset.name == LATENCY_DATASET:
        return LATENCY_QUERIES
    return INSTANCE_LATENCY_QUERIES if (dataset / "groundtruth.json").exists() else 0


def run_eval(dataset: Path, plots: Path) -> list[dict[str, Any]]:
    """One dataset's ablation through the CLI; one JSON object per configuration."""
    command = [sys.executable, "-m", "lookalike.cli", "eval", str(dataset), "--ablation", "--json",
               "--no-progress", "--plot", str(plots / f"{dataset.name}_pk.png")]
    if queries := latency_queries(dataset):
        command += ["--latency", str(queries)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"eval of {dataset} failed:\n{done.stderr[-4000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


ENGINES = ("torch", "onnxruntime")
ENGINES_BEGIN = "<!-- make eval engines: begin -->"
ENGINES_END = "<!-- make eval engines: end -->"


def run_engine(dataset: Path, engine: str, config: str, latency: int) -> dict[str, Any]:
    """One configuration of one dataset on one engine (fp32), through the CLI."""
    command = [sys.executable, "-m", "lookalike.cli", "eval", str(dataset), "--config", config,
               "--json", "--no-progress", "--no-ann"]
    if latency:
        command += ["--latency", str(latency)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "LOOKALIKE_MODEL__ENGINE": engine})
    if done.returncode != 0:
        raise SystemExit(f"eval of {dataset} on {engine} failed:\n{done.stderr[-4000:]}")
    row: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return {**row, "dataset": dataset.name, "engine": engine}


def run_engines(datasets: list[Path]) -> list[dict[str, Any]]:
    """The baseline on every set and `best` (timed) on the latency set, on each engine; the
    engines alternate so that a busy neighbour slows both alike."""
    rows = []
    for dataset in datasets:
        for engine in ENGINES:
            rows.append(run_engine(dataset, engine, "baseline", 0))
    latency_set = [d for d in datasets if d.name == LATENCY_DATASET]
    for dataset in latency_set:
        for config in ("baseline", "best"):
            for engine in ENGINES:
                rows.append(run_engine(dataset, engine, config, LATENCY_QUERIES))
    return rows


def render_engines(rows: list[dict[str, Any]], command: str) -> str:
    """The engines table: mAP of each engine on each set, and their difference."""
    lines = [
        ENGINES_BEGIN,
        f"Command: `{command}` (each row: `LOOKALIKE_MODEL__ENGINE=<engine> lookalike eval "
        "<set> --config <config> --json --no-ann`, with `--latency "
        f"{LATENCY_QUERIES}` on {LATENCY_DATASET})  ",
        f"Date: {dt.date.today().isoformat()}  ",
        f"Machine: {describe_machine()}",
        "",
        "| set | config | engine | precision | p@10 | map | map - torch map | embed img/s "
        "| latency per query ms | of which embed ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    torch_map = {(r["dataset"], r["config"], r.get("latency_total_ms") is not None): r["map"]
                 for r in rows if r["engine"] == "torch"}
    for r in rows:
        timed = r.get("latency_total_ms") is not None
        diff = r["map"] - torch_map[(r["dataset"], r["config"], timed)]
        lines.append(
            f"| {r['dataset']} | {r['config']} | {r['engine']} | fp32 | {r['p@10']:.4f} "
            f"| {r['map']:.4f} | {diff:+.4f} | {r.get('ingest_images_per_s', 0):.1f} "
            f"| {_fmt(r.get('latency_total_ms', ''), 'latency')} "
            f"| {_fmt(r.get('latency_embed_ms', ''), 'latency')} |")
    lines.append(ENGINES_END)
    return "\n".join(lines)


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
        columns += ["latency_total_ms", "latency_total_p95_ms", "latency_embed_ms",
                    "latency_rank_ms", "latency_verify_ms", "latency_verify_p95_ms"]
    columns.append("levers")
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c, ""), c) for c in columns) + " |")
    return lines


def render(results: dict[str, list[dict[str, Any]]], command: str, plots: Path, out: Path,
           datasets: Path) -> str:
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
            + (f" --latency {q}" if (q := latency_queries(datasets / name)) else "") + "`",
            "",
            # Older stored rows predate the protocol line.
            *([f"Protocol: {first['protocol']}", ""] if first.get("protocol") else []),
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
    parser.add_argument("--only", nargs="*", help="dataset names to (re-)run, or engines for "
                        "the engines table (default: all); the others' last results, kept in "
                        "docs/quality/<name>.jsonl, stay in the page")
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
    if not args.only or any(d.name in args.only for d in datasets):
        write_block(args.out, render(results, command, plots, args.out, args.datasets))
    if not args.only or "engines" in args.only:
        engine_rows = run_engines(datasets)
        (plots / "engines.jsonl").write_text("".join(json.dumps(r) + "\n" for r in engine_rows))
        replace_block(args.out, ENGINES_BEGIN, ENGINES_END,
                      render_engines(engine_rows, command), "Retrieval quality", "Engines")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
