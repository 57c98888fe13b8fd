"""cellkit: blood-smear analysis — detection, hierarchical classification, explanations.

The public API is the names in ``__all__``: functions and types, and the modules ``config`` (settings),
``stats`` and ``plots`` (dataset statistics and their figures) and ``batch`` (batch jobs). The app's pages
import only these (a ruff rule, TID251 in pyproject.toml, forbids deeper imports there). Heavy modules
(torch, ultralytics) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from cellkit.errors import CellkitError
from cellkit.taxonomy import (
    DEFAULT_DATASET,
    DEFAULT_TAXONOMY,
    UNKNOWN,
    UNKNOWN_NAME,
    Taxonomy,
    list_taxonomies,
    load_taxonomy,
)
from cellkit.types import Detections, Heatmap, Prediction

__version__ = "0.1.0"

_LAZY = {
    # images
    "read_image": "cellkit.io",
    "printable": "cellkit.io",
    "iter_images": "cellkit.io",
    "iter_zip": "cellkit.io",
    "ImageItem": "cellkit.io",
    "PixelBudget": "cellkit.io",
    "IMAGE_SUFFIXES": "cellkit.io",
    "crop_box": "cellkit.crops",
    "make_demo_smear": "cellkit.synth",
    # models
    "ModelSpec": "cellkit.models",
    "load_spec": "cellkit.models",
    "list_specs": "cellkit.models",
    "default_spec": "cellkit.models",
    "machine_default": "cellkit.models",
    "default_names": "cellkit.models",
    "set_machine_default": "cellkit.models",
    "Classifier": "cellkit.classify",
    "load_classifier": "cellkit.classify",
    "prediction_row": "cellkit.results_table",
    "result_columns": "cellkit.results_table",
    "readable_results": "cellkit.results_table",
    "Detector": "cellkit.detect",
    "load_detector": "cellkit.detect",
    "load_comparison": "cellkit.evaluate",
    "classifier_comparison": "cellkit.evaluate",
    "red_cell_comparison": "cellkit.evaluate",
    # slides
    "analyze": "cellkit.slide",
    "SlideResult": "cellkit.slide",
    "review_zip": "cellkit.slide",
    "image_sha256": "cellkit.slide",
    "check_field": "cellkit.slide",
    "red_cell_findings": "cellkit.rbc_grading",
    "scale_warning": "cellkit.rbc_grading",
    "field_scale_warning": "cellkit.scale",
    # explanations
    "explain": "cellkit.explain",
    "EXPLAINERS": "cellkit.explain",
    "METHOD_NAMES": "cellkit.explain",
    "get_explainer": "cellkit.explain",
    "sanity_check": "cellkit.explain",
    "COLORMAPS": "cellkit.explain.render",
    "maps_zip": "cellkit.explain.render",
    "overlay": "cellkit.explain.render",
    # data, storage, serving
    "read_dataset": "cellkit.data",
    "dataset_stats": "cellkit.stats",
    "model_data_table": "cellkit.model_data",
    "model_data_notes": "cellkit.model_data",
    "model_split_table": "cellkit.model_data",
    "Store": "cellkit.store",
    "StoreError": "cellkit.store",
    "heavy_job": "cellkit.limits",
    # cases and reports
    "case_summary": "cellkit.case",
    "case_display": "cellkit.case",
    "case_thumbnails": "cellkit.case",
    "history_lines": "cellkit.case",
    "DEFAULT_TARGET_WBC": "cellkit.case",
    "case_pdf": "cellkit.report_pdf",
    # review
    "add_cell": "cellkit.review",
    "undo_point": "cellkit.review",
    "undo_step": "cellkit.review",
    "REJECTIONS": "cellkit.taxonomy",
    # words
    "count": "cellkit.words",
    "verb": "cellkit.words",
}
_MODULES = ("config", "stats", "plots", "batch")

__all__ = [
    "count",
    "verb",
    "DEFAULT_DATASET",
    "DEFAULT_TAXONOMY",
    "UNKNOWN",
    "UNKNOWN_NAME",
    "CellkitError",
    "Detections",
    "Heatmap",
    "Prediction",
    "Taxonomy",
    "list_taxonomies",
    "load_taxonomy",
    *_LAZY,
    *_MODULES,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"cellkit.{name}")
    else:
        raise AttributeError(f"module 'cellkit' has no attribute {name!r}")
    globals()[name] = value
    return value
