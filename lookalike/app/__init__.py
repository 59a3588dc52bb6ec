"""Composition and workflows: the settings wired into components, and each workflow (ingest,
evaluate, train and register, roll out) written once for the CLI and the server's jobs."""
