"""`lookalike models list|show|delete`: the trained models of the registry (in the blob store)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike.cli.runner import EXIT_ERROR, EXIT_OK

if TYPE_CHECKING:
    from lookalike.core.model_registry import ModelVersion
    from lookalike.core.settings import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `models` and its actions."""
    models = commands.add_parser("models",
                                 help="list, show or delete the trained models of the registry")
    actions = models.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="every registered version, oldest first")
    listing.add_argument("--json", action="store_true", help="the manifests as JSON")
    listing.set_defaults(func=cmd_models)
    show = actions.add_parser("show", help="a version's manifest: spec, metrics, artefacts")
    show.add_argument("version", metavar="VERSION")
    show.add_argument("--curves", metavar="PNG", help="also write its training curves to this file")
    show.set_defaults(func=cmd_models)
    remove = actions.add_parser(
        "delete", help="delete a version (refused while the collection serves it)"
    )
    remove.add_argument("version", metavar="VERSION")
    remove.add_argument("--yes", action="store_true", help="confirm: the deletion is final")
    remove.add_argument("--collection",
                        help="collection checked for serving it (default: settings)")
    remove.set_defaults(func=cmd_models)


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    """List, show or delete the trained models of the registry (in the blob store)."""
    from lookalike.app.compose import blobs_from
    from lookalike.core.model_registry import ModelRegistry

    registry = ModelRegistry(blobs_from(settings))
    if args.action == "list":
        models = registry.list()
        if args.json:
            print(json.dumps([m.to_dict() for m in models], indent=2))
        elif not models:
            print("the model registry is empty: `lookalike train DATASET_DIR --register` adds one")
        for model in [] if args.json else models:
            print(_model_line(model))
        return EXIT_OK
    model = registry.get(args.version)
    if args.action == "show":
        print(json.dumps(model.to_dict(), indent=2))
        if args.curves:
            curves = registry.curves_png(model.version)
            if curves is None:
                print(f"error: {model.version} has no curves stored", file=sys.stderr)
                return EXIT_ERROR
            Path(args.curves).write_bytes(curves)
            print(f"curves written to {args.curves}", file=sys.stderr)
        return EXIT_OK
    if not args.yes:
        print(f"error: deleting model {model.version} cannot be undone (its id is not reused); "
              "run again with --yes", file=sys.stderr)
        return EXIT_ERROR
    collection = args.collection or settings.milvus.collection
    serving = _serving_weights(settings, collection)
    if serving is None:
        print(f"warning: could not read which model {collection!r} serves; deleting anyway",
              file=sys.stderr)
    elif serving == model.weights_id:
        print(f"error: {collection!r} serves model {model.version} (weights {serving}); roll it "
              "out to another model first (`lookalike reindex --model ...`)", file=sys.stderr)
        return EXIT_ERROR
    registry.delete(model.version)
    print(f"model {model.version} deleted ({model.size_bytes / 1e6:.1f} MB)")
    return EXIT_OK


def _model_line(model: ModelVersion) -> str:
    """One registry version in a line: when, what, trained on what, how well."""
    spec = model.spec
    trained_on = spec.get("trained_on") if isinstance(spec.get("trained_on"), dict) else None
    bits = int(spec.get("bits", 0) or 0)
    parts = [
        f"{model.version:>4}", time.strftime("%Y-%m-%d %H:%M", time.localtime(model.created_at)),
        str(spec.get("backbone", "?")), model.weights_id,
        str(spec.get("loss", "")) + (f" + {bits}-bit hash" if bits else ""),
    ]
    if trained_on:
        parts.append(f"trained on {trained_on.get('dataset', '?')} "
                     f"({trained_on.get('images', '?')} images)")
    if isinstance(best := model.metrics.get("best_val_map"), int | float):
        parts.append(f"val mAP {best:.4f}")
    parts.append(f"{model.size_bytes / 1e6:.1f} MB")
    return "  ".join(parts)


def _serving_weights(settings: Settings, collection: str) -> str | None:
    """The weights id of the model `collection` serves ("" when it does not exist); None when
    Milvus cannot be read (a Milvus Lite file held by a running server, say)."""
    from lookalike.core.errors import LookalikeError
    from lookalike.core.milvus.vector_index import is_lite
    from lookalike.core.vector_store import connect_milvus, live_collection_spec

    if is_lite(settings.milvus.model_copy(update={"uri": settings.milvus_uri})) and not Path(
        settings.milvus_uri
    ).exists():
        return ""
    try:
        client = connect_milvus(settings.milvus_uri, settings.milvus)
        try:
            spec = live_collection_spec(client, collection) or {}
        finally:
            client.close()
    except LookalikeError:
        return None
    return str(spec.get("weights", ""))
