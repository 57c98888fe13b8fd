"""Point-labelled cells (one ``x y class`` line per cell, as in Chula RBC-12) and their match to boxes.

A point counts as *found* when it lies inside at least one box of the cell's class. A good detector
finds every point once: ``recall`` near 1 and ``boxes_per_cell`` near 1 (2 means every found cell
was cut into two boxes, or boxed twice). Boxes with no point are not counted as errors: point sets
often leave some cells unlabelled (Chula's do).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellkit.errors import CellkitError


@dataclass(frozen=True)
class PointLabels:
    """Cell centres ``xy`` (n, 2) in pixels and their class ids ``class_id`` (n,)."""

    xy: np.ndarray
    class_id: np.ndarray

    def __post_init__(self) -> None:
        if self.xy.ndim != 2 or self.xy.shape[1] != 2:
            raise CellkitError(f"points: expected xy of shape (n, 2), got {self.xy.shape}")
        if self.class_id.shape != (len(self.xy),):
            raise CellkitError(f"points: expected {len(self.xy)} class ids, got shape {self.class_id.shape}")

    def __len__(self) -> int:
        return len(self.xy)


def read_points(path: str | Path) -> PointLabels:
    """A label file of ``x y class`` lines (blank lines ignored); CellkitError naming the bad line."""
    xy, cls = [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CellkitError(f"{path}: cannot read point labels ({exc.strerror or exc})") from None
    for number, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        try:
            x, y, c = float(parts[0]), float(parts[1]), int(parts[2])
        except (IndexError, ValueError):
            raise CellkitError(f"{path}, line {number}: expected 'x y class', got {line.strip()!r}") from None
        xy.append((x, y))
        cls.append(c)
    return PointLabels(np.asarray(xy, np.float32).reshape(-1, 2), np.asarray(cls, np.int64))


def points_in_boxes(xy: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(n_points, n_boxes) bool: point i lies inside box j (edges included)."""
    xy = np.asarray(xy, np.float32).reshape(-1, 2)
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    x, y = xy[:, :1], xy[:, 1:]
    return (x >= b[None, :, 0]) & (x <= b[None, :, 2]) & (y >= b[None, :, 1]) & (y <= b[None, :, 3])


def match_points(xy: np.ndarray, boxes: np.ndarray) -> dict[str, float]:
    """Recall of the points (inside some box), boxes per found point, and the share of points boxed twice."""
    inside = points_in_boxes(xy, boxes)
    n = len(inside)
    per_point = inside.sum(1)
    found = per_point > 0
    return {
        "points": n,
        "boxes": int(inside.shape[1]),
        "recall": float(found.mean()) if n else 0.0,
        "boxes_per_cell": float(per_point[found].mean()) if found.any() else 0.0,
        "in_two_or_more": float((per_point > 1).mean()) if n else 0.0,
    }
