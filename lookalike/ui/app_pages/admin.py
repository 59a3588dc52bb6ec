"""Admin page: the served collection, every collection, server health, and operator actions."""

from __future__ import annotations

import streamlit as st

from lookalike.services.client import (
    SEARCH_PROFILES,
    ClientError,
    CollectionSummary,
    LookalikeClient,
    Stats,
)
from lookalike.ui.jobs_view import (
    DeletePlan,
    RebuildPlan,
    act,
    duration_text,
    recover,
    show_outcome,
    warn,
)
from lookalike.ui.resources import (
    markdown_text,
    page_client,
    show_error,
    sidebar_status,
    source_name,
)

INDEX_TYPES = ("FLAT", "HNSW", "IVF_FLAT", "IVF_SQ8", "IVF_PQ")
INDEX_HELP = {
    "FLAT": "exact search, no build; slow on large collections",
    "HNSW": "graph; fast and accurate, uses the most memory",
    "IVF_FLAT": "clustered lists; fast to build",
    "IVF_SQ8": "clustered lists, 8-bit vectors; a quarter of the memory",
    "IVF_PQ": "clustered lists, product-quantised; the least memory, the least accurate",
}
# An index build on a large collection takes minutes; the client's default timeout is seconds.
REBUILD_TIMEOUT_S = 3600.0
DROP_TIMEOUT_S = 600.0
# File names of the images a delete would remove, shown in its confirmation.
DELETE_SAMPLE = 5
SELECT_BY = {"ids": "Ids", "filter": "Filter expression"}
FILTER_EXAMPLE = 'label == "textures"'

# Widget keys.
INDEX_TYPE = "admin_index_type"
INDEX_PARAMS = "admin_index_params"
REBUILD = "admin_rebuild"
REBUILD_CONFIRM = "admin_rebuild_confirm"
REBUILD_CANCEL = "admin_rebuild_cancel"
DELETE_BY = "admin_delete_by"
DELETE_IDS = "admin_delete_ids"
DELETE_FILTER = "admin_delete_filter"
DELETE_REVIEW = "admin_delete_review"
DELETE_CONFIRM = "admin_delete_confirm"
DELETE_CANCEL = "admin_delete_cancel"
DROP_NAME = "admin_drop_name"
DROP_CONFIRM = "admin_drop_confirm"
DROP = "admin_drop"
# Confirmations waiting for a second click, outcomes to report once, and a reset to do.
REBUILD_PENDING = "admin_rebuild_pending"
DELETE_PENDING = "admin_delete_pending"
REBUILD_OUTCOME = "admin_rebuild_outcome"
DELETE_OUTCOME = "admin_delete_outcome"
DROP_OUTCOME = "admin_drop_outcome"
DROP_RESET = "admin_drop_reset"


def _spec_rows(stats: Stats) -> dict[str, list[str]]:
    model = stats.model
    pooling = f"GeM (p = {model.gem_p:g})" if model.pooling == "gem" else model.pooling
    return {
        "Property": ["Backbone", "Weights", "Pooling", "Input size", "Resize", "Whitening",
                     "Dimensions", "Test-time scales", "Mirrored too", "Semantic weight",
                     "Spec version"],
        "Value": [model.backbone, model.weights or "(none)", pooling,
                  f"{model.input_size} px", model.resize, model.whitening or "none",
                  str(model.dim), ", ".join(f"{s:g}" for s in model.scales),
                  "yes" if model.flip else "no", f"{model.semantic_weight:g}",
                  str(model.version)],
    }


def _params_text(params: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items())) or "defaults"


def _overview(stats: Stats) -> None:
    """The served collection's size, index and model."""
    with st.container(horizontal=True):
        st.metric("Images", f"{stats.count:,}", border=True, icon=":material/image:")
        st.metric("Collection", stats.collection, border=True, icon=":material/database:",
                  help=f"Physical collection: {stats.physical_collection}")
        st.metric("Index", stats.index_type or "none", border=True, icon=":material/account_tree:")
        st.metric("Dimensions", stats.model.dim, border=True, icon=":material/straighten:")
    model_column, index_column = st.columns(2, gap="medium")
    with model_column, st.container(border=True, key="admin_model"):
        st.markdown("**:material/neurology: Model**")
        st.table(_spec_rows(stats))
    with index_column, st.container(border=True, key="admin_index"):
        st.markdown("**:material/account_tree: Vector index**")
        st.table({
            "Property": ["Type", "Metric", "Physical collection",
                         *(f"Parameter {name}" for name in sorted(stats.index_params))],
            "Value": [stats.index_type or "none", stats.metric_type, stats.physical_collection,
                      *(stats.index_params[name] for name in sorted(stats.index_params))],
        })


