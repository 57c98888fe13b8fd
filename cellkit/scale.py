"""Is a smear at a magnification the models know? One measure: the median side of its red-cell boxes.

Two rules use it: the detector's (:func:`field_scale_warning`: counts and differential of a field at a
magnification outside the detector's training range are unreliable) and the red-cell model's
(:func:`cellkit.rbc_grading.scale_warning`: its forms, against the smears it was trained on).
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_RED_CELLS = 5  # fewer red-cell boxes give no median worth trusting: no warning either way
DETECTOR_MARGIN = 1.2  # the detector's training range (its sources' 5th-95th percentiles) widened by this, each way


def red_cell_side(result: Any) -> float | None:
    """Median side (the longer of width and height) of a result's red-cell boxes in pixels, or None if too few."""
    boxes = result.detections.xyxy[result.detections.class_name == "rbc"]
    if len(boxes) < MIN_RED_CELLS:
        return None
    return float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))


def field_scale_warning(result: Any, detector_spec: Any) -> str:
    """Why the counts of ``result`` should not be trusted, or "": its red cells against the sizes the detector
    was trained on (``card["reference_cell_px"]["range_5_95"]``, measured by ``bench/detector_scale.py``).
    Upscaled smears are the usual cause: cells larger than a detection tile are split and counted twice."""
    span = (getattr(detector_spec, "card", None) or {}).get("reference_cell_px", {}).get("range_5_95")
    side = red_cell_side(result)
    if not span or side is None:
        return ""
    lo, hi = float(span[0]) / DETECTOR_MARGIN, float(span[1]) * DETECTOR_MARGIN
    if lo <= side <= hi:
        return ""
    way = "larger" if side > hi else "smaller"
    return (
        f"The red cells here are {side:.0f} px across, {way} than on any smear the detector was trained on "
        f"({span[0]:.0f}–{span[1]:.0f} px): an upscaled or downscaled image, or another magnification. Its cell "
        "counts and differential are unreliable; analyse the image at its original size."
    )
