"""Benchmark, evaluation and screenshot runners; measurement code kept apart from the product."""
