"""Search page: query by upload, camera or stored image, crop and filter, see the most similar."""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

import streamlit as st

from lookalike.services.client import ClientError, Hit, LookalikeClient, SearchResponse
from lookalike.ui.resources import (
    FULL_CROP,
    UPLOAD_TYPES,
    CropBox,
    cropped,
    downsized,
    forget_client,
    label_counts,
    markdown_text,
    outlined,
    page_client,
    show_error,
    sidebar_status,
    source_name,
    tile,
)

GRID_COLUMNS = 4
TOP_K_DEFAULT = 12
TOP_K_MAX = 100
QUERY_PREVIEW_PX = 640
RESULT_TILE_PX = 256
PICKER_TILE_PX = 160
PICKER_PAGE_SIZE = 6
PICKER_COLUMNS = 2
# A crop narrower or shorter than this (percent) leaves too little to describe.
MIN_CROP_PERCENT = 5
FILTER_EXAMPLE = 'label == "animals"'

SOURCES = ("upload", "camera", "stored")
SOURCE_NAMES = {
    "upload": ":material/upload: Upload",
    "camera": ":material/photo_camera: Camera",
    "stored": ":material/photo_library: Stored image",
}
SOURCE_HINTS = {
    "upload": "Upload an image to find the most similar ones in the collection.",
    "camera": "Take a photo to find the most similar images in the collection.",
    "stored": "Pick a stored image, or click “More like this” on a result, to find its lookalikes.",
}
MODES = ("default", "ann", "hash_rerank", "routed")
MODE_NAMES = {
    "default": "Server default",
    "ann": "ANN (float index)",
    "hash_rerank": "Hash codes, re-ranked",
    "routed": "Class-routed",
}

# Widget keys.
SOURCE = "search_source"
CROP_X = "crop_x"
CROP_Y = "crop_y"
STORED_ID_INPUT = "stored_id_input"
# The stored image queried by id, and a typed id that named no image.
STORED_ID = "search_stored_id"
BAD_ID = "search_bad_id"
# Another page (Browse) sets this to an image id to open Search with that image as the query.
PENDING_ID = "search_pending_id"
PICKER_PAGE = "search_picker_page"
# The last successful search and what it was asked, so a rerun that changes nothing reuses it.
LAST_QUERY = "search_last_query"
LAST_RESPONSE = "search_last_response"
LAST_ROUND_TRIP = "search_last_round_trip_ms"


@dataclass(frozen=True, slots=True)
class Query:
    """What to search with: encoded image bytes or the id of a stored image."""

    image: bytes | None = None
    image_id: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        """A short identity of the query, for telling whether it changed."""
        if self.image_id is not None:
            return ("id", str(self.image_id))
        return ("image", hashlib.sha256(self.image or b"").hexdigest())


@dataclass(frozen=True, slots=True)
class Options:
    """How to search: result count, filters, score bound and search mode."""

    top_k: int
    filter_expr: str
    labels: tuple[str, ...]
    tags: tuple[str, ...]
    min_score: float | None
    mode: str | None


def _init_state() -> None:
    defaults: dict[str, object] = {
        LAST_QUERY: None, LAST_RESPONSE: None, LAST_ROUND_TRIP: 0.0, STORED_ID: None,
        BAD_ID: "", PICKER_PAGE: 0, SOURCE: "upload", CROP_X: (0, 100), CROP_Y: (0, 100),
    }
    for key, value in defaults.items():
        if key not in st.session_state:
            st.session_state[key] = value
    pending = st.session_state.pop(PENDING_ID, None)
    if pending is not None:
        _use_stored(int(pending))


def _use_stored(image_id: int) -> None:
    """Make the stored image `image_id` the query (callback of "More like this" and "Use")."""
    st.session_state[STORED_ID] = image_id
    st.session_state[SOURCE] = "stored"
    st.session_state[BAD_ID] = ""


def _clear_stored() -> None:
    st.session_state[STORED_ID] = None


def _use_typed_id() -> None:
    typed = str(st.session_state.get(STORED_ID_INPUT, "")).strip().lstrip("#")
    if not typed:
        return
    try:
        _use_stored(int(typed))
    except ValueError:
        st.session_state[BAD_ID] = typed


