"""cellkit dashboard entry point: page config and navigation. Run: streamlit run app.py"""

from __future__ import annotations

import streamlit as st

import cellkit
from ui import resources, widgets

st.set_page_config(page_title="cellkit — blood smear analysis", page_icon="🩸", layout="wide")
widgets.login_gate()  # shared deployments: st.login when [auth] is configured; else single-user mode
with resources.user_errors():  # CELLKIT_MAX_UPLOAD_MB is the one upload setting: the server's cap follows it
    widgets.apply_upload_limit()

pages = st.navigation(
    {
        "": [st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True)],
        "Analyse": [
            st.Page("app_pages/slide.py", title="Slide analysis", icon=":material/biotech:", url_path="slide"),
            st.Page("app_pages/classify.py", title="Classify crops", icon=":material/category:", url_path="classify"),
            st.Page("app_pages/explain.py", title="Explain", icon=":material/visibility:", url_path="explain"),
        ],
        "Data & models": [
            st.Page("app_pages/dataset.py", title="Dataset", icon=":material/dataset:", url_path="dataset"),
            st.Page("app_pages/models.py", title="Models", icon=":material/leaderboard:", url_path="models"),
        ],
    }
)
widgets.model_picker_ui()
widgets.reviewer_ui()
st.sidebar.caption(f"cellkit {cellkit.__version__} · runs locally, nothing leaves this machine")
pages.run()
