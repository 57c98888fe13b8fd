"""Red-cell boxes from labelled points: each point's cell segmented around it.

Point-labelled red cells (Chula RBC-12) give a cell's centre, not its extent. Here the cells are
separated from the slide background by optical density (Otsu), holes are filled (central pallor,
target cells), touching cells are split by a watershed on the distance to the background seeded at
the points and each point gets its region's box; cells nobody labelled are the mask's other cell-sized components.

Used to make detector training boxes and morphology crops from points, and to measure a cell's
size against the slide's median (macrocytes and microcytes are a matter of size, not shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage

from cellkit.errors import CellkitError


@dataclass(frozen=True)
class PointBoxes:
    """Per labelled point: its cell's box ``xyxy`` (n, 4) and area in pixels (0 where none was found);
    ``extra`` (k, 4): boxes of cells found that no point names (unlabelled cells)."""

    xyxy: np.ndarray
    area: np.ndarray
    extra: np.ndarray

    @property
    def found(self) -> np.ndarray:
        return self.area > 0


def cell_mask(image: np.ndarray) -> np.ndarray:
    """Cells (True) against the slide background: optical density against the brightest pixels, Otsu, holes filled."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise CellkitError(f"cell_mask: expected an RGB uint8 image (H, W, 3), got {image.shape} {image.dtype}")
    rgb = image.astype(np.float32) + 1.0
    background = np.percentile(rgb.reshape(-1, 3), 90, axis=0)
    density = np.log(background / rgb).clip(0, None).sum(2)
    smooth = cv2.GaussianBlur(density, (0, 0), 1.5)
    scaled = np.clip(smooth / max(float(smooth.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
    _, mask = cv2.threshold(scaled, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    return ndimage.binary_fill_holes(mask.astype(bool))


def boxes_from_points(image: np.ndarray, xy: np.ndarray, min_area: int = 30) -> PointBoxes:
    """Each point's cell box, by a watershed on the cell mask seeded at the points (see the module doc)."""
    xy = np.asarray(xy, np.float32).reshape(-1, 2)
    h, w = image.shape[:2]
    mask = cell_mask(image)
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    markers = np.zeros((h, w), np.int32)
    for k, (x, y) in enumerate(xy, start=1):
        xi, yi = int(np.clip(round(float(x)), 0, w - 1)), int(np.clip(round(float(y)), 0, h - 1))
        cv2.circle(markers, (xi, yi), 2, k, -1)
    markers[~mask] = len(xy) + 1  # the background is one more basin
    relief = (255 - np.clip(dist / max(float(dist.max()), 1e-6) * 255, 0, 255)).astype(np.uint8)
    regions = cv2.watershed(np.repeat(relief[..., None], 3, 2), markers.copy())
    boxes = np.zeros((len(xy), 4), np.float32)
    area = np.zeros(len(xy), np.int64)
    slices = ndimage.find_objects(np.where((regions > 0) & (regions <= len(xy)), regions, 0))
    for k, sl in enumerate(slices, start=1):
        if sl is None:
            continue
        n = int((regions[sl] == k).sum())
        if n >= min_area:
            boxes[k - 1] = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
            area[k - 1] = n
    # cells nobody labelled: mask components holding no point, of a red cell's size (not debris, not a scratch)
    components, _ = ndimage.label(mask)
    named = set(np.unique(components[markers > 0][markers[markers > 0] <= len(xy)]).tolist())
    typical = float(np.median(area[area > 0])) if (area > 0).any() else 0.0
    extra = []
    for k, sl in enumerate(ndimage.find_objects(components), start=1):
        if sl is None or k in named or typical == 0:
            continue
        n = int((components[sl] == k).sum())
        if 0.3 * typical <= n <= 2.5 * typical:
            extra.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    return PointBoxes(boxes, area, np.asarray(extra, np.float32).reshape(-1, 4))


def image_split(stems: list[str], seed: int = 0, fractions: tuple[float, float] = (0.7, 0.15)) -> dict[str, str]:
    """Image stem -> "train" / "val" / "test", seeded: the one split of a point-labelled set (morphology crops and
    detector boxes use the same, so no test image is ever trained on by either model)."""
    order = np.random.default_rng(seed).permutation(len(stems))
    n_train, n_val = round(fractions[0] * len(stems)), round(fractions[1] * len(stems))
    return {
        stems[i]: ("train" if r < n_train else "val" if r < n_train + n_val else "test") for r, i in enumerate(order)
    }


def chula_images(root: str | Path) -> list[Path]:
    """The images of a Chula-layout folder, in numeric order."""
    return sorted((Path(root) / "images").glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))


def slide_crop(image: np.ndarray, centre: tuple[float, float], side: float) -> np.ndarray:
    """A ``side`` x ``side`` crop around ``centre``, padded with the slide's background colour at the borders."""
    from cellkit.framing import cut_square

    x, y = centre
    s = max(4, round(side))
    return cut_square(image, round(x - s / 2), round(y - s / 2), s)


def export_point_crops(
    root: str | Path, out: str | Path, scale: float = 2.0, seed: int = 0, fractions: tuple[float, float] = (0.7, 0.15)
) -> dict[str, int]:
    """Crops of every labelled red cell of a Chula-layout folder (``images/<n>.jpg`` + ``labels/<n>.txt``).

    Each crop is ``scale`` x the image's median red-cell side (from :func:`boxes_from_points`) around its
    point, so a macrocyte stays larger than a normal cell in its crop; saved as
    ``out/<class id>/<image>_<k>.png``. The split is by image (no patient ids: every image its own subject),
    written as ``out/split.json`` (train / val / test file lists) for ``cellkit train classifier --split-file``.
    Returns the number of crops per split.
    """
    import json

    from cellkit.io import encode_png, read_image
    from cellkit.points import read_points
    from cellkit.writes import atomic_write_bytes, atomic_write_text

    root, out = Path(root), Path(out)
    images = chula_images(root)
    if not images:
        raise CellkitError(f"no images/<n>.jpg under {root}; expected the chula_rbc12 layout")
    part_of = image_split([p.stem for p in images], seed, fractions)
    split: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for path in images:
        labels = root / "labels" / f"{path.stem}.txt"
        if not labels.is_file():
            continue
        pts = read_points(labels)
        if not len(pts):
            continue
        image = read_image(path)
        found = boxes_from_points(image, pts.xy)
        sides = np.maximum(found.xyxy[:, 2] - found.xyxy[:, 0], found.xyxy[:, 3] - found.xyxy[:, 1])[found.found]
        if not len(sides):
            continue
        side = scale * float(np.median(sides))
        for k, ((x, y), cls) in enumerate(zip(pts.xy, pts.class_id, strict=True)):
            rel = f"{int(cls)}/{path.stem}_{k:03d}.png"
            atomic_write_bytes(out / rel, encode_png(slide_crop(image, (float(x), float(y)), side)), fallback=False)
            split[part_of[path.stem]].append(rel)
    meta = {"source": str(root), "by": "image", "seed": seed, "scale_of_median_cell": scale}
    atomic_write_text(out / "split.json", json.dumps({**meta, **split}, indent=0) + "\n", fallback=False)
    return {k: len(v) for k, v in split.items()}
