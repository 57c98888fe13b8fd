"""cellkit: blood-smear analysis — detection, hierarchical classification, explanations.

The public API is the names in ``__all__``; heavy modules (torch, ultralytics) load on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from cellkit.errors import CellkitError
from cellkit.taxonomy import Taxonomy, load_taxonomy
from cellkit.types import Detections, Heatmap, Prediction

__version__ = "0.1.0"

_LAZY = {
    "read_image": "cellkit.io",
    "iter_images": "cellkit.io",
    "crop_box": "cellkit.crops",
    "ModelSpec": "cellkit.models",
    "load_spec": "cellkit.models",
    "list_specs": "cellkit.models",
    "Classifier": "cellkit.classify",
    "load_classifier": "cellkit.classify",
    "Detector": "cellkit.detect",
    "load_detector": "cellkit.detect",
    "analyze": "cellkit.slide",
    "SlideResult": "cellkit.slide",
    "explain": "cellkit.explain",
    "EXPLAINERS": "cellkit.explain",
    "read_dataset": "cellkit.data",
    "dataset_stats": "cellkit.stats",
    "Store": "cellkit.store",
}

__all__ = ["CellkitError", "Detections", "Heatmap", "Prediction", "Taxonomy", "load_taxonomy", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cellkit' has no attribute {name!r}")
