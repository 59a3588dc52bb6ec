"""Fine-tuning on a labelled folder: split, train, curves, and the held-out comparison."""
