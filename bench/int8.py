"""`lookalike bench int8`: the int8 model against fp32, side by side in one run.

The int8 graph is calibrated on one set (`--calibrate`, imagenette_val224 by default: the set
the recipe was chosen on) and reported on the others, unchanged: retrieval mAP of int8 queries
against an int8 database and against an fp32 database next to fp32 against fp32, how close the
descriptors are (cosine), and the forward pass's images/s of both on ONNX Runtime at each batch
size, the two interleaved round by round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from bench.machine import describe_machine, print_row
from lookalike.core.metrics import score_matrix
from lookalike.core.paths import read_exact
from lookalike.core.settings import Settings
from lookalike.embedder.runtime import Embedder
from lookalike.evaluation.datasets import EvalDataset, load_dataset
from lookalike.ingestion.int8 import folder_images, make_int8
from lookalike.ingestion.model_config import embedder_config

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
F32 = NDArray[np.float32]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `int8` to `lookalike bench`."""
    parser = commands.add_parser("int8", help="int8 against fp32: mAP, cosine, images/s")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--calibrate", default="imagenette_val224",
                        help="the set the int8 graph is calibrated on (and not reported on)")
    parser.add_argument("--count", type=int, default=240,
                        help="calibration images read (40 of them check it)")
    parser.add_argument("--sets", nargs="+", default=["corel1k", "ukbench_mini", "dvd_covers"],
                        help="the sets reported on")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=5, help="speed rounds; medians reported")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


def _descriptors(embedder: Embedder, dataset: EvalDataset) -> tuple[F32, F32]:
    """Database rows and query rows (queries apart from the database embedded from their own
    files) of `dataset`."""
    paths = [Path(item.source) for item in dataset.database]
    database = _embed(embedder, paths)
    row_of = {item.source: i for i, item in enumerate(dataset.database)}
    apart = [q.path for q in dataset.queries if not q.in_database]
    outside = iter(_embed(embedder, apart)) if apart else iter(())
    queries = np.stack([database[row_of[str(q.path)]] if q.in_database else next(outside)
                        for q in dataset.queries])
    return database, queries


def _embed(embedder: Embedder, paths: list[Path]) -> F32:
    step = embedder.batch_size
    return np.concatenate([embedder.embed_images([embedder.decode(read_exact(p))
                                                  for p in paths[i:i + step]])
                           for i in range(0, len(paths), step)])


def _map(dataset: EvalDataset, database: F32, queries: F32) -> float:
    """mAP over the full ranking of each query (a stored query left out of its own)."""
    row_of = {item.source: i for i, item in enumerate(dataset.database)}
    sims = queries @ database.T
    relevant = np.zeros(sims.shape, dtype=bool)
    for q, query in enumerate(dataset.queries):
        for r in query.relevant:
            relevant[q, row_of[r]] = True
        if query.in_database:
            sims[q, row_of[str(query.path)]] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")
    in_db = np.array([q.in_database for q in dataset.queries])
    rel = np.take_along_axis(relevant, order, axis=1)
    # A stored query's own row is last in its ranking: leave it out.
    keep = np.ones(rel.shape, dtype=bool)
    keep[in_db, -1] = False
    ranked = np.where(keep, rel, False)
    return float(score_matrix(ranked, relevant.sum(axis=1)).ap.mean())


def quality(fp32: Embedder, int8: Embedder, dataset: EvalDataset) -> dict[str, Any]:
    """mAP of the three pairings and the descriptors' cosine on one dataset."""
    db32, q32 = _descriptors(fp32, dataset)
    db8, q8 = _descriptors(int8, dataset)
    cosines = np.sum(db32 * db8, axis=1)
    return {"set": dataset.name, "images": len(db32), "queries": len(q32),
            "map_fp32": round(_map(dataset, db32, q32), 4),
            "map_int8": round(_map(dataset, db8, q8), 4),
            "map_int8_queries_fp32_database": round(_map(dataset, db32, q8), 4),
            "cosine_median": round(float(np.median(cosines)), 4),
            "cosine_min": round(float(cosines.min()), 4)}


