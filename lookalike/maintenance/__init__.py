"""Collection upkeep: re-indexing, whitening, hash codes, DBA, near-duplicates and deletes."""
