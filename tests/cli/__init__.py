"""Tests of the `lookalike` command line as a whole: parsing, start-up, forwarding."""
