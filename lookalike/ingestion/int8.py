"""`lookalike quantize`: the int8 graph of the configured model, calibrated on images the user
names (a folder, or the collection's stored originals), checked against fp32 on images it was
not calibrated on, and written where LOOKALIKE_MODEL__INT8_MODEL can name it.

An int8 model is another embedding (its own spec, so its own collection): a collection moves to
it through `lookalike reindex`, as to any other model.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lookalike.core.blob_store import BlobStore, write_file
from lookalike.core.vector_store import MilvusVectorStore
from lookalike.embedder.errors import ImageError
from lookalike.embedder.quantize import (
    CALIBRATION_BATCH,
    IMAGES_PER_PASS,
    QuantizationError,
    calibration_count,
    int8_id,
    quantize_int8,
)
from lookalike.embedder.runtime import Embedder
from lookalike.ingestion.sources import SourceItem, folder_items

# Images set aside from the calibration to compare int8 with fp32 on.
CHECK_IMAGES = 40


@dataclass(frozen=True, slots=True)
class Int8Result:
    """The int8 graph written, its id, how many images calibrated it and how its descriptors
    compare with fp32 ones on images it was not calibrated on."""

    path: Path
    model_id: str
    calibrated_on: int
    checked_on: int
    cosine_median: float
    cosine_min: float
    seconds: float


def folder_images(root: Path, count: int) -> list[bytes]:
    """Up to `count` images of a folder, spread evenly over its listing."""
    items = [item for item in folder_items(root) if isinstance(item, SourceItem)]
    step = max(1, len(items) // count) if items else 1
    picked = []
    for item in items[::step][:count]:
        try:
            picked.append(item.read())
        except OSError:
            continue
    return picked


def collection_images(store: MilvusVectorStore, blobs: BlobStore, count: int) -> list[bytes]:
    """The stored originals of up to `count` images of a collection, spread evenly over it."""
    ids = [i for batch in store.iter_ids() for i in batch]
    step = max(1, len(ids) // count) if ids else 1
    metas = store.get(ids[::step][:count])
    return [blobs.get(meta.blob_key) for meta in metas if meta is not None]


def make_int8(embedder: Embedder, images: Iterable[bytes], out_dir: Path) -> Int8Result:
    """Quantize `embedder`'s network (fp32, one backbone at one input size) on `images` (the last
    CHECK_IMAGES set aside to check it) and write `<backbone>-<id>.onnx` under `out_dir`."""
    started = time.perf_counter()
    decoded = []
    for data in images:
        try:
            decoded.append(embedder.decode(data))
        except ImageError:
            continue
    if len(decoded) < CHECK_IMAGES + IMAGES_PER_PASS:
        raise QuantizationError(
            f"{len(decoded)} usable images: int8 needs at least "
            f"{CHECK_IMAGES + IMAGES_PER_PASS} ({IMAGES_PER_PASS} to calibrate on, "
            f"{CHECK_IMAGES} others to check it on)")
    held_out = decoded[-CHECK_IMAGES:]
    calibration = decoded[:calibration_count(len(decoded) - CHECK_IMAGES)]
    batches = [embedder.pixels(calibration[i:i + CALIBRATION_BATCH]).numpy()
               for i in range(0, len(calibration), CALIBRATION_BATCH)]
    graph = quantize_int8(embedder.onnx_graph(), batches)
    model_id = int8_id(graph)
    path = out_dir / f"{embedder.spec.backbone}-{model_id}.onnx"
    write_file(path, graph)
    int8 = Embedder(replace(embedder.config, precision="int8", engine="auto", int8_model=path,
                            whitening=None, warmup=False))
    fp32 = Embedder(replace(embedder.config, whitening=None, warmup=False))
    cosines = np.sum(int8.embed_images(held_out) * fp32.embed_images(held_out), axis=1)
    return Int8Result(path=path, model_id=model_id, calibrated_on=len(calibration),
                      checked_on=len(held_out), cosine_median=float(np.median(cosines)),
                      cosine_min=float(cosines.min()), seconds=time.perf_counter() - started)