def _reset_crop() -> None:
    """A new query image starts uncropped."""
    st.session_state[CROP_X] = (0, 100)
    st.session_state[CROP_Y] = (0, 100)


def _turn_picker_page(step: int) -> None:
    st.session_state[PICKER_PAGE] = max(0, int(st.session_state[PICKER_PAGE]) + step)


def _crop_box() -> CropBox:
    x0, x1 = st.session_state[CROP_X]
    y0, y1 = st.session_state[CROP_Y]
    return (x0 / 100, y0 / 100, x1 / 100, y1 / 100)


def _image_query(image: bytes) -> Query | None:
    """The preview with the crop framed, the crop sliders; the (cropped) image to search."""
    preview_slot = st.empty()
    with st.expander("Crop the query", icon=":material/crop:"):
        st.slider("Horizontal extent (%)", 0, 100, key=CROP_X,
                  help="The part of the image, from left to right, to search with.")
        st.slider("Vertical extent (%)", 0, 100, key=CROP_Y,
                  help="The part of the image, from top to bottom, to search with.")
        st.button("Reset crop", key="crop_reset", icon=":material/crop_free:",
                  on_click=_reset_crop)
    box = _crop_box()
    whole = box == FULL_CROP
    preview = (downsized(image, QUERY_PREVIEW_PX) if whole
               else outlined(image, QUERY_PREVIEW_PX, box))
    if preview is not None:
        preview_slot.image(preview, width="stretch")
    if whole:
        return Query(image=image)
    left, top, right, bottom = box
    if min(right - left, bottom - top) * 100 < MIN_CROP_PERCENT:
        st.warning(f"The crop is too small to search with: make it at least "
                   f"{MIN_CROP_PERCENT}% wide and high.", icon=":material/crop:")
        return None
    st.caption(f":material/crop: Searching the framed region "
               f"({(right - left) * 100:.0f}% × {(bottom - top) * 100:.0f}% of the image).")
    # An image PIL cannot read goes as it is: the server says what is wrong with it.
    return Query(image=cropped(image, box) or image)


def _stored_card(client: LookalikeClient, image_id: int) -> Query | None:
    """The stored query image, as a card with its id; None (after saying why) if not there."""
    try:
        found = client.get([image_id], include_thumbnails=True, include_originals=True)
    except ClientError as exc:
        show_error(client, exc, "lookup")
        return None
    if not found.images:
        st.warning(f"No stored image has id #{image_id}.", icon=":material/search_off:")
        st.button("Pick another", key="stored_clear", icon=":material/swap_horiz:",
                  on_click=_clear_stored)
        return None
    hit = found.images[0]
    with st.container(border=True, key="stored_query"):
        # The original where the server sends it (sharper), else the stored thumbnail.
        preview = downsized(hit.image or hit.thumbnail, QUERY_PREVIEW_PX)
        if preview is not None:
            st.image(preview, width="stretch", link=hit.image_url or None)
        st.markdown(f"**Stored image #{hit.id}**")
        st.caption(_hit_caption(hit))
        st.button("Pick another", key="stored_clear", icon=":material/swap_horiz:",
                  on_click=_clear_stored, width="stretch")
    return Query(image_id=hit.id)


def _picker(client: LookalikeClient) -> None:
    """A small paginated gallery of the collection, each image with a "Use" button."""
    page_index = int(st.session_state[PICKER_PAGE])
    try:
        page = client.list_images(offset=page_index * PICKER_PAGE_SIZE, limit=PICKER_PAGE_SIZE,
                                  include_thumbnails=True)
    except ClientError as exc:
        show_error(client, exc, "listing")
        return
    pages = max(1, math.ceil(page.total / PICKER_PAGE_SIZE))
    if page.total == 0:
        st.caption("The collection is empty: ingest images on the Ingest page first.")
        return
    for start in range(0, len(page.images), PICKER_COLUMNS):
        row = page.images[start:start + PICKER_COLUMNS]
        for column, hit in zip(st.columns(PICKER_COLUMNS), row, strict=False):
            with column, st.container(key=f"pick_card_{hit.id}", gap="xsmall"):
                thumbnail = tile(hit.thumbnail, PICKER_TILE_PX) if hit.thumbnail else None
                if thumbnail is not None:
                    st.image(thumbnail, width="stretch")
                st.button("Use", key=f"pick_{hit.id}", on_click=_use_stored, args=(hit.id,),
                          width="stretch", help=_hit_caption(hit))
    with st.container(horizontal=True, vertical_alignment="center"):
        st.button("", key="pick_prev", icon=":material/chevron_left:", help="Previous page",
                  disabled=page_index == 0, on_click=_turn_picker_page, args=(-1,))
        st.caption(f"Page {min(page_index + 1, pages)} of {pages}")
        st.button("", key="pick_next", icon=":material/chevron_right:", help="Next page",
                  disabled=page_index + 1 >= pages, on_click=_turn_picker_page, args=(1,))


