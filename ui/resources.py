"""The one place with st.cache_resource / st.cache_data: models, store, dataset indexes.

A cached model is shared by every browser session; cellkit never leaves hooks or mutable state
on it (explainers take a lock and remove their hooks in a ``with`` block).
"""

from __future__ import annotations

from contextlib import contextmanager

import streamlit as st

from cellkit import config
from cellkit.errors import CellkitError


@contextmanager
def user_errors():
    """Turn a CellkitError raised inside the block into st.error (no traceback for users).

    Messages often hold user-supplied names (files, zip members, folders, model names): shown as plain text.
    """
    from ui.widgets import error

    try:
        yield
    except CellkitError as exc:
        error(exc)
        st.stop()


@st.cache_resource(show_spinner="Loading the classifier…")
def classifier(name: str | None = None):
    from cellkit.classify import load_classifier

    return load_classifier(name)


def current_classifier():
    """The classifier chosen in the sidebar's model picker (the default one until a user picks another).

    Always cached under the model's own name, so the default model is loaded once, however it is asked for.
    """
    name = st.session_state.get("classifier_name")
    if not name:
        from cellkit.models import default_spec

        name = default_spec("classifier").name  # a CellkitError here is the page's to show
    return classifier(name)


@st.cache_resource(show_spinner="Loading the red-cell model…")
def red_cell_classifier():
    """The bundled red-cell morphology model, or None when there is none (red cells are then only counted)."""
    from cellkit.pipeline import default_red_cell_spec

    spec = default_red_cell_spec()
    return classifier(spec.name) if spec is not None else None


@st.cache_resource(show_spinner="Loading the detector…")
def detector(name: str | None = None):
    from cellkit.detect import load_detector

    return load_detector(name)


def store():
    """The analyses database (cached once opened). Raises CellkitError when it cannot be opened; the pages
    catch it around every store call, so a busy or missing database never loses an analysis."""
    from cellkit import config

    try:
        url = config.db_url()  # creates CELLKIT_HOME for the default SQLite file
    except OSError as exc:
        raise CellkitError(
            f"cannot use the cellkit folder {config.home()} for the database ({exc.strerror or exc}); "
            "set CELLKIT_HOME or CELLKIT_DB_URL"
        ) from None
    return _store(url)


@st.cache_resource
def _store(url: str):
    from cellkit.store import Store

    return Store(url)


# ---- dataset page (owner: dataset statistics) ------------------------------------------------
@st.cache_data(show_spinner="Looking for datasets…", ttl=60, max_entries=8)
def dataset_list(path: str) -> list:
    """Datasets in a folder (itself, or its sub-folders when it is a root like ../shared/data)."""
    from cellkit.data import list_datasets, resolve_dataset

    with config.confined_to_data_roots():  # the browser follows no link out of the data folders
        found = list_datasets(path)
        if not found:
            resolve_dataset(path)  # raises the precise error: empty folder, no images, ...
    return found


def dataset_index(path: str, dataset: str | None, taxonomy: str):
    """The cached index of a dataset; the first time, decode it under a progress bar (kept on disk)."""
    from cellkit.dataset_index import index_dataset, pending_images
    from cellkit.limits import heavy_job

    with config.confined_to_data_roots():
        pending = pending_images(path, dataset=dataset)
        if pending:
            bar = st.progress(0.0, text=f"Indexing {pending} images (first time only; cached on disk)…")

            def tick(done: int, total: int) -> None:
                bar.progress(done / total, text=f"Indexing images: {done}/{total}")

            with heavy_job(waiting=st.spinner):  # indexing decodes every image: one heavy-job slot
                index_dataset(path, taxonomy, dataset=dataset, progress=tick)
            bar.empty()
            _dataset_index.clear()
    return _dataset_index(path, dataset, taxonomy)


@st.cache_data(show_spinner="Reading the dataset index…", ttl=3600, max_entries=4)
def _dataset_index(path: str, dataset: str | None, taxonomy: str):
    from cellkit.dataset_index import index_dataset

    with config.confined_to_data_roots():
        return index_dataset(path, taxonomy, dataset=dataset)


@st.cache_data(show_spinner="Comparing perceptual hashes…", ttl=3600, max_entries=8)
def dataset_duplicates(path: str, dataset: str | None, taxonomy: str, threshold: int):
    from cellkit.stats import duplicates

    return duplicates(_dataset_index(path, dataset, taxonomy).images, threshold=threshold)


@st.cache_data(show_spinner="Composing the mosaic…", ttl=3600, max_entries=8)
def dataset_mosaic(path: str, dataset: str | None, taxonomy: str, per_group: int, seed: int):
    from cellkit.stats import mosaic

    return mosaic(_dataset_index(path, dataset, taxonomy), per_group=per_group, seed=seed)


# ---- explain page and misclassification explorer (owner: explainability) ----------------------
# ``model_key`` is the chosen classifier's name ("" = the default); it also keys the cache, so maps of
# one model are never served for another.
@st.cache_data(show_spinner=False, max_entries=256)
def explanation(crop, node: str, method: str, model_key: str = "", faithfulness: bool = True):
    """A Heatmap of one crop for one node and method (cached: sliders and reruns cost nothing)."""
    from cellkit.explain import explain

    return explain(classifier(model_key or None), crop, node, method, with_faithfulness=faithfulness)


@st.cache_data(show_spinner=False, max_entries=64)
def explanation_reference(crop, node: str, model_key: str = "") -> dict:
    """Deletion/insertion AUCs of a random pixel order: the level a map has to beat."""
    from cellkit.explain import random_reference

    return random_reference(classifier(model_key or None), crop, node)


@st.cache_data(show_spinner="Running the model on the folder…", max_entries=8, ttl=3600)
def folder_predictions(folder: str, limit: int, model_key: str = "", test_split: bool = True):
    """Predictions table of a labelled folder (see cellkit.errors_explorer.evaluate_folder)."""
    from cellkit.errors_explorer import evaluate_folder

    with config.confined_to_data_roots():
        return evaluate_folder(classifier(model_key or None), folder, limit=limit, test_split=test_split)
