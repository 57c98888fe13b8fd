"""Fixtures for page tests: run from the repo root with a tiny untrained classifier in the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_classifier(monkeypatch):
    """Pages get ``build_tiny_classifier()`` instead of the bundled weights; caches are cleared around the test."""
    import cellkit.classify

    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    from _fakes import tiny_classifier_for

    monkeypatch.setattr(cellkit.classify, "load_classifier", tiny_classifier_for)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def unsure_classifier(monkeypatch):
    """A tiny classifier whose near-uniform answers fall under the 'unsure' rule: every cell goes to review."""
    import cellkit.classify

    def load(name=None):
        clf = cellkit.classify.build_tiny_classifier()
        clf.spec.ood = {"min_group_prob": 0.99}
        return clf

    monkeypatch.setattr(cellkit.classify, "load_classifier", load)
