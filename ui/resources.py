"""The one place with st.cache_resource / st.cache_data: models, store, dataset indexes.

A cached model is shared by every browser session; cellkit never leaves hooks or mutable state
on it (explainers take a lock and remove their hooks in a ``with`` block).
"""

from __future__ import annotations

from contextlib import contextmanager

import streamlit as st

from cellkit.errors import CellkitError


@contextmanager
def user_errors():
    """Turn a CellkitError raised inside the block into st.error (no traceback for users)."""
    try:
        yield
    except CellkitError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()


@st.cache_resource(show_spinner="Loading the classifier…")
def classifier(name: str | None = None):
    from cellkit.classify import load_classifier

    return load_classifier(name)


@st.cache_resource(show_spinner="Loading the detector…")
def detector(name: str | None = None):
    from cellkit.detect import load_detector

    return load_detector(name)


@st.cache_resource
def store():
    from cellkit.store import Store

    from cellkit import config

    return Store(config.db_url())