def speed(fp32: Embedder, int8: Embedder, dataset: EvalDataset, batch_sizes: list[int],
          repeats: int) -> dict[str, Any]:
    """Forward images/s of both at each batch size, interleaved round by round; medians."""
    images = [fp32.decode(read_exact(Path(item.source))) for item in
              dataset.database[:max(batch_sizes)]]
    rates: dict[str, dict[int, float]] = {"fp32": {}, "int8": {}}
    for batch in batch_sizes:
        pixels = fp32.pixels(images[:batch])
        rounds = max(1, 64 // batch)
        seconds: dict[str, list[float]] = {"fp32": [], "int8": []}
        for embedder in (fp32, int8):  # warm-up at this batch size
            embedder.forward(pixels)
        for _ in range(repeats):
            for name, embedder in (("fp32", fp32), ("int8", int8)):
                started = time.perf_counter()
                for _ in range(rounds):
                    embedder.forward(pixels)
                seconds[name].append(time.perf_counter() - started)
        for name in rates:
            rates[name][batch] = round(rounds * batch / statistics.median(seconds[name]), 1)
    return {"set": "speed", "forward_images_per_s": rates,
            "int8_over_fp32": {b: round(rates["int8"][b] / rates["fp32"][b], 2)
                               for b in batch_sizes},
            "threads": torch.get_num_threads()}


def row(result: dict[str, Any]) -> str:
    """A markdown line per result: a set's mAPs and cosine, or the speed."""
    if result["set"] == "speed":
        rates = result["forward_images_per_s"]
        return "\n".join(
            f"| forward, batch {b} | {rates['fp32'][b]} | {rates['int8'][b]} "
            f"| **{result['int8_over_fp32'][b]}x** |" for b in rates["fp32"])
    if result["set"] == "calibration":
        return (f"int8 graph {result['model_id']}: calibrated on {result['calibrated_on']} "
                f"images of {result['calibrate']}, checked on {result['checked_on']} others "
                f"(cosine median {result['cosine_median']}, min {result['cosine_min']}), "
                f"{result['seconds']} s")
    return (f"| {result['set']} ({result['images']} images, {result['queries']} queries) "
            f"| {result['map_fp32']} | {result['map_int8']} "
            f"| {result['map_int8_queries_fp32_database']} "
            f"| {result['cosine_median']} / {result['cosine_min']} |")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Calibrate on one set, report on the others, then time both; print each result."""
    model = settings.model.model_copy(update={"precision": "fp32", "engine": "onnxruntime",
                                              "int8_model": "", "device": "cpu"})
    fp32 = Embedder(embedder_config(model))
    command = args.command_line
    calibrate = args.datasets / args.calibrate
    images = folder_images(calibrate / "images" if (calibrate / "images").is_dir() else calibrate,
                           args.count)
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-int8-") as tmp:
        made = make_int8(fp32, images, Path(tmp))
        int8 = Embedder(replace(fp32.config, precision="int8", int8_model=made.path))
        int8.load()
    if not args.json:
        print(f"Command: `{command}`  \nMachine: {describe_machine()}\n")
    results: list[dict[str, Any]] = [{
        "set": "calibration", "calibrate": args.calibrate, "model_id": made.model_id,
        "calibrated_on": made.calibrated_on, "checked_on": made.checked_on,
        "cosine_median": round(made.cosine_median, 4), "cosine_min": round(made.cosine_min, 4),
        "seconds": round(made.seconds, 1)}]
    print_row(results[0], args.json, row)
    if not args.json:
        print("\n| set | mAP fp32 | mAP int8 | mAP int8 queries, fp32 database "
              "| cosine median / min |\n|---|---|---|---|---|", flush=True)
    datasets = [load_dataset(args.datasets / name) for name in args.sets]
    for dataset in datasets:
        results.append(quality(fp32, int8, dataset))
        print_row(results[-1], args.json, row)
    if not args.json:
        print("\n| ONNX Runtime, CPU | fp32 images/s | int8 images/s | int8 / fp32 |"
              "\n|---|---|---|---|", flush=True)
    print_row(speed(fp32, int8, datasets[0], args.batch_sizes, args.repeats), args.json, row)
    return 0
