"""Browse page: what the collection holds per label, a paginated gallery, one image in detail."""

from __future__ import annotations

import math

import streamlit as st

from lookalike.services.client import ClientError, Hit, LookalikeClient
from lookalike.ui.resources import (
    downsized,
    ingested_text,
    label_counts,
    label_text,
    markdown_text,
    page_client,
    show_error,
    sidebar_status,
    source_name,
    tile,
)

GRID_COLUMNS = 6
PAGE_SIZES = (12, 24, 48)
TILE_PX = 224
DETAIL_PX = 720
NEIGHBOURS = 6
NEIGHBOUR_COLUMNS = 6
INGEST_PAGE = "app_pages/ingest.py"
SEARCH_PAGE = "app_pages/search.py"

# Widget keys.
LABELS = "browse_labels"
PAGE_SIZE = "browse_page_size"
# The page of the gallery shown (0-based) and the image open in the detail view.
PAGE = "browse_page"
OPEN_ID = "browse_open_id"
# Search reads this key to start from a stored image (see app_pages/search.py).
SEARCH_PENDING_ID = "search_pending_id"


def _init_state() -> None:
    if PAGE not in st.session_state:
        st.session_state[PAGE] = 0
    if OPEN_ID not in st.session_state:
        st.session_state[OPEN_ID] = None


def _first_page() -> None:
    st.session_state[PAGE] = 0


def _turn_page(step: int) -> None:
    st.session_state[PAGE] = max(0, int(st.session_state[PAGE]) + step)


def _open(image_id: int | None) -> None:
    st.session_state[OPEN_ID] = image_id


