"""AppTest of the entry point (navigation) and of the Home page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from cellkit.models import ModelSpec
from tests.app._markdown import visible

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    """Pages import ``ui`` from the repo root, as under ``streamlit run app.py``."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT))


@pytest.fixture
def empty_weights(tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(folder))
    return folder


def test_entry_runs_home_by_default(empty_weights):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "cellkit"
    assert any("runs locally" in c.value for c in at.sidebar.caption)


def test_home_renders_with_empty_weights_folder(empty_weights, monkeypatch, tmp_path):
    monkeypatch.setenv("CELLKIT_DATA_DIR", str(tmp_path / "no-such-folder"))
    at = AppTest.from_file(str(ROOT / "app_pages/home.py"), default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "cellkit"
    assert len(at.info) == 1 and "No trained models" in at.info[0].value
    assert not at.dataframe  # no model table without models
    assert any(str(tmp_path / "no-such-folder") in m.value for m in at.markdown)
    assert any("not found" in c.value for c in at.caption)
    assert any("never leave this machine" in c.value for c in at.caption)
    assert any(re.search(r"^\d+ stored analyses \(\d+ of yours\)$", c.value) for c in at.caption)


def test_home_lists_installed_models_and_masks_db_password(empty_weights, monkeypatch):
    (empty_weights / "tiny.pt").write_bytes(b"not really weights, only hashed")
    report = {"leaf": {"macro_f1": 0.9312}, "pbc8": {"macro_f1": 0.9812}, "calibration": {"ece_leaf": 0.0213}}
    card = {"default": True, "metrics_test": {**report, "note": "text ignored"}}
    spec = ModelSpec("tiny", "classifier", "resnet18", "tiny.pt", 224, ["a", "b"], card=card)
    spec.save(empty_weights)
    (empty_weights / "broken.json").write_text("{not json")  # unreadable cards are skipped, not fatal
    monkeypatch.setenv("CELLKIT_DB_URL", "postgresql://lab:s3cret@db.example:5432/cells")
    at = AppTest.from_file(str(ROOT / "app_pages/home.py"), default_timeout=60).run()
    assert not at.exception
    assert not at.info
    table = at.dataframe[0].value  # for people: name, what it does, key results
    assert list(table["Model"]) == ["tiny ★"] and table["Finds or names"][0] == "2 cell types"
    assert table["Key results"][0] == "macro-F1 8 classes 0.981, macro-F1 leaves 0.931, ECE 0.0213"
    assert not any("_" in c or c == "sha256" for c in table.columns)
    technical = at.dataframe[1].value  # behind the "Technical details" expander
    assert technical["input"][0] == "224 px" and len(technical["sha256"][0]) == 12
    text = " ".join(m.value for m in [*at.markdown, *at.caption])
    assert "s3cret" not in text and "postgresql://lab:***@db.example:5432/cells" in text


def test_home_says_when_cellkit_home_cannot_hold_the_database(empty_weights, monkeypatch, tmp_path):
    (tmp_path / "afile").write_text("a file where a folder should be")
    monkeypatch.setenv("CELLKIT_HOME", str(tmp_path / "afile" / "home"))
    monkeypatch.delenv("CELLKIT_DB_URL", raising=False)
    at = AppTest.from_file(str(ROOT / "app_pages/home.py"), default_timeout=60).run()
    assert not at.exception
    assert any(c.value.startswith(":orange[no database:]") and "CELLKIT" in c.value for c in at.caption)


@pytest.fixture
def upload_option():
    """Streamlit's config is process-wide: put server.maxUploadSize back after the test."""
    from streamlit import config as st_config

    before = st_config.get_option("server.maxUploadSize")
    yield st_config
    st_config.set_option("server.maxUploadSize", before)


def test_upload_limit_follows_cellkit_max_upload_mb(empty_weights, monkeypatch, upload_option):
    monkeypatch.setenv("CELLKIT_MAX_UPLOAD_MB", "3")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert upload_option.get_option("server.maxUploadSize") == 3  # the upload endpoint reads it per request


def test_bad_upload_limit_is_one_clear_error(empty_weights, monkeypatch, upload_option):
    monkeypatch.setenv("CELLKIT_MAX_UPLOAD_MB", "lots")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1 and "CELLKIT_MAX_UPLOAD_MB must be" in visible(at.error[0].value)


def test_a_session_keeps_its_last_images_within_a_pixel_budget():
    import numpy as np

    from ui.widgets import keep_images

    images = {f"im{i}": np.zeros((100, 100 * (i + 1), 3), np.uint8) for i in range(4)}  # 10k, 20k, 30k, 40k px
    keep_images(images, max_pixels=75_000)
    assert list(images) == ["im2", "im3"]  # the oldest go first, until the rest fit
    keep_images(images, max_pixels=10)
    assert list(images) == ["im3"]  # the newest stays, even alone over the budget
    many = {i: np.zeros((2, 2, 3), np.uint8) for i in range(9)}
    keep_images(many, max_pixels=10**9, most=5)
    assert list(many) == [4, 5, 6, 7, 8]


def test_shared_deployment_asks_to_sign_in_before_any_page(monkeypatch):
    """With [auth] configured (st.login, OIDC), nothing is shown until the user signs in."""
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.secrets["auth"] = {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "x" * 32,
        "client_id": "cellkit",
        "client_secret": "s",
        "server_metadata_url": "http://idp/.well-known",
    }
    at.run()
    assert not at.exception
    assert any(b.label == "Sign in" for b in at.button)
    assert any("sign in to see your own analyses" in i.value for i in at.info)
    assert not at.dataframe and not at.metric  # no page ran


def test_single_user_mode_needs_no_sign_in(monkeypatch):
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception and not any(b.label == "Sign in" for b in at.button)


def test_every_model_is_loaded_once_per_server(monkeypatch):
    """The detector lost its cache once (a function inserted between it and its decorator): reloaded every rerun."""
    import streamlit as st

    import cellkit.classify
    import cellkit.detect
    from ui import resources

    loads = []
    monkeypatch.setattr(cellkit.detect, "load_detector", lambda name=None: loads.append(("det", name)) or object())
    monkeypatch.setattr(cellkit.classify, "load_classifier", lambda name=None: loads.append(("clf", name)) or object())
    st.cache_resource.clear()
    try:
        assert resources.detector() is resources.detector()
        assert resources.classifier("x") is resources.classifier("x")
    finally:
        st.cache_resource.clear()
    assert loads == [("det", None), ("clf", "x")]
