"""Cell crops framed relative to the cell's size, the way the classifier was trained.

PBC crops show one cell centred, filling about half the field. A crop cut from a detection box
therefore takes a square of side ``scale * max(box w, box h)`` around the box centre, padded with
the slide's background colour where it runs off the image, so framing does not depend on the
scanner's magnification.
"""

from __future__ import annotations

import numpy as np

from cellkit.errors import CellkitError


def background_colour(image: np.ndarray) -> np.ndarray:
    """Median colour of the image border: the slide background in a smear or a crop."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).reshape(-1, image.shape[-1])
    return np.median(border, axis=0).astype(np.uint8)


def crop_box(image: np.ndarray, xyxy: np.ndarray | list[float], scale: float = 2.0) -> np.ndarray:
    """Square crop centred on the box, side = scale x the box's longer side, padded at edges."""
    if image.ndim != 3 or image.shape[-1] != 3:
        raise CellkitError(f"crop_box: expected an RGB image (H, W, 3), got shape {image.shape}")
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    if not (x2 > x1 and y2 > y1):
        raise CellkitError(f"crop_box: expected a box with x2 > x1 and y2 > y1, got {[x1, y1, x2, y2]}")
    side = max(2, round(scale * max(x2 - x1, y2 - y1)))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    h, w = image.shape[:2]
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = background_colour(image)
    sx1, sy1 = max(0, left), max(0, top)
    sx2, sy2 = min(w, left + side), min(h, top + side)
    if sx2 > sx1 and sy2 > sy1:
        out[sy1 - top : sy2 - top, sx1 - left : sx2 - left] = image[sy1:sy2, sx1:sx2]
    return out


def crop_boxes(image: np.ndarray, xyxy: np.ndarray, scale: float = 2.0) -> list[np.ndarray]:
    """Crops for every box of an (n, 4) array."""
    return [crop_box(image, box, scale) for box in np.asarray(xyxy).reshape(-1, 4)]