def _render_counts(counts: dict[str, int]) -> None:
    """The collection's size and its images per label, as metrics, a bar chart and a table."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    total = sum(counts.values())
    with st.container(horizontal=True):
        st.metric("Images", f"{total:,}", border=True, icon=":material/image:")
        st.metric("Labels", len([label for label in counts if label]), border=True,
                  icon=":material/label:")
        largest, largest_count = ordered[0]
        st.metric(f"Largest label ({largest_count:,} images)", label_text(largest), border=True,
                  icon=":material/leaderboard:")
    table = {
        "Label": [label_text(label) for label, _ in ordered],
        "Images": [count for _, count in ordered],
    }
    chart_column, table_column = st.columns([2, 1], gap="medium")
    with chart_column:
        st.bar_chart(table, x="Label", y="Images", sort=False, height=280)
    with table_column:
        st.dataframe(
            table, hide_index=True, key="browse_counts",
            column_config={"Images": st.column_config.ProgressColumn(
                "Images", format="%d", min_value=0, max_value=max(counts.values()),
            )},
        )


def _card(hit: Hit, key: str, tile_px: int) -> None:
    """A square thumbnail, its label and file name, and an "Open" button."""
    with st.container(border=True, key=f"{key}_card_{hit.id}"):
        thumbnail = tile(hit.thumbnail, tile_px) if hit.thumbnail else None
        if thumbnail is not None:
            st.image(thumbnail, width="stretch")
        elif hit.thumbnail_url:
            st.image(hit.thumbnail_url, width="stretch")
        else:
            st.caption("No preview")
        label = f"{markdown_text(hit.label)} · " if hit.label else ""
        st.caption(f"{label}{markdown_text(source_name(hit.source))}")
        st.button("Open", key=f"{key}_{hit.id}", icon=":material/open_in_full:",
                  on_click=_open, args=(hit.id,), width="stretch")


def _grid(hits: list[Hit], key: str, columns: int, tile_px: int) -> None:
    for start in range(0, len(hits), columns):
        for column, hit in zip(st.columns(columns), hits[start:start + columns], strict=False):
            with column:
                _card(hit, key, tile_px)


def _metadata(hit: Hit) -> None:
    st.subheader(markdown_text(source_name(hit.source)) or f"Image #{hit.id}")
    st.table({
        "Field": ["Id", "Label", "Tags", "Source", "Size", "Ingested", "SHA-256"],
        "Value": [
            str(hit.id), label_text(hit.label), ", ".join(hit.tags) or "(none)", hit.source,
            f"{hit.width} × {hit.height} px", ingested_text(hit.ingested_at), hit.sha256,
        ],
    })
    with st.expander("Metadata (JSON)", icon=":material/data_object:"):
        st.json(hit.meta or {}, expanded=True)


def _neighbours(client: LookalikeClient, image_id: int) -> None:
    st.markdown("**Nearest neighbours**")
    try:
        response = client.search(image_id=image_id, top_k=NEIGHBOURS, include_thumbnails=True)
    except ClientError as exc:
        show_error(client, exc, "search for neighbours")
        return
    if not response.hits:
        st.caption("No other stored image to compare with.")
        return
    for start in range(0, len(response.hits), NEIGHBOUR_COLUMNS):
        row = response.hits[start:start + NEIGHBOUR_COLUMNS]
        for column, hit in zip(st.columns(NEIGHBOUR_COLUMNS), row, strict=False):
            with column:
                _card(hit, "neighbour", TILE_PX)
                st.caption(f"score {hit.score:.3f}")


def _detail(client: LookalikeClient, image_id: int) -> None:
    """One image large, its metadata, and its nearest neighbours, in a bordered panel."""
    try:
        found = client.get([image_id], include_thumbnails=True, include_originals=True)
    except ClientError as exc:
        show_error(client, exc, "lookup")
        return
    if not found.images:
        st.warning(f"Image #{image_id} is no longer stored.", icon=":material/search_off:")
        _open(None)
        return
    hit = found.images[0]
    with st.container(border=True, key="browse_detail"):
        with st.container(horizontal=True, horizontal_alignment="right"):
            if st.button("Find similar in Search", key="browse_search_similar",
                         icon=":material/manage_search:"):
                st.session_state[SEARCH_PENDING_ID] = hit.id
                st.switch_page(SEARCH_PAGE)
            st.button("Close", key="browse_close", icon=":material/close:",
                      on_click=_open, args=(None,))
        image_column, meta_column = st.columns([3, 2], gap="large")
        with image_column:
            large = downsized(hit.image, DETAIL_PX) if hit.image else None
            if large is None and hit.thumbnail:
                large = downsized(hit.thumbnail, DETAIL_PX)
            if large is not None:
                st.image(large, width="stretch", link=hit.image_url or None)
            else:
                st.caption("No preview")
        with meta_column:
            _metadata(hit)
        _neighbours(client, hit.id)


def _nav(page_index: int, pages: int, total: int) -> None:
    with st.container(horizontal=True, vertical_alignment="center", key="browse_nav"):
        st.button("Previous", key="browse_prev", icon=":material/chevron_left:",
                  disabled=page_index == 0, on_click=_turn_page, args=(-1,))
        st.markdown(f"Page **{page_index + 1}** of **{pages}** · {total:,} images")
        st.button("Next", key="browse_next", icon=":material/chevron_right:",
                  icon_position="right", disabled=page_index + 1 >= pages,
                  on_click=_turn_page, args=(1,))


def render() -> None:
    """The whole page: counts per label, the label filter, the detail view and the gallery."""
    _init_state()
    st.title("Browse")
    st.caption("What the collection holds: images per label, every image page by page, and any "
               "one in detail with its nearest neighbours.")
    client = page_client()
    if client is None:
        return
    sidebar_status(client)
    try:
        counts = label_counts(client.config)
    except ClientError as exc:
        show_error(client, exc, "listing")
        return
    if sum(counts.values()) == 0:
        st.info("The collection is empty. Add images on the Ingest page, then come back here.",
                icon=":material/photo_library:")
        st.page_link(INGEST_PAGE, label="Go to Ingest", icon=":material/upload:")
        return
    _render_counts(counts)

    with st.container(horizontal=True, vertical_alignment="bottom"):
        chosen = st.multiselect(
            "Labels", sorted(counts), key=LABELS, placeholder="All labels",
            format_func=lambda label: f"{label_text(label)} ({counts.get(label, 0)})",
            on_change=_first_page, width=480,
        )
        page_size = st.selectbox("Per page", PAGE_SIZES, key=PAGE_SIZE, on_change=_first_page,
                                 width=120)
    labels = [label for label in chosen if label in counts]
    # Asking for a page past the end (after images were deleted) falls back to the last one.
    page_index = int(st.session_state[PAGE])
    try:
        page = client.list_images(offset=page_index * page_size, limit=page_size, labels=labels,
                                  include_thumbnails=True)
        pages = max(1, math.ceil(page.total / page_size))
        if page_index >= pages:
            page_index = pages - 1
            st.session_state[PAGE] = page_index
            page = client.list_images(offset=page_index * page_size, limit=page_size,
                                      labels=labels, include_thumbnails=True)
    except ClientError as exc:
        show_error(client, exc, "listing")
        return

    open_id = st.session_state[OPEN_ID]
    if open_id is not None:
        _detail(client, int(open_id))
    _nav(page_index, pages, page.total)
    if not page.images:
        st.info("No stored image has these labels.", icon=":material/filter_alt_off:")
        return
    _grid(page.images, "open", GRID_COLUMNS, TILE_PX)


render()
