"""Retrieval evaluation on labelled datasets, through the real ingestion and search paths."""