def _stored_query(client: LookalikeClient) -> Query | None:
    """The chosen stored image; until there is one, a gallery to pick from and an id field."""
    image_id = st.session_state[STORED_ID]
    if image_id is not None:
        return _stored_card(client, int(image_id))
    with st.container(border=True, key="stored_picker"):
        st.markdown(":material/photo_library: **Pick a stored image**")
        _picker(client)
        st.text_input("Or enter an image id", key=STORED_ID_INPUT, placeholder="e.g. 1234567890",
                      on_change=_use_typed_id)
        if st.session_state[BAD_ID]:
            st.warning(f"“{markdown_text(st.session_state[BAD_ID])}” is not an image id: ids "
                       "are whole numbers.", icon=":material/pin:")
    return None


def _source() -> str:
    """Where the query comes from: upload, camera or stored."""
    source = st.segmented_control("Search with", SOURCES, format_func=SOURCE_NAMES.__getitem__,
                                  key=SOURCE, required=True)
    return str(source) if source in SOURCES else "upload"


def _query_panel(client: LookalikeClient, source: str) -> Query | None:
    """The chosen source's input; the query, once there is one."""
    if source == "stored":
        return _stored_query(client)
    if source == "camera":
        shot = st.camera_input("Take a photo", key="query_camera", on_change=_reset_crop)
        return _image_query(shot.getvalue()) if shot is not None else None
    upload = st.file_uploader("Query image", type=list(UPLOAD_TYPES), key="query_image",
                              on_change=_reset_crop)
    return _image_query(upload.getvalue()) if upload is not None else None


def _label_filter(client: LookalikeClient) -> tuple[str, ...]:
    try:
        counts = label_counts(client.config)
    except ClientError as exc:
        st.caption(f":material/warning: Labels are unavailable: "
                   f"{markdown_text(exc.message or exc.code.name)}")
        return ()
    options = sorted(label for label in counts if label)
    chosen = st.multiselect(
        "Labels", options, key="labels", placeholder="Any label",
        format_func=lambda label: f"{label} ({counts.get(label, 0)})",
        help="Only images with one of these labels.",
    )
    return tuple(label for label in chosen if label in counts)


def _options(client: LookalikeClient) -> Options:
    """The filters and search options, in one collapsed expander."""
    with st.expander("Filters and options", icon=":material/tune:"):
        top_k = st.slider("Number of results", 1, TOP_K_MAX, TOP_K_DEFAULT, key="top_k")
        labels = _label_filter(client)
        tags = st.text_input("Tags", key="tags", placeholder="e.g. beach, sunset",
                             help="Only images carrying every one of these comma-separated tags.")
        bounded = st.toggle("Minimum score", key="use_min_score",
                            help="Only results more similar than this (cosine similarity).")
        min_score = st.slider("Score above", 0.0, 1.0, 0.5, 0.01, key="min_score",
                              disabled=not bounded, label_visibility="collapsed")
        mode = st.selectbox(
            "Search mode", MODES, key="mode", format_func=MODE_NAMES.__getitem__,
            help="How the server searches its vectors; hash and routed modes need a collection "
                 "built for them.",
        )
        filter_expr = st.text_input(
            "Filter expression (advanced)", key="filter_expr", placeholder=FILTER_EXAMPLE,
            help=f"A Milvus expression over stored fields, e.g. `{FILTER_EXAMPLE}`.",
        )
    return Options(
        top_k=int(top_k), filter_expr=filter_expr.strip(), labels=labels,
        tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
        min_score=float(min_score) if bounded else None,
        mode=None if mode == "default" else str(mode),
    )


