"""Sources -> decode -> embed -> blob store + vector store."""
