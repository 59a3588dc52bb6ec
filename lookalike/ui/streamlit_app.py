"""The UI's entry file: a router over the pages in `app_pages/` and nothing else."""

from __future__ import annotations

import streamlit as st

st.set_page_config(page_title="Lookalike", page_icon=":material/image_search:", layout="wide")
# People using the product see no developer items (Deploy, Rerun) in the toolbar.
st.set_option("client.toolbarMode", "viewer")
st.navigation({
    "Find images": [
        st.Page("app_pages/search.py", title="Search", icon=":material/image_search:",
                default=True),
        st.Page("app_pages/browse.py", title="Browse", icon=":material/photo_library:"),
    ],
    "Operate": [
        st.Page("app_pages/ingest.py", title="Ingest", icon=":material/upload:"),
        st.Page("app_pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
        st.Page("app_pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("app_pages/admin.py", title="Admin", icon=":material/admin_panel_settings:"),
    ],
}).run()
