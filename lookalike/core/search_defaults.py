"""The one default and bound of each search option that the layers share: the client, the CLI
and the service edge take them from here; below the edge the options are trusted."""

from __future__ import annotations

# Results per query when the caller does not say (proto3 sends 0 for "not set").
DEFAULT_TOP_K = 10
# As RetrievalSettings.qe_n allows: more neighbours only dilute the query.
MAX_QE_N = 100
