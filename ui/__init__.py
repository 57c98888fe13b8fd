"""UI glue for the Streamlit pages: cached resources and small widget helpers (no logic)."""
