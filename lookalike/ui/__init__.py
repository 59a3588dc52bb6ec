"""The Streamlit UI; it reaches the platform only through `lookalike.services.client`."""
