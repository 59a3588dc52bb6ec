"""Commands that rework a stored collection: `dedup`, `delete`, `dba`, `whiten`, `hash`,
`quantize` (its int8 graph) and `routes`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.cli.runner import EXIT_OK

if TYPE_CHECKING:
    from collections.abc import Callable

    from lookalike.core.settings import Settings

    Command = Callable[[Settings, argparse.Namespace], int]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `dedup`, `delete`, `dba`, `whiten`, `hash`, `quantize` and `routes`."""
    dedup = commands.add_parser("dedup", help="list near-duplicate pairs above a similarity")
    dedup.add_argument("--threshold", type=float, default=0.95, help="cosine similarity")
    dedup.add_argument("--max-per-image", type=int, default=64)
    dedup.add_argument("--collection", help="collection name (default: settings)")
    dedup.add_argument("--json", action="store_true", help="one JSON object per pair")
    dedup.set_defaults(func=cmd_dedup)

    delete = commands.add_parser("delete", help="delete images (vector, then blob and thumbnail)")
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, nargs="+", help="ids to delete")
    which.add_argument("--filter", help='filter expression, e.g. label == "junk"')
    _on_collection(delete, cmd_delete)

    dba = commands.add_parser(
        "dba", help="recompute database-side augmentation from the stored raw descriptors"
    )
    dba.add_argument("--all", action="store_true",
                     help="every image (default: those not augmented yet, and their neighbours)")
    _on_collection(dba, cmd_dba)

    whiten = commands.add_parser(
        "whiten", help="learn PCA whitening on a collection and serve it whitened"
    )
    whiten.add_argument("--dim", type=int, default=0,
                        help="whitened dimensions (default 0: as many as the collection supports)")
    whiten.add_argument("--power", type=float, default=0.5,
                        help="eigenvalue power: 0.5 whitens fully, less whitens partially")
    _on_collection(whiten, cmd_whiten)

    hashing = commands.add_parser(
        "hash", help="learn ITQ binary codes on a collection for hash_rerank search (server only)"
    )
    hashing.add_argument("--bits", type=int, choices=(48, 64, 128, 256), default=128)
    hashing.add_argument("--samples", type=int, default=100_000,
                         help="descriptors ITQ is learned on (evenly spread over the collection)")
    _on_collection(hashing, cmd_hash)

    quantize = commands.add_parser(
        "quantize", help="make the int8 graph of the model (CPU, onnxruntime), calibrated on "
                         "your images")
    quantize.add_argument("images", nargs="?",
                          help="folder of calibration images (default: the collection's stored "
                               "originals)")
    quantize.add_argument("--count", type=int, default=240,
                          help="images read: 40 set aside to check it, the rest (in whole passes "
                               "of 40) calibrate")
    quantize.add_argument("--collection", help="collection name (default: settings)")
    quantize.add_argument("--out", help="folder of the int8 graph (default: <data_dir>/models)")
    quantize.set_defaults(func=cmd_quantize)

    routes = commands.add_parser(
        "routes", help="recompute the category means routed search picks partitions by"
    )
    _on_collection(routes, cmd_routes)


def _on_collection(parser: argparse.ArgumentParser, command: Command) -> None:
    """Finish `parser`: its `--collection` option, last, and the command it runs."""
    parser.add_argument("--collection", help="collection name (default: settings)")
    parser.set_defaults(func=command)


def cmd_dedup(settings: Settings, args: argparse.Namespace) -> int:
    """List near-duplicate pairs (one Milvus range search per stored image)."""
    from lookalike.app.compose import existing_store_from
    from lookalike.maintenance.upkeep import near_duplicates

    # Maintenance needs no model: any collection, whitened or not, whatever built it.
    store = existing_store_from(settings, args.collection)
    pairs = 0
    for pair in near_duplicates(store, args.threshold, max_per_image=args.max_per_image):
        first, second = store.get([pair.first, pair.second])
        if args.json:
            print(json.dumps({"score": round(pair.score, 6), "first": pair.first,
                              "second": pair.second,
                              "first_source": first.source if first else "",
                              "second_source": second.source if second else ""}))
        else:
            print(f"{pair.score:.4f}  {pair.first}  {pair.second}  "
                  f"{first.source if first else '?'}  {second.source if second else '?'}")
        pairs += 1
    print(f"{pairs} near-duplicate pairs at cosine >= {args.threshold}", file=sys.stderr)
    return EXIT_OK


def cmd_delete(settings: Settings, args: argparse.Namespace) -> int:
    """Delete images by id or filter: the vector first, then the blob and thumbnail."""
    from lookalike.app.compose import blobs_from, existing_store_from
    from lookalike.maintenance.upkeep import delete_images, delete_matching

    blobs = blobs_from(settings)
    store = existing_store_from(settings, args.collection)
    if args.filter:
        removed = delete_matching(store, blobs, args.filter)
    else:
        removed = delete_images(store, blobs, args.id)
    print(f"deleted {removed} images from {store.name!r}")
    return EXIT_OK


