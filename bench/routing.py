"""`lookalike bench routing`: which categories should a routed search scan, on partitions keyed
by the backbone's predicted ImageNet class (`partition_by=predicted`)?

Each dataset's images are embedded once (descriptor and class logits from one forward pass);
every fourth image becomes a query and the rest are stored in a real Milvus Lite collection
(FLAT index, `partition_by=predicted`), so the queries are unseen images, as a new photo is.
Two routers are compared at the same `top_n`, both searched through the vector store:

- `means`: the product's router, `mode=routed`: the `top_n` categories whose stored descriptor
  mean is nearest the query;
- `classifier`: the query's own `top_n` ImageNet classes, searched with a filter on the
  partition key (what routing by the classifier would scan).

Reported per router and `top_n`: recall@10 against the exact top 10 of the whole collection,
how often the exact top-1 is found, and the share of the collection the routed partitions hold
(what a search scans).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.machine import describe_machine, print_row
from lookalike.app.compose import embedder_from
from lookalike.core.milvus import companions
from lookalike.core.milvus.vector_index import SearchParams
from lookalike.core.schemas import ImageMeta, ImageRecord, ScoredId
from lookalike.core.settings import MilvusSettings, Settings
from lookalike.core.vector_store import MilvusVectorStore, connect_milvus
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import IMAGE_SUFFIXES

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TABLE_HEAD = (
    "| dataset | categories | router | top_n | recall@10 | exact top-1 found | share scanned |\n"
    "|---|---|---|---|---|---|---|"
)
TOP_K = 10


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `routing` to `lookalike bench`."""
    parser = commands.add_parser(
        "routing", help="routed search on predicted-class partitions: category means vs the "
        "classifier's top-n, recall@10 against exact",
    )
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--sets", nargs="+", default=["corel1k", "imagenette_val224"])
    parser.add_argument("--top-n", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


def _files(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images under {root}")
    return files


def embed_folder(embedder: Embedder, root: Path) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Descriptors and class logits of every image under `root`, in path order."""
    vectors, logits = [], []
    files = _files(root)
    step = max(embedder.batch_size, 1)
    for start in range(0, len(files), step):
        images = [embedder.decode(p.read_bytes()) for p in files[start:start + step]]
        v, logit = embedder.embed_images_with_logits(images)
        vectors.append(v)
        logits.append(logit)
    return np.concatenate(vectors), np.concatenate(logits)


def recall(found: list[list[ScoredId]], exact: list[list[ScoredId]]) -> tuple[float, float]:
    """Mean recall@10 of `found` against `exact`, and the share of queries whose exact top-1 was
    found."""
    recalls, top1 = [], []
    for got, truth in zip(found, exact, strict=True):
        ids = {s.id for s in got}
        recalls.append(len(ids & {s.id for s in truth}) / max(len(truth), 1))
        top1.append(float(truth[0].id in ids) if truth else 1.0)
    return statistics.fmean(recalls), statistics.fmean(top1)


def measure(embedder: Embedder, root: Path, top_ns: list[int], scratch: Path) -> list[dict[str, Any]]:
    """Both routers at each `top_n` on the images under `root`."""
    started = time.perf_counter()
    vectors, logits = embed_folder(embedder, root)
    if not embedder.category_names:
        raise SystemExit(f"backbone {embedder.spec.backbone!r} has no classifier to predict with")
    names = embedder.category_names
    categories = embedder.categories_of(logits)
    is_query = np.arange(len(vectors)) % 4 == 0
    stored = np.flatnonzero(~is_query)
    queries = vectors[is_query]
    client = connect_milvus(str(scratch / f"{root.name}.db"), MilvusSettings())
    try:
        settings = MilvusSettings(index_type="FLAT", partition_by="predicted", num_partitions=64)
        spec = {**embedder.spec.to_dict(), "bench": "routing"}
        store = MilvusVectorStore.open(client, "routing", spec, embedder.dim, settings)
        store.insert([
            ImageRecord(ImageMeta(id=int(i) + 1, sha256=f"{i:064x}", blob_key="", source=str(i)),
                        vectors[i], category=categories[i])
            for i in stored
        ])
        store.seal()
        counts = Counter(categories[i] for i in stored)
        exact = store.search_ids(queries, TOP_K, params=SearchParams(mode="ann"))
        physical = store.layout().physical
        results = []
        for top_n in top_ns:
            means_routes = companions.nearest_categories(client, physical, queries, top_n, "Strong")
            by_means = store.search_ids(queries, TOP_K,
                                        params=SearchParams(mode="routed", route_top_n=top_n))
            own = [[names[int(c)] for c in np.argsort(-row)[:top_n]] for row in logits[is_query]]
            by_classifier = [
                store.search_ids(queries[q:q + 1], TOP_K,
                                 filter_expr=companions.category_filter(own[q]))[0]
                for q in range(len(queries))
            ]
            for router, found, routes in (("means", by_means, means_routes),
                                          ("classifier", by_classifier, own)):
                recall_10, top1 = recall(found, exact)
                scanned = statistics.fmean(
                    sum(counts[c] for c in set(r)) / len(stored) for r in routes)
                results.append({
                    "dataset": root.name, "images": len(stored), "queries": len(queries),
                    "categories": len(counts), "router": router, "top_n": top_n,
                    "recall@10": round(recall_10, 3), "top1_found": round(top1, 3),
                    "share_scanned": round(scanned, 3), "backbone": embedder.spec.backbone,
                })
        for result in results:
            result["seconds"] = round(time.perf_counter() - started, 1)
        return results
    finally:
        client.close()


def table_row(result: dict[str, Any]) -> str:
    """One markdown row of the table under TABLE_HEAD."""
    return (
        f"| {result['dataset']} | {result['categories']} | {result['router']} | {result['top_n']} "
        f"| {result['recall@10']:.3f} | {result['top1_found']:.3f} "
        f"| {result['share_scanned']:.3f} |"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Compare the routers on every dataset and print one result per router and top_n."""
    embedder = embedder_from(settings)
    command = args.command_line
    if not args.json:
        print(f"Command: `{command}`  \nMachine: {describe_machine()}\n")
        print(TABLE_HEAD, flush=True)
    with tempfile.TemporaryDirectory(prefix="lookalike-routing-") as scratch:
        for name in args.sets:
            for result in measure(embedder, args.datasets / name, args.top_n, Path(scratch)):
                result["command"] = command
                print_row(result, args.json, table_row)
    return 0
