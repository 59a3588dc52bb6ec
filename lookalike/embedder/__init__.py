"""Image bytes to L2-normalised global descriptors. Imports nothing else from this repository."""
