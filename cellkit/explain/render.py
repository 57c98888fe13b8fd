"""Pictures of maps: colour overlays on the crop, PNG and zip export (no Streamlit here)."""

from __future__ import annotations

import io
import zipfile

import cv2
import numpy as np

from cellkit.io import encode_png
from cellkit.preprocess import Preprocess
from cellkit.types import Heatmap

COLORMAPS = ("jet", "inferno", "viridis", "magma", "turbo")


def colorize(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """(H, W) in [0, 1] -> RGB uint8 through a matplotlib colour map."""
    from matplotlib import colormaps

    rgba = colormaps[cmap](np.clip(values, 0.0, 1.0))
    return (rgba[..., :3] * 255).astype(np.uint8)


MAX_VIEW_SIDE = 2048  # a picture of the model's view is never larger (a 100000 x 1 crop would need a 30 GB square)


def overlay(
    image: np.ndarray,
    values: np.ndarray,
    alpha: float = 0.5,
    cmap: str = "jet",
    size: int | None = None,
    prep: Preprocess | None = None,
) -> np.ndarray:
    """The crop as the model sees it (framed, square, centre view: ``prep``, the model's) with the map on top.

    ``size`` defaults to the larger of the crop side and the map side, at most ``MAX_VIEW_SIDE``. Returns RGB uint8.
    """
    side = size or min(max(max(image.shape[:2]), values.shape[0]), MAX_VIEW_SIDE)
    crop = (prep or Preprocess(side)).canonical(image, side).astype(np.float32)
    heat = cv2.resize(values.astype(np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
    colour = colorize(heat, cmap).astype(np.float32)
    return np.clip((1 - alpha) * crop + alpha * colour, 0, 255).astype(np.uint8)


def maps_zip(
    image: np.ndarray, heatmaps: list[Heatmap], alpha: float = 0.5, cmap: str = "jet", prep: Preprocess | None = None
) -> bytes:
    """A zip with the crop as the model sees it and, per map, the overlay PNG and the raw values as ``.npy``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        side = min(max(image.shape[:2]), MAX_VIEW_SIDE)
        zf.writestr("crop.png", encode_png((prep or Preprocess(side)).canonical(image, side)))
        for hm in heatmaps:
            stem = f"{hm.method}_{hm.target}"
            zf.writestr(f"{stem}.png", encode_png(overlay(image, hm.values, alpha, cmap, prep=prep)))
            npy = io.BytesIO()
            np.save(npy, hm.values)
            zf.writestr(f"{stem}.npy", npy.getvalue())
    return buf.getvalue()