def _profiles() -> None:
    """What each search profile is for and what it was measured to cost."""
    st.caption("Set one with `LOOKALIKE_SEARCH__PROFILE=<name>` before a collection is built "
               "(its model and DBA reach the stored vectors; changing them later is `lookalike "
               "reindex`). Costs: medians measured by `make eval` on 2 CPU cores with ONNX "
               "Runtime; docs/QUALITY.md has the measurements and how each was chosen.")
    st.dataframe(
        {
            "Profile": [p.name for p in SEARCH_PROFILES.values()],
            "For": [p.use for p in SEARCH_PROFILES.values()],
            "Ingest images/s": [p.ingest_images_per_s for p in SEARCH_PROFILES.values()],
            "Query ms": [p.query_ms for p in SEARCH_PROFILES.values()],
        },
        hide_index=True, key="admin_profiles",
        column_config={"For": st.column_config.TextColumn("For", width="large")},
    )


def _collections_table(collections: list[CollectionSummary]) -> None:
    st.dataframe(
        {
            "Name": [c.name for c in collections],
            "Aliases": [", ".join(c.aliases) or "(none)" for c in collections],
            "Images": [c.count for c in collections],
            "Model": [f"{c.model.backbone} · {c.model.dim}-d" if c.model else "(not Lookalike)"
                      for c in collections],
            "Index": [f"{c.index_type or 'none'} ({_params_text(c.index_params)})"
                      for c in collections],
            "Serving": [c.serving for c in collections],
        },
        hide_index=True, key="admin_collections",
        column_config={"Serving": st.column_config.CheckboxColumn("Serving")},
    )


def _health(client: LookalikeClient) -> None:
    """SERVING or not, for the whole server and for each service, as green or red badges."""
    with st.container(horizontal=True, key="admin_health"):
        for service, serving in client.health_report().items():
            name = service.rsplit(".", 1)[-1] if service else "Server"
            if serving:
                st.badge(name, icon=":material/check_circle:", color="green")
            else:
                st.badge(f"{name}: not serving", icon=":material/cancel:", color="red")


def _parse_params(text: str) -> dict[str, str] | None:
    """`name=value, ...` as a dict; None when a pair has no `=` or no name."""
    params: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = pair.partition("=")
        if not sep or not name.strip() or not value.strip():
            return None
        params[name.strip()] = value.strip()
    return params


def _ask_rebuild() -> None:
    params = _parse_params(str(st.session_state.get(INDEX_PARAMS, "")))
    if params is None:
        warn(REBUILD_OUTCOME, "Write build parameters as name=value pairs separated by commas, "
                              "e.g. M=16, efConstruction=200.")
        return
    st.session_state[REBUILD_PENDING] = RebuildPlan(str(st.session_state[INDEX_TYPE]), params)


def _forget(key: str) -> None:
    st.session_state.pop(key, None)


def _rebuild(client: LookalikeClient, stats: Stats) -> None:
    """Choose an index type, confirm, rebuild (with a long timeout), report."""
    current = INDEX_TYPES.index(stats.index_type) if stats.index_type in INDEX_TYPES else 0
    st.selectbox("Index type", INDEX_TYPES, index=current, key=INDEX_TYPE,
                 format_func=lambda t: f"{t} — {INDEX_HELP[t]}",
                 on_change=_forget, args=(REBUILD_PENDING,))
    st.text_input("Build parameters (optional)", key=INDEX_PARAMS,
                  placeholder="M=16, efConstruction=200", on_change=_forget,
                  args=(REBUILD_PENDING,),
                  help="name=value pairs (M, efConstruction, nlist, m, nbits); the ones left out "
                       "take the server's settings.")
    st.button("Rebuild index", key=REBUILD, icon=":material/build:", on_click=_ask_rebuild)
    plan = st.session_state.get(REBUILD_PENDING)
    if isinstance(plan, RebuildPlan):
        with st.container(border=True, key="admin_rebuild_confirmation"):
            st.warning(
                f"Rebuild the vector index of **{markdown_text(stats.collection)}** "
                f"({stats.count:,} images) as **{plan.index_type}** "
                f"({markdown_text(_params_text(plan.params))})? Searches fail while it builds, "
                "which can take minutes on a large collection.",
                icon=":material/warning:",
            )
            with st.container(horizontal=True):
                confirmed = st.button("Rebuild now", key=REBUILD_CONFIRM, type="primary",
                                      icon=":material/build:")
                st.button("Cancel", key=REBUILD_CANCEL, on_click=_forget,
                          args=(REBUILD_PENDING,))
        if confirmed:
            def rebuild() -> str:
                done = client.rebuild_index(plan.index_type, plan.params,
                                            timeout_s=REBUILD_TIMEOUT_S)
                return (f"Rebuilt the index as {done.index_type} "
                        f"({_params_text(done.index_params)}) in {duration_text(done.seconds)}.")

            with st.spinner(f"Building the {plan.index_type} index…", show_time=True):
                act(REBUILD_OUTCOME, rebuild)
            _forget(REBUILD_PENDING)
            st.rerun()
    show_outcome(client, REBUILD_OUTCOME, "index rebuild")


