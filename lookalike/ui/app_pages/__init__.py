"""One module per page of the Streamlit UI."""
