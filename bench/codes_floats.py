"""`lookalike bench codes-floats`: how should a codes collection keep the float descriptors that
re-score a hash_rerank search's candidates, so that one Hamming search brings them back?

Milvus 2.3 allows one vector field per collection (the binary code) and has no bytes type, so
the floats go in a scalar field. Three codes collections of the same `vectors` unit vectors (256
floats, 256-bit sign codes, BIN_IVF_FLAT) on a real Milvus 2.3.5 standalone server:

- `none`: the code alone (what hash_rerank searched before, then fetched floats by id);
- `array`: plus an ARRAY of FLOAT;
- `varchar`: plus the float32 bytes in base64 in a VARCHAR (`companions.encode_floats`).

`none` and `varchar` are made, written and searched by the product's own functions
(`companions.create_codes`, `write_codes`, `search_codes`, `search_codes_with_floats`).

Each answers top-100 Hamming searches with that field, decoded to float32 rows as a re-rank
needs them: one query at a time and batches of 100. Medians of `--repeats` runs, side by side in
one run. The vectors are random: decoding does not depend on their values. Then each collection
alone is loaded into the restarted server: its resident memory per row (`bench.search`'s
`loaded_memory`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bench.machine import describe_machine, print_row
from bench.search import loaded_memory, milvus_server
from lookalike.core.milvus import companions
from lookalike.core.settings import Settings

DIM = 256
LIMIT = 100
NLIST = 1024
NPROBE = 16
CONSISTENCY = "Session"
LAYOUTS = ("none", "array", "varchar")
TABLE_HEAD = ("| floats kept as | single query ms | batch of 100 ms | memory bytes a row |\n"
              "|---|---|---|---|")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `codes-floats` to `lookalike bench`."""
    parser = commands.add_parser(
        "codes-floats", help="hash_rerank's float copy in the codes collection: ARRAY of FLOAT "
        "against base64 VARCHAR, search and decode time on a Milvus server",
    )
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(func=run)


def unit_vectors(n: int, seed: int = 0) -> NDArray[np.float32]:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def create(client: Any, physical: str, layout: str) -> None:
    """The codes collection beside `physical`: the product's (`companions.create_codes`) for
    `none` and `varchar`, the same with an ARRAY field for `array`."""
    from pymilvus import DataType, MilvusClient

    if layout != "array":
        companions.create_codes(client, physical, DIM, NLIST, {},
                                DIM if layout == "varchar" else 0)
        return
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("code", DataType.BINARY_VECTOR, dim=DIM)
    schema.add_field(companions.FLOATS_FIELD, DataType.ARRAY, element_type=DataType.FLOAT,
                     max_capacity=DIM)
    index = client.prepare_index_params()
    index.add_index(field_name="code", index_type="BIN_IVF_FLAT", metric_type="HAMMING",
                    params={"nlist": NLIST})
    client.create_collection(companions.codes_name(physical), schema=schema,
                             index_params=index, consistency_level="Strong")


def fill(client: Any, physical: str, layout: str, x: NDArray[np.float32]) -> None:
    codes = np.packbits(x > 0, axis=1)
    for start in range(0, len(x), 5000):
        ids = list(range(start, min(start + 5000, len(x))))
        if layout != "array":
            companions.write_codes(client, physical, ids, codes[ids],
                                   x[ids] if layout == "varchar" else None)
            continue
        client.insert(companions.codes_name(physical), [
            {"id": i, "code": codes[i].tobytes(), companions.FLOATS_FIELD: x[i].tolist()}
            for i in ids])
    name = companions.codes_name(physical)
    client.flush(name)
    # Load after the index is built on the sealed segments, not while it is being built.
    client.release_collection(name)
    client.load_collection(name)


Found = list[tuple[list[int], NDArray[np.float32] | None]]


def searcher(client: Any, physical: str, layout: str) -> Callable[[NDArray[np.uint8]], Found]:
    """Top-LIMIT Hamming searches with the floats decoded: the product's functions for `none`
    and `varchar`."""
    def search(codes: NDArray[np.uint8]) -> Found:
        if layout == "varchar":
            return list(companions.search_codes_with_floats(
                client, physical, codes, LIMIT, NPROBE, CONSISTENCY, DIM))
        if layout == "none":
            return [(ids, None) for ids in companions.search_codes(
                client, physical, codes, LIMIT, NPROBE, CONSISTENCY)]
        results = client.search(
            companions.codes_name(physical), data=[c.tobytes() for c in codes], limit=LIMIT,
            anns_field="code", output_fields=[companions.FLOATS_FIELD],
            search_params={"metric_type": "HAMMING", "params": {"nprobe": NPROBE}},
            consistency_level=CONSISTENCY,
        )
        return [([int(h["id"]) for h in per_query],
                 np.asarray([h["entity"][companions.FLOATS_FIELD] for h in per_query],
                            np.float32))
                for per_query in results]
    return search


def median_ms(call: Callable[[], Any], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return round(statistics.median(times) * 1000, 2)


def table_row(result: dict[str, Any]) -> str:
    return (f"| {result['floats']} | {result['single_ms']} | {result['batch100_ms']} "
            f"| {result['memory_bytes_per_row']} |")


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Build the three collections, then time them one after another in the same run."""
    from pymilvus import MilvusClient

    command = args.command_line
    x = unit_vectors(args.vectors)
    queries = np.packbits(unit_vectors(101, seed=1) > 0, axis=1)
    with tempfile.TemporaryDirectory(prefix="lookalike-bench-floats-") as tmp, \
            milvus_server(Path(tmp)) as server:
        uri = [server.start()]
        client = MilvusClient(uri=uri[0])
        for layout in LAYOUTS:
            create(client, f"bench_{layout}", layout)
            fill(client, f"bench_{layout}", layout, x)
        for layout in ("array", "varchar"):
            ids, floats = searcher(client, f"bench_{layout}", layout)(queries[:1])[0]
            if floats is None or not np.array_equal(floats, x[ids]):
                raise RuntimeError(f"the {layout} copy of the floats is not the vectors written")
        if not args.json:
            print(f"Command: `{command}`  \nMachine: {describe_machine()}\n")
            print(TABLE_HEAD, flush=True)
        # Interleaved rounds, so that drift on a noisy machine falls on every layout alike.
        timings: dict[str, dict[str, list[float]]] = {
            layout: {"single": [], "batch": []} for layout in LAYOUTS}
        for _ in range(5):
            for layout in LAYOUTS:
                search = searcher(client, f"bench_{layout}", layout)
                timings[layout]["single"].append(
                    median_ms(partial(search, queries[:1]), args.repeats))
                timings[layout]["batch"].append(
                    median_ms(partial(search, queries[1:]), max(1, args.repeats // 10)))
        client.close()
        per_row = {layout: loaded_memory(
                       server, uri, [companions.codes_name(f"bench_{layout}")])[0].rss // len(x)
                   for layout in LAYOUTS}
    for layout in LAYOUTS:
        print_row({"floats": layout, "vectors": args.vectors, "dim": DIM, "limit": LIMIT,
                   "single_ms": round(statistics.median(timings[layout]["single"]), 2),
                   "batch100_ms": round(statistics.median(timings[layout]["batch"]), 2),
                   "memory_bytes_per_row": per_row[layout],
                   "command": command}, args.json, table_row)
    return 0