def _search(client: LookalikeClient, query: Query,
            options: Options) -> tuple[SearchResponse, float] | None:
    """The response and its round trip (ms), from session state when nothing changed."""
    asked = (query.key, options)
    if st.session_state[LAST_QUERY] == asked:
        response: SearchResponse = st.session_state[LAST_RESPONSE]
        return response, float(st.session_state[LAST_ROUND_TRIP])
    try:
        with st.spinner("Searching…"):
            started = time.perf_counter()
            response = client.search(
                image=query.image, image_id=query.image_id, top_k=options.top_k,
                filter_expr=options.filter_expr, labels=options.labels, tags=options.tags,
                min_score=options.min_score, mode=options.mode, include_thumbnails=True,
            )
            round_trip_ms = (time.perf_counter() - started) * 1000
    except ClientError as exc:
        show_error(client, exc)
        if exc.unreachable:
            forget_client(client)
            # Failures are not remembered, so the rerun this button triggers searches again.
            st.button("Try again", key="retry_search", icon=":material/refresh:")
        return None
    st.session_state[LAST_QUERY] = asked
    st.session_state[LAST_RESPONSE] = response
    st.session_state[LAST_ROUND_TRIP] = round_trip_ms
    return response, round_trip_ms


def _hit_caption(hit: Hit) -> str:
    label = f"{markdown_text(hit.label)} · " if hit.label else ""
    return f"{label}{markdown_text(source_name(hit.source))}"


def _render_hit(rank: int, hit: Hit) -> None:
    # The inner container holds only what describes the hit, so its text reads
    # "#rank · score s  label · name" (the browser test parses it); the button sits below.
    with st.container(border=True, key=f"card_{rank}"):
        with st.container(key=f"hit_{rank}"):
            thumbnail = tile(hit.thumbnail, RESULT_TILE_PX) if hit.thumbnail else None
            link = hit.image_url or None
            if thumbnail is not None:
                st.image(thumbnail, width="stretch", link=link)
            elif hit.thumbnail_url:
                st.image(hit.thumbnail_url, width="stretch", link=link)
            else:
                st.caption("No preview")
            st.markdown(f"**#{rank}** · score {hit.score:.3f}")
            st.caption(_hit_caption(hit))
        st.button("More like this", key=f"more_{rank}", icon=":material/manage_search:",
                  on_click=_use_stored, args=(hit.id,), type="tertiary",
                  help=f"Search with stored image #{hit.id}")


def _render_results(response: SearchResponse, round_trip_ms: float) -> None:
    hits = response.hits
    st.subheader(f"{len(hits)} similar image{'s' if len(hits) != 1 else ''}")
    st.caption(
        f"Found in {response.took_ms:.0f} ms on the server ({round_trip_ms:.0f} ms round trip) "
        f"· collection {markdown_text(response.collection)}"
    )
    if not hits:
        st.info("No stored image matches this query and these filters.",
                icon=":material/filter_alt_off:")
        return
    for start in range(0, len(hits), GRID_COLUMNS):
        row = hits[start:start + GRID_COLUMNS]
        for column, (rank, hit) in zip(
            st.columns(GRID_COLUMNS), enumerate(row, start=start + 1), strict=False
        ):
            with column:
                _render_hit(rank, hit)


def render() -> None:
    """The whole page: the query and options on the left, the results on the right."""
    _init_state()
    st.title("Search")
    st.caption("Find lookalikes: upload a photo, take one, or start from a stored image, and "
               "see the most similar pictures in the collection.")
    client = page_client()
    if client is None:
        return
    sidebar_status(client)

    source = _source()
    query_column, results_column = st.columns([2, 5], gap="large")
    with query_column:
        query = _query_panel(client, source)
        options = _options(client)
    with results_column:
        if query is None:
            st.info(SOURCE_HINTS[source], icon=":material/image_search:")
            return
        outcome = _search(client, query, options)
        if outcome is not None:
            _render_results(*outcome)


render()
