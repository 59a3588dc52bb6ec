"""Settings, schemas, errors, stores and metrics: no torch, grpc or streamlit here."""