def _parse_ids(text: str) -> list[int] | None:
    """Comma- or space-separated ids; None when one is not a whole number."""
    try:
        return [int(part) for part in text.replace(",", " ").split()]
    except ValueError:
        return None


def _plan_delete(client: LookalikeClient) -> DeletePlan | None:
    """What the chosen ids or filter select now, or None after saying why there is nothing."""
    if st.session_state.get(DELETE_BY) == "filter":
        filter_expr = str(st.session_state.get(DELETE_FILTER, "")).strip()
        if not filter_expr:
            st.warning("Write a filter expression first.", icon=":material/filter_alt:")
            return None
        page = client.list_images(filter_expr=filter_expr, limit=DELETE_SAMPLE,
                                  include_thumbnails=False)
        return DeletePlan((), filter_expr, page.total,
                          tuple(source_name(h.source) for h in page.images))
    ids = _parse_ids(str(st.session_state.get(DELETE_IDS, "")))
    if not ids:
        st.warning("Enter one or more image ids (whole numbers, separated by commas).",
                   icon=":material/pin:")
        return None
    found = client.get(ids)
    if found.missing_ids:
        st.caption(f"Not stored, so left alone: {', '.join(map(str, found.missing_ids))}")
    stored = tuple(h.id for h in found.images)
    return DeletePlan(stored, "", len(stored),
                      tuple(source_name(h.source) for h in found.images[:DELETE_SAMPLE]))


def _delete_now(client: LookalikeClient, plan: DeletePlan) -> str:
    if plan.ids:
        deleted = len(client.delete(ids=plan.ids))
    else:
        # The server deletes a bounded number per call: repeat until what was reviewed is gone.
        deleted = 0
        while deleted < plan.count:
            batch = client.delete(filter_expr=plan.filter_expr)
            if not batch:
                break
            deleted += len(batch)
    return f"Deleted {deleted:,} image{'s' if deleted != 1 else ''}."


def _delete(client: LookalikeClient) -> None:
    """Choose images by ids or filter, review how many, confirm, delete, report."""
    by = st.segmented_control("Select images by", tuple(SELECT_BY), default="ids", key=DELETE_BY,
                              format_func=SELECT_BY.__getitem__, required=True,
                              on_change=_forget, args=(DELETE_PENDING,))
    if by == "filter":
        st.text_input("Filter expression", key=DELETE_FILTER, placeholder=FILTER_EXAMPLE,
                      on_change=_forget, args=(DELETE_PENDING,),
                      help=f"A Milvus expression over stored fields, e.g. `{FILTER_EXAMPLE}`.")
    else:
        st.text_input("Image ids", key=DELETE_IDS, placeholder="e.g. 1234567890, 987654321",
                      on_change=_forget, args=(DELETE_PENDING,),
                      help="Ids as the Browse page shows them, separated by commas.")
    if st.button("Review deletion", key=DELETE_REVIEW, icon=":material/preview:"):
        _forget(DELETE_PENDING)
        try:
            plan = _plan_delete(client)
        except ClientError as exc:
            recover(client, exc, "deletion review", "admin_delete_retry")
            plan = None
        if plan is not None and plan.count == 0:
            st.info("No stored image matches: there is nothing to delete.",
                    icon=":material/search_off:")
        elif plan is not None:
            st.session_state[DELETE_PENDING] = plan
    plan = st.session_state.get(DELETE_PENDING)
    if isinstance(plan, DeletePlan):
        what = (f"matching `{markdown_text(plan.filter_expr)}`" if plan.filter_expr
                else "with the ids given")
        with st.container(border=True, key="admin_delete_confirmation"):
            st.warning(
                f"Delete the **{plan.count:,}** stored image{'s' if plan.count != 1 else ''} "
                f"{what}? Their vectors, originals and thumbnails go; this cannot be undone.",
                icon=":material/delete_forever:",
            )
            if plan.sample:
                more = ", …" if plan.count > len(plan.sample) else ""
                st.caption(f"Among them: {markdown_text(', '.join(plan.sample))}{more}")
            with st.container(horizontal=True):
                confirmed = st.button(f"Delete {plan.count:,} images", key=DELETE_CONFIRM,
                                      type="primary", icon=":material/delete:")
                st.button("Cancel", key=DELETE_CANCEL, on_click=_forget, args=(DELETE_PENDING,))
        if confirmed:
            with st.spinner("Deleting…"):
                act(DELETE_OUTCOME, lambda: _delete_now(client, plan))
            _forget(DELETE_PENDING)
            st.rerun()
    show_outcome(client, DELETE_OUTCOME, "deletion")