def cmd_dba(settings: Settings, args: argparse.Namespace) -> int:
    """Recompute database-side augmentation from the raw descriptors: pending rows, or --all."""
    from lookalike.app.compose import dba_from, existing_store_from
    from lookalike.core.errors import ConfigError
    from lookalike.maintenance.dba import apply_dba, apply_dba_all, dba_for, unaugmented_ids

    store = existing_store_from(settings, args.collection)
    wanted = dba_from(settings)
    params = (wanted or store.dba_params()) if args.all else dba_for(store, wanted)
    if params is None:
        store.require_raw()
        raise ConfigError(f"no DBA parameters for {store.name!r}: set retrieval.dba_k")
    if args.all:
        updated = apply_dba_all(store, params.k, params.alpha)
    else:
        updated = apply_dba(store, unaugmented_ids(store), params.k, params.alpha)
    print(f"{updated} embeddings of {store.name!r} recomputed (k={params.k}, alpha={params.alpha})")
    return EXIT_OK


def cmd_whiten(settings: Settings, args: argparse.Namespace) -> int:
    """Learn PCA whitening on a collection and serve it whitened; the old collection is kept."""
    from lookalike.app.compose import blobs_from, existing_store_from
    from lookalike.maintenance.whiten import whiten_collection

    blobs = blobs_from(settings)
    store = existing_store_from(settings, args.collection)
    result = whiten_collection(store, blobs, dim=args.dim, power=args.power)
    print(f"{result.rows} images of {store.name!r} whitened to {result.whitening.dim} dimensions; "
          f"it now serves {result.current}")
    print(f"the unwhitened collection {result.previous} is kept: drop it once searches look "
          f"right, or roll back by pointing alias {store.name!r} at it (Milvus alter_alias)")
    print(f"whitening id: {result.whitening.id}")
    return EXIT_OK


def cmd_hash(settings: Settings, args: argparse.Namespace) -> int:
    """Learn ITQ hash codes on a collection and keep a code per image (server only)."""
    from lookalike.app.compose import blobs_from, existing_store_from
    from lookalike.maintenance.hash_codes import hash_collection

    blobs = blobs_from(settings)
    store = existing_store_from(settings, args.collection)
    result = hash_collection(store, blobs, args.bits, max_samples=args.samples)
    print(f"{result.itq.bits}-bit ITQ learned on {result.samples} descriptors of {store.name!r}; "
          f"{result.codes} codes written (hash id {result.itq.id})")
    print("search with it: LOOKALIKE_MILVUS__SEARCH_MODE=hash_rerank, or mode=hash_rerank per query")
    return EXIT_OK


def cmd_quantize(settings: Settings, args: argparse.Namespace) -> int:
    """Make the int8 graph of the settings' model, calibrated on a folder's images or on the
    collection's stored originals, and say how to serve a collection with it."""
    from lookalike.app.compose import blobs_from, embedder_from, existing_store_from
    from lookalike.ingestion.int8 import collection_images, folder_images, make_int8

    # Calibrated from the fp32 network, whatever precision the settings name now.
    model = settings.model.model_copy(update={"precision": "fp32", "engine": "auto",
                                              "int8_model": ""})
    embedder = embedder_from(settings.model_copy(update={"model": model}))
    if args.images:
        source = args.images
        images = folder_images(Path(args.images), args.count)
    else:
        store = existing_store_from(settings, args.collection)
        source = f"the stored originals of {store.name!r}"
        images = collection_images(store, blobs_from(settings), args.count)
    out_dir = Path(args.out) if args.out else settings.data_dir / "models"
    print(f"calibrating int8 {embedder.spec.backbone} on up to {len(images)} images of {source}")
    result = make_int8(embedder, images, out_dir)
    print(f"int8 graph {result.model_id} written to {result.path} ({result.seconds:.0f} s; "
          f"calibrated on {result.calibrated_on} images)")
    print(f"its descriptors against fp32 on {result.checked_on} images it was not calibrated "
          f"on: cosine median {result.cosine_median:.4f}, min {result.cosine_min:.4f}")
    print("int8 is another embedding: build a collection with it, e.g. "
          f"LOOKALIKE_MODEL__PRECISION=int8 LOOKALIKE_MODEL__INT8_MODEL={result.path} lookalike "
          f"reindex --model {model.backbone}, then serve with those two settings")
    return EXIT_OK


def cmd_routes(settings: Settings, args: argparse.Namespace) -> int:
    """Recompute the category means that routed search picks partitions by."""
    from lookalike.app.compose import existing_store_from

    store = existing_store_from(settings, args.collection)
    categories = store.rebuild_routes()
    print(f"{categories} category means of {store.name!r} recomputed from its descriptors")
    return EXIT_OK
