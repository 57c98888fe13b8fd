"""Review steps on a result: add a cell the detector missed, and undo a reviewer's last step.

A reviewer clicks where a missed cell is: :func:`add_cell` puts a box of the image's usual size for that cell
type there, lets the model for that type classify it (its answer is a suggestion, like any other box's), and
records who added it. Nothing a model said is ever overwritten: :func:`undo_step` undoes a reviewer's step and
says what to record, a new correction (the audit trail keeps both). An undo back to before any correction
withdraws the reviewer's label, so the box is undecided again (a label equal to the model's is a decision: a
reviewer confirmed it); an added cell is undone by rejecting it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from cellkit.errors import CellkitError
from cellkit.slide import SlideResult, cell_models, classify_boxes
from cellkit.types import DETECTION_CLASSES, Detections

UNDO_ADDED = "reject_not_a_cell"  # the rejection that undoes an added cell (kept, never counted)


def cell_side(result: SlideResult, cls: str) -> float:
    """Side (px) of a box for a cell of class ``cls`` on this image: the median of its boxes of that class,
    else of its white cells, else an eighth of the image's shorter side."""
    d = result.detections
    for name in (cls, "wbc"):
        keep = d.class_name == name
        if keep.any():
            xy = d.xyxy[keep]
            return float(np.median(np.maximum(xy[:, 2] - xy[:, 0], xy[:, 3] - xy[:, 1])))
    return max(8.0, min(result.image_shape) / 8.0)


def add_cell(
    image: np.ndarray,
    result: SlideResult,
    x: float,
    y: float,
    models: Any | Mapping[str, Any],
    author: str,
    cls: str = "wbc",
) -> tuple[SlideResult, int]:
    """A new result with one more box of class ``cls`` centred on (``x``, ``y``) (pixels of ``image``), classified
    by the model for ``cls`` (``models``: one classifier or ``{detector class: model}``) and marked as added by
    ``author``; returns it with the new box's index. ``result`` itself is not changed."""
    if cls not in DETECTION_CLASSES:
        raise CellkitError(f"add a cell: expected a detector class {DETECTION_CLASSES}, got {cls!r}")
    h, w = image.shape[:2]
    if tuple(result.image_shape) != (h, w):
        raise CellkitError(f"add a cell: the image is {w}x{h} px, the analysis was of {result.image_shape[1]}x"
                           f"{result.image_shape[0]} px; open the image that was analysed")  # fmt: skip
    if not (0 <= x < w and 0 <= y < h):
        raise CellkitError(f"add a cell: expected a point inside the {w}x{h} px image, got ({x:.0f}, {y:.0f})")
    if len(result.detections) and "label" not in result.detections.data:
        raise CellkitError(
            "add a cell: this analysis counted its cells without classifying them (no white-cell model was used); "
            "analyse the image again with a white-cell model, then add the cell"
        )
    chosen = cell_models(models) if not isinstance(models, Mapping) else dict(models)
    if cls not in chosen:
        names = {"wbc": "white cells", "rbc": "red cells", "platelet": "platelets"}
        can = ", ".join(names.get(c, c) for c in sorted(chosen)) or "nothing"
        raise CellkitError(
            f"cannot add one of the {names.get(cls, cls)}: no model here classifies them (it can add: {can})"
        )
    half = cell_side(result, cls) / 2
    box = np.array([[max(0.0, x - half), max(0.0, y - half), min(w - 1.0, x + half), min(h - 1.0, y + half)]])
    one = Detections(box, np.zeros(1), np.array([DETECTION_CLASSES.index(cls)]), result.detections.class_names)
    one, ids = classify_boxes(image, one, {cls: chosen[cls]})
    return _appended(result, one, ids, author), len(result.detections)


def _appended(result: SlideResult, one: Detections, ids: tuple[str, ...], author: str) -> SlideResult:
    """``result`` with the classified box ``one`` appended, its probabilities put in the result's node columns."""
    d = result.detections
    node_ids = result.node_ids or ids
    column = {nid: j for j, nid in reversed(list(enumerate(node_ids)))}
    probs = np.full((1, len(node_ids)), np.nan, np.float32)
    for k, nid in enumerate(ids):
        if nid in column:
            probs[0, column[nid]] = one.data["node_probs"][0, k]
    n = len(d)
    data: dict[str, np.ndarray] = {}
    for key, new in one.data.items():
        old = d.data.get(key)
        if key == "node_probs":
            old = old if old is not None else np.full((n, len(node_ids)), np.nan, np.float32)
            data[key] = np.concatenate([old.reshape(n, len(node_ids)), probs])
        else:
            old = old if old is not None else np.full(n, "" if new.dtype == object else np.nan, dtype=new.dtype)
            data[key] = np.concatenate([old, new])
    boxes = Detections(
        np.concatenate([d.xyxy, one.xyxy]),
        np.concatenate([d.confidence, one.confidence]),
        np.concatenate([d.class_id, one.class_id]),
        d.class_names,
        data,
    )
    return dataclasses.replace(  # its own dicts: a review of the new result never changes the old one
        result, detections=boxes, node_ids=node_ids, added={**result.added, n: author},
        corrections=dict(result.corrections),
    )  # fmt: skip


def undo_point(result: SlideResult, index: int) -> str | None:
    """What undoing a step about to be made on box ``index`` goes back to: the reviewer's label the box has now, or
    None when it has none (the model's answer stands). Never the label shown: the model's label as a correction
    would be a decision nobody made."""
    return result.corrections.get(index)


def undo_step(result: SlideResult, index: int, before: str | None) -> str | None:
    """Undo a reviewer's step on box ``index`` of ``result`` (in place) and return what to record: ``before`` (the
    box's :func:`undo_point` when the step was made: still a decision), or None when it had none: the correction is
    withdrawn and the box is undecided again. For the step that added a cell (``before`` "", nothing to go back
    to) the cell is rejected as "not a cell". A cell the result does not have (a step of another field) is refused."""
    if not 0 <= index < len(result.detections):
        raise CellkitError(f"undo: this field has no cell #{index} (it has {len(result.detections)}); the step to "
                           "undo was of another field, nothing was changed")  # fmt: skip
    if before == "":
        before = UNDO_ADDED if index in result.added else None
    if before is None:
        result.corrections.pop(index, None)
    else:
        result.corrections[index] = before
    return before
