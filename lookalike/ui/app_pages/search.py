"""Search page: upload an image, see the most similar images in the collection."""

from __future__ import annotations

import hashlib

import streamlit as st

from lookalike.services.client import ClientError, Hit, LookalikeClient, SearchResponse
from lookalike.ui.resources import (
    UPLOAD_TYPES,
    downsized,
    forget_client,
    get_client,
    markdown_text,
    source_name,
    tile,
)

GRID_COLUMNS = 4
TOP_K_DEFAULT = 12
TOP_K_MAX = 100
QUERY_PREVIEW_PX = 640
RESULT_TILE_PX = 256
FILTER_EXAMPLE = 'label == "animals"'

# The last successful search and what it was asked, so a rerun that changes nothing reuses it.
LAST_QUERY = "search_last_query"
LAST_RESPONSE = "search_last_response"

Query = tuple[str, int, str]


def _init_state() -> None:
    if LAST_QUERY not in st.session_state:
        st.session_state[LAST_QUERY] = None
    if LAST_RESPONSE not in st.session_state:
        st.session_state[LAST_RESPONSE] = None


def _show_error(client: LookalikeClient, exc: ClientError) -> None:
    """The failure in words a person can act on; never a traceback."""
    if exc.code.name == "DEADLINE_EXCEEDED":
        st.error(
            f"The Lookalike server at {client.address} did not answer within "
            f"{client.timeout_s:g} s. It may be overloaded or unreachable; try again shortly.",
            icon=":material/timer_off:",
        )
    elif exc.unreachable:
        st.error(
            f"Cannot reach the Lookalike server at {client.address}. Check that "
            "`lookalike serve` is running there and that LOOKALIKE_CLIENT__ADDRESS points to it.",
            icon=":material/cloud_off:",
        )
    elif exc.code.name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        st.error(
            f"The Lookalike server at {client.address} refused this client's credentials. "
            "Set LOOKALIKE_CLIENT__TOKEN to one of the server's tokens and reload.",
            icon=":material/lock:",
        )
    elif exc.code.name == "INVALID_ARGUMENT":
        st.error(f"The server refused this search: {markdown_text(exc.message)}",
                 icon=":material/error:")
    else:
        st.error(f"The search failed: {markdown_text(exc.message or exc.code.name)}",
                 icon=":material/error:")


def _search(client: LookalikeClient, image: bytes, top_k: int,
            filter_expr: str) -> SearchResponse | None:
    """The response for this query, from session state when nothing changed since the last run."""
    query: Query = (hashlib.sha256(image).hexdigest(), top_k, filter_expr)
    if st.session_state[LAST_QUERY] == query:
        response: SearchResponse = st.session_state[LAST_RESPONSE]
        return response
    try:
        with st.spinner("Searching…"):
            response = client.search(
                image=image, top_k=top_k, filter_expr=filter_expr, include_thumbnails=True
            )
    except ClientError as exc:
        _show_error(client, exc)
        if exc.unreachable:
            forget_client(client)
            # Failures are not remembered, so the rerun this button triggers searches again.
            st.button("Try again", key="retry_search", icon=":material/refresh:")
        return None
    st.session_state[LAST_QUERY] = query
    st.session_state[LAST_RESPONSE] = response
    return response


def _render_hit(rank: int, hit: Hit) -> None:
    with st.container(border=True, key=f"hit_{rank}"):
        thumbnail = tile(hit.thumbnail, RESULT_TILE_PX) if hit.thumbnail else None
        link = hit.image_url or None
        if thumbnail is not None:
            st.image(thumbnail, width="stretch", link=link)
        elif hit.thumbnail_url:
            st.image(hit.thumbnail_url, width="stretch", link=link)
        else:
            st.caption("No preview")
        st.markdown(f"**#{rank}** · score {hit.score:.3f}")
        label = f"{markdown_text(hit.label)} · " if hit.label else ""
        st.caption(f"{label}{markdown_text(source_name(hit.source))}")


def _render_results(response: SearchResponse) -> None:
    hits = response.hits
    count = f"{len(hits)} similar image{'s' if len(hits) != 1 else ''}"
    st.subheader(count)
    st.caption(
        f"Found in {response.took_ms:.0f} ms on the server · "
        f"collection {markdown_text(response.collection)}"
    )
    if not hits:
        st.info("No stored image matches this filter.", icon=":material/filter_alt_off:")
        return
    for start in range(0, len(hits), GRID_COLUMNS):
        row = hits[start:start + GRID_COLUMNS]
        for column, (rank, hit) in zip(
            st.columns(GRID_COLUMNS), enumerate(row, start=start + 1), strict=False
        ):
            with column:
                _render_hit(rank, hit)


def _options() -> tuple[int, str]:
    top_k = st.slider("Number of results", 1, TOP_K_MAX, TOP_K_DEFAULT, key="top_k")
    filter_expr = st.text_input(
        "Filter", key="filter_expr", placeholder=FILTER_EXAMPLE,
        help=f"Only images matching this expression, e.g. `{FILTER_EXAMPLE}`.",
    )
    return int(top_k), filter_expr.strip()


def render() -> None:
    """The whole page: the query and options on the left, the results on the right."""
    _init_state()
    st.title("Lookalike")
    st.caption("Search by image: upload a photo and see the most similar pictures in the collection.")
    try:
        client = get_client()
    except ValueError as exc:
        st.error(f"The UI's server settings are invalid: {exc}", icon=":material/settings:")
        return

    query_column, results_column = st.columns([1, 3], gap="large")
    with query_column:
        upload = st.file_uploader("Query image", type=list(UPLOAD_TYPES), key="query_image")
        image = upload.getvalue() if upload is not None else b""
        if upload is not None:
            preview = downsized(image, QUERY_PREVIEW_PX)
            if preview is not None:
                st.image(preview, width="stretch")
        top_k, filter_expr = _options()
        st.caption(f"Server: {markdown_text(client.address)}")
    with results_column:
        if upload is None:
            st.info("Upload an image to find the most similar ones in the collection.",
                    icon=":material/image_search:")
            return
        response = _search(client, image, top_k, filter_expr)
        if response is not None:
            _render_results(response)


render()
