"""`lookalike bench ingest`: end-to-end ingestion against forward-only and a naive per-image loop.

All three run in one process, with the same model, on the same images:
- forward-only: `Embedder.embed_images` on images decoded beforehand (resize + normalise +
  network, batched), before and after the pipeline, the faster of the two: the ceiling the
  pipeline's overlap aims at;
- end to end: `IngestPipeline.run` from the files into Milvus Lite and a local blob store
  (both under a temporary data dir, whatever the settings say);
- naive: read -> decode -> embed -> blob puts -> insert, one image at a time, eager torch.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.machine import describe_machine, print_result
from lookalike.app.compose import blobs_from, embedder_from, pipeline_from, store_from
from lookalike.core.ids import content_id
from lookalike.core.schemas import ImageMeta, ImageRecord, image_key, thumb_key
from lookalike.core.settings import Settings
from lookalike.embedder.transforms import image_extension, thumbnail_jpeg
from lookalike.ingestion.sources import Item, folder_items

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `ingest` to `lookalike bench`."""
    parser = commands.add_parser("ingest", help="ingestion images/s vs forward-only and naive")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--sets", nargs="+", default=["dvd_covers", "corel1k"])
    parser.add_argument("--limit", type=int, default=0, help="images in all (0: every image)")
    parser.add_argument("--naive", type=int, default=96, help="images for the naive loop")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--engines", nargs="+", default=["torch", "onnxruntime"],
                        choices=["torch", "onnxruntime"], help="engines compared, round by round")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def _items(args: argparse.Namespace) -> list[Item]:
    items: list[Item] = []
    for name in args.sets:
        root = args.datasets / name / "images"
        items += list(folder_items(root if root.is_dir() else args.datasets / name))
    return items[: args.limit] if args.limit else items


def _naive(settings: Settings, items: list[Item]) -> float:
    """Images/s of read -> decode -> embed -> write, one image at a time."""
    embedder = embedder_from(settings)
    store = store_from(settings, embedder, "bench_naive")
    blobs = blobs_from(settings)
    started = time.perf_counter()
    for item in items:
        data = item.read()
        image_id, digest = content_id(data)
        if store.existing_ids([image_id]):
            continue
        image = embedder.decode(data)
        vector = embedder.embed_images([image])[0]
        key = image_key(digest, image_extension(data))
        blobs.put(key, data, "application/octet-stream")
        blobs.put(thumb_key(digest), thumbnail_jpeg(image, settings.ingest.thumbnail_px),
                  "image/jpeg")
        store.insert([ImageRecord(
            meta=ImageMeta(id=image_id, sha256=digest, blob_key=key, source=item.source,
                           label=item.label, width=image.width, height=image.height),
            embedding=vector,
        )])
    return len(items) / (time.perf_counter() - started)


def measure(
    settings: Settings, items: list[Item], naive_count: int, repeats: int,
    engines: Sequence[str] = ("onnxruntime",),
) -> dict[str, Any]:
    """The three rates on `items` for each engine, in one process; medians of `repeats` rounds.

    Each round runs, for each engine in turn, forward-only, the pipeline and the naive loop back
    to back (so a busy neighbour on a shared CPU slows all alike), each into a fresh Milvus Lite
    data dir.
    """
    per_engine = {engine: settings.model_copy(update={
        "model": settings.model.model_copy(update={"engine": engine})}) for engine in engines}
    embedders = {engine: embedder_from(s) for engine, s in per_engine.items()}
    first = next(iter(embedders.values()))
    decoded = [first.decode(item.read()) for item in items]
    for embedder in embedders.values():
        embedder.embed_images(decoded[: embedder.batch_size])  # load and warm up
    rounds: dict[str, dict[str, list[float]]] = {
        engine: {"forward": [], "end_to_end": []} for engine in engines}
    # The reference every engine is held to: one image at a time through eager torch, as a
    # first script would do it.
    naive_settings = settings.model_copy(update={
        "model": settings.model.model_copy(update={"engine": "torch"})})
    naive_rounds: list[float] = []
    stage_seconds: dict[str, dict[str, float]] = {}
    added: dict[str, tuple[int, int]] = {}
    for _ in range(repeats):
        for engine, embedder in embedders.items():
            started = time.perf_counter()
            embedder.embed_images(decoded)
            rounds[engine]["forward"].append(len(items) / (time.perf_counter() - started))
            with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
                # A fresh Milvus Lite per round: a connection left idle for minutes (as during
                # forward-only) has been seen to drop with GOAWAY "too_many_pings".
                round_settings = per_engine[engine].model_copy(update={"data_dir": Path(tmp)})
                store = store_from(round_settings, embedder, "bench_pipeline")
                pipeline = pipeline_from(round_settings, embedder, store,
                                         blobs_from(round_settings))
                report = pipeline.run(items, total=len(items), progress=False)
                rounds[engine]["end_to_end"].append(report.images_per_s)
                stage_seconds[engine] = report.stage_seconds
                added[engine] = (report.added, len(report.failed))
        with tempfile.TemporaryDirectory(prefix="lookalike-bench-") as tmp:
            naive_rounds.append(_naive(naive_settings.model_copy(update={"data_dir": Path(tmp)}),
                                       items[:naive_count]))
    naive_rate = statistics.median(naive_rounds)
    results: dict[str, dict[str, Any]] = {}
    for engine, embedder in embedders.items():
        forward_rate, rate = (statistics.median(rounds[engine][k])
                              for k in ("forward", "end_to_end"))
        results[engine] = {
            "images_per_s": round(rate, 2),
            "forward_only_images_per_s": round(forward_rate, 2),
            "ratio_to_forward_only": round(rate / forward_rate, 3),
            "speedup_vs_naive_torch": round(rate / naive_rate, 2),
            "rounds": {key: [round(r, 2) for r in values]
                       for key, values in rounds[engine].items()},
            "added": added[engine][0],
            "failed": added[engine][1],
            "stage_seconds_last_round": {k: round(v, 2) for k, v in stage_seconds[engine].items()},
            "batch_size": embedder.batch_size,
        }
    out: dict[str, Any] = {
        "images": len(items), "naive_images": min(naive_count, len(items)),
        "backbone": first.spec.backbone, "decode_workers": settings.ingest.decode_workers,
        "naive_torch_images_per_s": round(naive_rate, 2),
        "naive_rounds": [round(r, 2) for r in naive_rounds], "engines": results}
    if "torch" in results and "onnxruntime" in results:
        out["onnxruntime_over_torch"] = round(
            results["onnxruntime"]["images_per_s"] / results["torch"]["images_per_s"], 2)
    return out


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Measure in a temporary data dir and print the result."""
    items = _items(args)
    local = settings.model_copy(update={"milvus": settings.milvus.model_copy(update={"uri": ""}),
                                        "blobs": settings.blobs.model_copy(update={"url": ""})})
    result = measure(local, items, args.naive, args.repeats, args.engines)
    result["machine"] = describe_machine()
    result["command"] = args.command_line
    print_result(result, args.json)
    return 0
