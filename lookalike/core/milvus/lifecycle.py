"""Creating, opening and versioning collections: the schema of a main collection, the alias
that serves one physical collection, and new versions filled aside and then swapped in.

A collection created with database-side augmentation (DBA) also keeps each image's descriptor
as it came from the model in a second vector field, `raw` (FLAT, exact), and its DBA parameters
in a property: `embedding` can then always be recomputed from `raw` (see maintenance/dba.py).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from typing import Any

from lookalike.core.errors import ConfigError, InvalidArgument, ModelSpecMismatch
from lookalike.core.milvus import companions
from lookalike.core.milvus.connection import Served
from lookalike.core.milvus.errors import call_failed, milvus_errors
from lookalike.core.milvus.inspection import collection_spec, resolve_alias
from lookalike.core.milvus.layout import (
    CATEGORY_FIELD,
    DBA_PROPERTY,
    INDEX_PROPERTY,
    PARTITION_PROPERTY,
    RAW_FIELD,
    SPEC_PROPERTY,
    DbaParams,
    check_collection_name,
    physical_name,
    spec_diff,
)
from lookalike.core.milvus.vector_index import index_params, is_lite
from lookalike.core.settings import MilvusSettings

# Pause between an alias swap and its repeat (see `point_alias`).
ALIAS_SETTLE_S = 1.0


def open_collection(
    client: Any, name: str, spec: Mapping[str, Any], dim: int, settings: MilvusSettings,
    *, create: bool, dba: DbaParams | None,
) -> None:
    """Load collection `name` for `spec`, creating it when missing and `create` is set.

    Raises ModelSpecMismatch when `name` holds vectors of another model.
    """
    check_collection_name(name)
    with milvus_errors(f"cannot open collection {name!r}"):
        live = resolve_alias(client, name)
        if live is None:
            if not create:
                raise ConfigError(f"collection {name!r} does not exist")
            physical = physical_name(name, spec)
            create_collection(client, physical, spec, dim, settings, dba)
            client.create_alias(physical, name)
        else:
            stored = collection_spec(client, live)
            if stored != dict(spec):
                raise ModelSpecMismatch(
                    f"collection {name!r} was built with another model "
                    f"({spec_diff(stored, spec)}); use the model it was built with, "
                    "another collection name, or re-index it"
                )
        load(client, name)


def attach_collection(client: Any, name: str) -> None:
    """Load the existing collection `name` whatever its model spec (for maintenance)."""
    check_collection_name(name)
    with milvus_errors(f"cannot open collection {name!r}"):
        if resolve_alias(client, name) is None:
            raise ConfigError(f"collection {name!r} does not exist")
        load(client, name)


def load(client: Any, name: str) -> None:
    """Load the collection behind alias `name` and its companions (a server may have
    released them)."""
    client.load_collection(name)
    physical = resolve_alias(client, name)
    if physical is None:
        return
    for companion in (companions.codes_name(physical), companions.routes_name(physical)):
        if client.has_collection(companion):
            client.load_collection(companion)


def check_multi_vector(client: Any) -> None:
    """Raise ConfigError when the server allows one vector field per collection (before 2.4)."""
    version = str(client.get_server_version()).lstrip("v")
    match = re.match(r"(\d+)\.(\d+)", version)
    if match and (int(match.group(1)), int(match.group(2))) < (2, 4):
        raise ConfigError(
            f"database-side augmentation keeps a second vector field, which Milvus {version} "
            "does not support (2.4 or newer does); set retrieval.dba_k to 0"
        )


def create_collection(
    client: Any, physical: str, spec: Mapping[str, Any], dim: int, settings: MilvusSettings,
    dba: DbaParams | None,
) -> None:
    """The physical collection `physical` for `spec` (with its routes where the settings
    partition it), indexed as the settings say; not loaded."""
    from pymilvus import DataType, MilvusClient

    partitioned = settings.partition_by != "none"
    index_type, params = index_params(settings, dim)
    if dba is not None:
        check_multi_vector(client)
    schema = MilvusClient.create_schema(
        auto_id=False, enable_dynamic_field=False,
        **({"partition_key_field": CATEGORY_FIELD, "num_partitions": settings.num_partitions}
           if partitioned else {}),
    )
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("sha256", DataType.VARCHAR, max_length=64)
    schema.add_field("blob_key", DataType.VARCHAR, max_length=512)
    schema.add_field("source", DataType.VARCHAR, max_length=4096)
    schema.add_field("label", DataType.VARCHAR, max_length=512)
    schema.add_field(
        "tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=64, max_length=128
    )
    schema.add_field("meta", DataType.JSON)
    schema.add_field("width", DataType.INT32)
    schema.add_field("height", DataType.INT32)
    schema.add_field("ingested_at", DataType.INT64)
    if partitioned:
        schema.add_field(CATEGORY_FIELD, DataType.VARCHAR,
                         max_length=companions.MAX_CATEGORY_LEN, is_partition_key=True)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
    indexes = client.prepare_index_params()
    indexes.add_index(
        field_name="embedding", index_type=index_type, metric_type="IP", params=params
    )
    properties = {SPEC_PROPERTY: json.dumps(dict(spec), sort_keys=True),
                  PARTITION_PROPERTY: settings.partition_by,
                  INDEX_PROPERTY: json.dumps({"index_type": index_type, "params": params},
                                             sort_keys=True)}
    if dba is not None:
        schema.add_field(RAW_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        # Exact neighbours: DBA must not depend on what an approximate index happens to find.
        indexes.add_index(
            field_name=RAW_FIELD, index_type="FLAT", metric_type="IP", params={}
        )
        properties[DBA_PROPERTY] = dba.to_json()
    # Given at creation: Milvus 2.3 forgets properties altered later when it restarts. Reads
    # that decide writes (which ids exist) stay Strong; searches use settings.consistency.
    client.create_collection(
        physical, schema=schema, index_params=indexes, consistency_level="Strong",
        properties=properties,
    )
    if partitioned:
        companions.create_routes(client, physical, dim)


def create_version(
    served: Served, spec: Mapping[str, Any], dim: int, dba: DbaParams | None
) -> str:
    """A new, empty physical collection for `spec`, loaded but not served yet; its name.

    One left by an interrupted run (nothing serves it) is dropped and created again; the one
    the alias serves is refused.
    """
    client = served.client
    physical = physical_name(served.name, spec)
    with milvus_errors(f"cannot create collection {physical!r}"):
        if client.has_collection(physical):
            if client.list_aliases(physical).get("aliases", []):
                raise ConfigError(
                    f"collection {physical!r} already serves {served.name!r}: "
                    "it holds vectors of this model spec"
                )
            client.drop_collection(physical)
        # Companions left by an interrupted run describe rows that are gone.
        for companion in (companions.codes_name(physical), companions.routes_name(physical)):
            if client.has_collection(companion):
                client.drop_collection(companion)
        create_collection(client, physical, spec, dim, served.settings, dba)
        client.load_collection(physical)
    return physical


def point_alias(served: Served, physical: str) -> None:
    """Serve the store's name from the physical collection `physical`, atomically; the old one
    stays."""
    if not physical.startswith(f"{served.name}__"):
        raise InvalidArgument(f"{physical!r} is not a version of collection {served.name!r}")
    with milvus_errors(call_failed("load_collection", served.name)):
        served.client.load_collection(physical)
    # Milvus proxies before milvus-io/milvus#51779 (2026) key their shard-leader cache by
    # the alias name: a cache fill that raced the swap can put the old collection's shards
    # back under the alias, and searches through it then reach the old collection until the
    # entry ages out (seen on 2.3.5 under a concurrent search loop). The same swap again a
    # moment later invalidates that entry once more; fills after the first one are right.
    _alter_alias(served, physical)
    if not is_lite(served.settings):  # one process, no proxy cache
        time.sleep(ALIAS_SETTLE_S)
        _alter_alias(served, physical)


def _alter_alias(served: Served, physical: str) -> None:
    with milvus_errors(call_failed("alter_alias", served.name)):
        served.client.alter_alias(physical, served.name)
