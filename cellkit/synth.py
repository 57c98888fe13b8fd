"""Synthetic smears and cell crops (coloured discs on a pink background) for tests, demos, benches.

Nothing here resembles a diagnosis: it only gives the pipeline realistic shapes and colours.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = (236, 214, 220)
COLOURS = {  # class -> (body RGB, nucleus RGB or None)
    "wbc": ((214, 190, 222), (96, 52, 140)),
    "rbc": ((205, 110, 120), None),
    "platelet": ((150, 90, 170), None),
}
RADII = {"wbc": (22, 30), "rbc": (14, 18), "platelet": (3, 5)}
CLASS_IDS = {"wbc": 0, "rbc": 1, "platelet": 2}


def _disc(img: np.ndarray, cx: float, cy: float, r: float, colour: tuple[int, int, int]) -> None:
    h, w = img.shape[:2]
    y0, y1 = max(0, int(cy - r - 1)), min(h, int(cy + r + 2))
    x0, x1 = max(0, int(cx - r - 1)), min(w, int(cx + r + 2))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    img[y0:y1, x0:x1][mask] = colour


def make_smear(
    width: int = 640,
    height: int = 480,
    n_wbc: int = 3,
    n_rbc: int = 40,
    n_platelet: int = 6,
    seed: int = 0,
    noise: float = 4.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smear image plus its true boxes (n, 4) xyxy and class ids (0 wbc, 1 rbc, 2 platelet).

    Cells are placed without overlap (rejection sampling), so every box is one cell.
    """
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.float32)
    img[:] = BACKGROUND
    placed: list[tuple[float, float, float]] = []
    boxes, classes = [], []
    for kind, count in (("wbc", n_wbc), ("rbc", n_rbc), ("platelet", n_platelet)):
        for _ in range(count):
            for _try in range(200):
                r = rng.uniform(*RADII[kind])
                cx, cy = rng.uniform(r + 1, width - r - 1), rng.uniform(r + 1, height - r - 1)
                if all((cx - px) ** 2 + (cy - py) ** 2 > (r + pr + 3) ** 2 for px, py, pr in placed):
                    break
            else:
                continue
            placed.append((cx, cy, r))
            body, nucleus = COLOURS[kind]
            _disc(img, cx, cy, r, body)
            if nucleus is not None:
                _disc(img, cx + rng.uniform(-3, 3), cy + rng.uniform(-3, 3), r * 0.55, nucleus)
            boxes.append([cx - r, cy - r, cx + r, cy + r])
            classes.append(CLASS_IDS[kind])
    img += rng.normal(0, noise, img.shape)
    out = np.clip(img, 0, 255).astype(np.uint8)
    return out, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)


def make_crop(kind: int = 0, size: int = 96, seed: int = 0) -> np.ndarray:
    """A single-cell crop: one of a few visually distinct synthetic 'cell types' (kind 0..5)."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float32)
    img[:] = BACKGROUND
    c = size / 2 + rng.uniform(-2, 2, 2)
    r = size * 0.25 * rng.uniform(0.9, 1.1)
    palette = [(96, 52, 140), (200, 90, 60), (60, 60, 160), (150, 90, 170), (120, 40, 90), (40, 120, 140)]
    _disc(img, c[0], c[1], r, (214, 190, 222))
    nucleus_r = r * (0.35 + 0.08 * (kind % 3))
    _disc(img, c[0] + (kind % 2) * r * 0.3, c[1], nucleus_r, palette[kind % len(palette)])
    img += rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_demo_smear(
    width: int = 640, height: int = 480, n_wbc: int = 3, n_rbc: int = 45, n_platelet: int = 6, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smear drawn closer to a stained slide (soft edges, RBC central pallor, lobed WBC nuclei).

    Made for demos of the bundled detector, which finds these cells; plain :func:`make_smear`
    discs are for tests with colour-threshold stand-ins. Returns (image, boxes xyxy, class ids).
    """
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.float32)
    img[:] = (232, 222, 216)
    placed: list[tuple[float, float, float]] = []
    boxes, classes = [], []
    for kind, count, (r_lo, r_hi) in (
        ("wbc", n_wbc, (30, 38)),
        ("rbc", n_rbc, (22, 27)),
        ("platelet", n_platelet, (7, 10)),
    ):
        for _ in range(count):
            for _try in range(300):
                r = rng.uniform(r_lo, r_hi)
                cx, cy = rng.uniform(r + 1, width - r - 1), rng.uniform(r + 1, height - r - 1)
                if all((cx - px) ** 2 + (cy - py) ** 2 > (r + pr + 2) ** 2 for px, py, pr in placed):
                    break
            else:
                continue
            placed.append((cx, cy, r))
            if kind == "rbc":
                _disc(img, cx, cy, r, (214, 140, 150))
                _disc(img, cx, cy, r * 0.45, (226, 175, 180))
            elif kind == "wbc":
                _disc(img, cx, cy, r, (200, 180, 215))
                for k in range(3):
                    a = 2 * np.pi * k / 3 + rng.uniform(0, 1)
                    _disc(img, cx + np.cos(a) * r * 0.35, cy + np.sin(a) * r * 0.35, r * 0.38, (95, 45, 140))
            else:
                _disc(img, cx, cy, r, (150, 100, 175))
                _disc(img, cx + 1, cy - 1, r * 0.5, (110, 60, 145))
            boxes.append([cx - r, cy - r, cx + r, cy + r])
            classes.append(CLASS_IDS[kind])
    img = gaussian_filter(img, sigma=(1.2, 1.2, 0)) + rng.normal(0, 3, img.shape)
    out = np.clip(img, 0, 255).astype(np.uint8)
    return out, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(classes, np.int64)
