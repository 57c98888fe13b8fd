"""Cell crops framed relative to the cell's size, the way the classifier was trained.

PBC crops show one cell centred, filling about half the field. A crop cut from a detection box
therefore takes a square of side ``scale * max(box w, box h)`` around the box centre, padded with
the slide's background colour (:func:`cellkit.framing.cut_square`) where it runs off the image, so
framing does not depend on the scanner's magnification.
"""

from __future__ import annotations

import numpy as np

from cellkit.errors import CellkitError
from cellkit.framing import cut_square


def crop_box(image: np.ndarray, xyxy: np.ndarray | list[float], scale: float = 2.0) -> np.ndarray:
    """Square crop centred on the box, side = scale x the box's longer side, padded at edges."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise CellkitError(f"crop_box: expected an RGB image (H, W, 3), got shape {image.shape}")
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    if not (x2 > x1 and y2 > y1):
        raise CellkitError(f"crop_box: expected a box with x2 > x1 and y2 > y1, got {[x1, y1, x2, y2]}")
    side = max(2, round(scale * max(x2 - x1, y2 - y1)))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return cut_square(image, round(cx - side / 2), round(cy - side / 2), side).copy()


def crop_boxes(image: np.ndarray, xyxy: np.ndarray, scale: float = 2.0) -> list[np.ndarray]:
    """Crops for every box of an (n, 4) array."""
    return [crop_box(image, box, scale) for box in np.asarray(xyxy).reshape(-1, 4)]
