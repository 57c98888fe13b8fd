"""Result dataclasses passed between the stages: Detections -> Prediction -> Heatmap.

Every constructor validates shapes and ranges and says "expected ..., got ..." when they are off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellkit.errors import CellkitError
from cellkit.taxonomy import UNKNOWN

DETECTION_CLASSES: tuple[str, ...] = ("wbc", "rbc", "platelet")


def _check_shape(name: str, arr: np.ndarray, shape: tuple[int | None, ...]) -> None:
    ok = arr.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, arr.shape, strict=True))
    if not ok:
        want = str(tuple("n" if s is None else s for s in shape)).replace("'", "")
        raise CellkitError(f"{name}: expected shape {want}, got {arr.shape}")


@dataclass
class Detections:
    """Boxes found in one image, in pixels of that image.

    ``xyxy`` (n, 4) float, ``confidence`` (n,) float in [0, 1], ``class_id`` (n,) int indexing
    ``class_names``; ``data`` holds extra per-box arrays of length n (e.g. classifier output).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_names: tuple[str, ...] = DETECTION_CLASSES
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.xyxy = (
            np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
            if np.size(self.xyxy) == 0
            else np.asarray(self.xyxy, dtype=np.float32)
        )
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_id = np.asarray(self.class_id).reshape(-1)
        integral = np.issubdtype(self.class_id.dtype, np.integer)
        if self.class_id.size and not integral and not np.all(np.mod(self.class_id, 1) == 0):
            raise CellkitError(f"class_id: expected integers, got {self.class_id.dtype}")
        self.class_id = self.class_id.astype(np.int64)
        n = len(self.xyxy)
        _check_shape("xyxy", self.xyxy, (None, 4))
        _check_shape("confidence", self.confidence, (n,))
        _check_shape("class_id", self.class_id, (n,))
        if n and (np.any(self.xyxy[:, 2] < self.xyxy[:, 0]) or np.any(self.xyxy[:, 3] < self.xyxy[:, 1])):
            raise CellkitError("xyxy: expected x2 >= x1 and y2 >= y1 for every box")
        if n and (
            np.any(self.confidence < 0) or np.any(self.confidence > 1) or not np.all(np.isfinite(self.confidence))
        ):
            raise CellkitError("confidence: expected values in [0, 1]")
        if n and (self.class_id.min() < 0 or self.class_id.max() >= len(self.class_names)):
            raise CellkitError(
                f"class_id: expected values in [0, {len(self.class_names) - 1}], got "
                f"[{self.class_id.min()}, {self.class_id.max()}]"
            )
        for key, value in list(self.data.items()):
            value = np.asarray(value)
            if len(value) != n:
                raise CellkitError(f"data[{key!r}]: expected length {n}, got {len(value)}")
            self.data[key] = value

    @classmethod
    def empty(cls, class_names: tuple[str, ...] = DETECTION_CLASSES) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), class_names)

    @classmethod
    def from_ultralytics(cls, result: Any, class_names: tuple[str, ...] = DETECTION_CLASSES) -> Detections:
        """Adapter for one ultralytics ``Results`` (reads ``result.boxes.xyxy/conf/cls``)."""
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return cls.empty(class_names)

        def arr(t: Any) -> np.ndarray:
            return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)

        return cls(arr(boxes.xyxy), arr(boxes.conf), arr(boxes.cls).astype(np.int64), class_names)

    def __len__(self) -> int:
        return len(self.xyxy)

    def __getitem__(self, index: Any) -> Detections:
        """Index with an int, a slice, an integer array or a boolean mask."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index],
            self.confidence[index],
            self.class_id[index],
            self.class_names,
            {k: v[index] for k, v in self.data.items()},
        )

    @property
    def class_name(self) -> np.ndarray:
        return np.array([self.class_names[i] for i in self.class_id], dtype=object)

    @property
    def area(self) -> np.ndarray:
        return (self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])

    @classmethod
    def merge(cls, items: list[Detections]) -> Detections:
        items = [d for d in items if len(d)]
        if not items:
            return cls.empty()
        keys = set.intersection(*(set(d.data) for d in items))
        return cls(
            np.concatenate([d.xyxy for d in items]),
            np.concatenate([d.confidence for d in items]),
            np.concatenate([d.class_id for d in items]),
            items[0].class_names,
            {k: np.concatenate([d.data[k] for d in items]) for k in keys},
        )

    def counts(self) -> dict[str, int]:
        return {name: int(np.sum(self.class_id == i)) for i, name in enumerate(self.class_names)}


@dataclass
class Prediction:
    """The classifier's answer for one crop, at every node of the taxonomy.

    ``node_probs`` follows ``taxonomy.ids``; ``leaf`` is the argmax leaf, ``label`` the deepest
    node whose probability passes the confidence threshold, ``confidence`` that node's probability.
    ``ood_score`` grows as the crop looks less like the training data (0 = typical).
    """

    node_probs: np.ndarray
    node_ids: tuple[str, ...]
    leaf: str
    label: str
    confidence: float
    ood_score: float = 0.0
    ood: bool = False
    review: str = ""  # why the cell needs a person's review (then label is "unknown"); empty when it does not
    note: str = ""  # framing remark, e.g. "2 cells in the crop: the central one was classified"

    def __post_init__(self) -> None:
        self.node_probs = np.asarray(self.node_probs, dtype=np.float32)
        _check_shape("node_probs", self.node_probs, (len(self.node_ids),))
        if (
            not np.all(np.isfinite(self.node_probs))
            or self.node_probs.min() < -1e-4
            or self.node_probs.max() > 1 + 1e-4
        ):
            raise CellkitError("node_probs: expected finite probabilities in [0, 1]")
        if self.label == UNKNOWN and not self.review:
            raise CellkitError("label: 'unknown' needs a review reason")
        for name in ("leaf", "label"):
            if getattr(self, name) not in self.node_ids and not (name == "label" and self.label == UNKNOWN):
                raise CellkitError(f"{name}: expected a node id of the taxonomy, got {getattr(self, name)!r}")

    def prob(self, node_id: str) -> float:
        return float(self.node_probs[self.node_ids.index(node_id)])

    def as_dict(self) -> dict[str, Any]:
        """Flat row: leaf, label, confidence, ood_score, review, note, p_<node> for every node."""
        row: dict[str, Any] = {
            "leaf": self.leaf,
            "label": self.label,
            "confidence": round(float(self.confidence), 6),
            "ood_score": round(float(self.ood_score), 6),
            "review": self.review,
            "note": self.note,
        }
        row.update({f"p_{n}": round(float(p), 6) for n, p in zip(self.node_ids, self.node_probs, strict=True)})
        return row


@dataclass
class Heatmap:
    """An explanation map for one crop and one taxonomy node.

    ``values`` (H, W) float32 in [0, 1] at the crop's resolution (1 = most important for the node).
    ``scores`` holds trust figures (e.g. ``deletion_auc``, ``insertion_auc``, ``seconds``).
    """

    values: np.ndarray
    method: str
    target: str
    scores: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim != 2:
            raise CellkitError(f"Heatmap.values: expected shape (H, W), got {self.values.shape}")
        if not np.all(np.isfinite(self.values)):
            raise CellkitError("Heatmap.values: expected finite values")
        if self.values.size and (self.values.min() < -1e-5 or self.values.max() > 1 + 1e-5):
            raise CellkitError(
                f"Heatmap.values: expected values in [0, 1], got [{self.values.min():.3g}, {self.values.max():.3g}]"
            )
