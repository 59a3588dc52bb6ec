"""Lookalike: search by image."""

__version__ = "0.1.0"