def _drop(client: LookalikeClient, collections: list[CollectionSummary]) -> None:
    """Choose a collection, type its name, drop it, report."""
    if st.session_state.pop(DROP_RESET, False):
        st.session_state[DROP_CONFIRM] = ""
    if not collections:
        st.caption("The server lists no collection.")
        show_outcome(client, DROP_OUTCOME, "drop")
        return
    by_name = {c.name: c for c in collections}
    serving = next((i for i, c in enumerate(collections) if c.serving), 0)
    name = st.selectbox("Collection", tuple(by_name), index=serving, key=DROP_NAME,
                        format_func=lambda n: f"{n} (served)" if by_name[n].serving else n)
    chosen = by_name[str(name)]
    replaced = (" The server then searches an empty collection with the same model until you "
                "ingest again." if chosen.serving else "")
    st.warning(
        f"Dropping **{markdown_text(chosen.name)}** deletes its {chosen.count:,} vectors and "
        f"cannot be undone.{replaced} Originals and thumbnails stay in the blob store.",
        icon=":material/warning:",
    )
    typed = st.text_input("Type the collection name to confirm", key=DROP_CONFIRM,
                          placeholder=chosen.name)
    if st.button("Drop collection", key=DROP, type="primary", icon=":material/delete_forever:",
                 disabled=typed != chosen.name):
        def drop() -> str:
            done = client.drop_collection(chosen.name, typed, timeout_s=DROP_TIMEOUT_S)
            after = (" An empty collection with the same model took its place."
                     if done.recreated else "")
            return f"Dropped {chosen.name} ({done.dropped_images:,} images).{after}"

        with st.spinner(f"Dropping {chosen.name}…"):
            act(DROP_OUTCOME, drop)
        st.session_state[DROP_RESET] = True
        st.rerun()
    show_outcome(client, DROP_OUTCOME, "drop")


def render() -> None:
    """The whole page: overview, collections, health, then the maintenance actions in tabs."""
    st.title("Admin")
    st.caption("The collection the server searches, its model and index, every collection on "
               "its Milvus, the health of each service, and maintenance.")
    client = page_client()
    if client is None:
        return
    sidebar_status(client)
    try:
        stats = client.stats()
    except ClientError as exc:
        recover(client, exc, "statistics request", "admin_retry")
        return
    _overview(stats)

    st.subheader("Collections", anchor=False)
    collections: list[CollectionSummary] = []
    try:
        collections = client.list_collections()
    except ClientError as exc:
        show_error(client, exc, "collection listing")
    else:
        _collections_table(collections)

    st.subheader("Server health", anchor=False)
    _health(client)

    st.subheader("Search profiles", anchor=False)
    _profiles()

    st.subheader("Maintenance", anchor=False)
    rebuild_tab, delete_tab, drop_tab = st.tabs([
        ":material/build: Rebuild index", ":material/delete: Delete items",
        ":material/delete_forever: Drop collection",
    ])
    with rebuild_tab:
        _rebuild(client, stats)
    with delete_tab:
        _delete(client)
    with drop_tab:
        _drop(client, collections)


render()
