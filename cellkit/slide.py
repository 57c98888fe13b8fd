"""Slide analysis: detect every cell (tiled for large images), classify white cells and platelets.

``analyze(image, detector, classifier)`` returns one :class:`SlideResult`: boxes in pixels of the
original image, the classifier's answer for every wbc / platelet box, counts per class, the WBC
differential, timings and model versions. Images larger than the detector's tile are processed as
overlapping tiles, a few at a time (memory stays bounded), and boxes are merged across tile
borders so that no cell is counted twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cellkit.crops import crop_box
from cellkit.errors import CellkitError
from cellkit.taxonomy import REJECTIONS, UNKNOWN
from cellkit.types import DETECTION_CLASSES, Detections

CLASSIFIED = ("wbc", "platelet")  # detector classes whose crops go through the classifier
EDGE_EPS = 2.0  # a box this close (px) to an inner tile border is treated as cut by it


# ----------------------------------------------------------------------------------------- tiling
def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``tile`` covering ``length`` with at least ``overlap`` shared."""
    if tile <= 0 or not 0 <= overlap < tile:
        raise CellkitError(f"tiling: expected tile > overlap >= 0, got tile={tile}, overlap={overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = int(np.ceil((length - tile) / stride)) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def iter_tiles(height: int, width: int, tile: int, overlap: int) -> Iterator[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) windows covering the image with overlapping tiles."""
    for y0 in tile_starts(height, tile, overlap):
        for x0 in tile_starts(width, tile, overlap):
            yield x0, y0, min(width, x0 + tile), min(height, y0 + tile)


def _inter(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection areas of one box ``a`` (4,) with boxes ``b`` (k, 4)."""
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    return w * h


def merge_tiled(dets: Detections, edge: np.ndarray, shared: np.ndarray, overlap_thr: float = 0.5) -> Detections:
    """Merge detections gathered from overlapping tiles so every cell is kept once.

    ``edge``: the box touches an inner border of its tile (the cell may be cut there).
    ``shared``: the box lies (partly) where tiles overlap; only those can be duplicates.
    Greedy, class-aware: whole boxes win over cut ones, then higher confidence; a box whose
    intersection with a kept box covers > ``overlap_thr`` of the smaller one is a duplicate. Two
    cut pieces of one large cell (from two neighbouring tiles) are joined into their union.
    """
    n = len(dets)
    if n == 0:
        return dets
    keep_unique = ~shared
    idx = np.flatnonzero(shared)
    order = idx[np.lexsort((-dets.confidence[idx], edge[idx]))]
    kept: list[int] = []
    boxes = dets.xyxy.copy()
    conf = dets.confidence.copy()
    for i in order:
        if kept:
            k = np.asarray(kept)
            same = dets.class_id[k] == dets.class_id[i]
            if same.any():
                k = k[same]
                inter = _inter(boxes[i], boxes[k])
                area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
                area_k = (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1])
                ratio = inter / np.maximum(np.minimum(area_i, area_k), 1e-6)
                j = int(np.argmax(ratio))
                if ratio[j] > overlap_thr or (edge[i] and edge[k[j]] and ratio[j] > 0.1):
                    t = k[j]
                    if edge[i] and edge[t]:  # two cut pieces of one cell: keep their union
                        boxes[t, :2] = np.minimum(boxes[t, :2], boxes[i, :2])
                        boxes[t, 2:] = np.maximum(boxes[t, 2:], boxes[i, 2:])
                        conf[t] = max(conf[t], conf[i])
                    continue
        kept.append(int(i))
    mask = keep_unique.copy()
    mask[kept] = True
    out = Detections(boxes, conf, dets.class_id, dets.class_names, dict(dets.data))
    return out[mask]


def detect_tiled(
    image: np.ndarray,
    detector: Any,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 4,
) -> Detections:
    """Detections for an image of any size: whole when it fits one tile, else overlapping tiles.

    Tiles are cut as views and sent ``batch`` at a time, so memory does not grow with the image.
    """
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise CellkitError(f"analyze: expected an RGB uint8 image (H, W, 3), got {image.shape} {image.dtype}")
    tile = int(tile or getattr(detector, "tile", 640))
    overlap = int(overlap if overlap is not None else getattr(detector, "overlap", tile // 4))
    h, w = image.shape[:2]
    windows = list(iter_tiles(h, w, tile, overlap))
    if len(windows) == 1:
        return detector.detect_batch([image])[0]
    xs = sorted({x0 for x0, *_ in windows})
    ys = sorted({y0 for _, y0, *_ in windows})
    parts, edges, shared = [], [], []
    for start in range(0, len(windows), batch):
        group = windows[start : start + batch]
        found = detector.detect_batch([image[y0:y1, x0:x1] for x0, y0, x1, y1 in group])
        for (x0, y0, x1, y1), d in zip(group, found, strict=True):
            if not len(d):
                continue
            b = d.xyxy
            e = np.zeros(len(d), bool)
            if x0 > 0:
                e |= b[:, 0] <= EDGE_EPS
            if y0 > 0:
                e |= b[:, 1] <= EDGE_EPS
            if x1 < w:
                e |= b[:, 2] >= (x1 - x0) - EDGE_EPS
            if y1 < h:
                e |= b[:, 3] >= (y1 - y0) - EDGE_EPS
            g = b + np.array([x0, y0, x0, y0], np.float32)
            parts.append(Detections(g, d.confidence, d.class_id, d.class_names))
            edges.append(e)
            shared.append(_in_shared_zone(g, xs, ys, tile, w, h))
    if not parts:
        return Detections.empty(getattr(detector, "class_names", DETECTION_CLASSES))
    return merge_tiled(Detections.merge(parts), np.concatenate(edges), np.concatenate(shared))


def _in_shared_zone(boxes: np.ndarray, xs: list[int], ys: list[int], tile: int, w: int, h: int) -> np.ndarray:
    """True for boxes touching a band covered by two tiles (columns or rows of the grid)."""

    def bands(starts: list[int], length: int) -> list[tuple[int, int]]:
        return [(starts[i + 1], min(length, starts[i] + tile)) for i in range(len(starts) - 1)]

    out = np.zeros(len(boxes), bool)
    for a, b in bands(xs, w):
        out |= (boxes[:, 2] >= a) & (boxes[:, 0] <= b)
    for a, b in bands(ys, h):
        out |= (boxes[:, 3] >= a) & (boxes[:, 1] <= b)
    return out


# ------------------------------------------------------------------------------------------ result
@dataclass
class SlideResult:
    """Everything found on one smear image.

    ``detections.data`` holds, per box, ``leaf``/``label`` (str, "" when not classified),
    ``cls_confidence``, ``ood_score`` and ``node_probs`` (n, len(node_ids); NaN rows when not
    classified). ``corrections`` maps a box index to the node id a reviewer chose (a decision, even when it is the
    model's own label; an undo back to before any correction removes it); ``added`` maps
    the index of a box a reviewer added (a missed cell, :func:`cellkit.review.add_cell`) to who added it.
    """

    detections: Detections
    image_shape: tuple[int, int]
    node_ids: tuple[str, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    models: dict[str, dict[str, str]] = field(default_factory=dict)
    name: str = ""
    image_sha256: str = ""
    corrections: dict[int, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)  # leaf/node -> differential group (pbc8)
    taxonomies: tuple[str, ...] = ()  # the classifiers' taxonomies, in node_ids order (display names in exports)
    added: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """The grouping rule of today's taxonomies, whatever was stored with an older analysis: one case never
        mixes two meanings of a label (e.g. "Erythroid", counted as an NRBC since 2026-12-02)."""
        from cellkit.taxonomy import load_taxonomy

        for name in self.taxonomies:
            try:
                self.groups = {**self.groups, **load_taxonomy(name).primary_grouping()}
            except CellkitError:
                continue  # a taxonomy no longer installed: its stored grouping stands

    def _display_names(self) -> dict[str, str]:
        """Display name of every node id of ``node_ids`` (from its taxonomies; for a result that does not name
        them, every bundled taxonomy, the default one last so that its names win)."""
        from cellkit.taxonomy import DEFAULT_TAXONOMY, UNKNOWN_NAME, list_taxonomies, load_taxonomy

        names = {UNKNOWN: UNKNOWN_NAME, **REJECTIONS}
        fallback = [t for t in list_taxonomies() if t != DEFAULT_TAXONOMY] + [DEFAULT_TAXONOMY]
        for name in self.taxonomies or fallback:
            try:
                tax = load_taxonomy(name)
            except CellkitError:
                continue
            names.update({nid: tax.display(nid) for nid in tax.ids})
        return names

    def display_name(self, node: str) -> str:
        """The display name of a node id of this result's models (the id itself when no taxonomy has it)."""
        return self._display_names().get(node, node)

    def shown_as(self) -> list[str]:
        """What a person is shown for each box: the final label's display name ("Unidentified — review" when
        flagged), or the detector's class for boxes no classifier saw."""
        names = self._display_names()
        return [names.get(lab, lab) for lab in self.labels()]

    @property
    def counts(self) -> dict[str, int]:
        """Boxes per detector class (wbc, rbc, platelet) as the detector found them; see :meth:`reviewed_counts`."""
        return self.detections.counts()

    def final_classes(self) -> list[str | None]:
        """Per box, the detector class it is counted as after review. A reviewer's label of another class moves a
        box: a white-cell box relabelled Platelet is a platelet, a platelet box relabelled Lymphocyte a white
        cell. A rejected box is None: counted nowhere. The model's own labels never move a box (a white-cell box
        it calls a platelet stays a white cell, "Unidentified — review", until a person decides)."""
        not_white = set(self._differential_rules().get("not_white", ()))
        out: list[str | None] = []
        for i, (lab, cls) in enumerate(zip(self.labels(), self.detections.class_name, strict=True)):
            cls = str(cls)
            if lab in REJECTIONS:
                out.append(None)
                continue
            if cls in ("wbc", "platelet") and lab != UNKNOWN and i in self.corrections:  # a person decided
                cls = "platelet" if self.groups.get(lab, lab) in not_white else "wbc"
            out.append(cls)
        return out

    def platelets_to_review(self) -> list[int]:
        """Platelet boxes counted as platelets that a person should look at: the model flagged them ("Unidentified
        — review") or called them a white cell, and no reviewer decided them yet. They count as platelets (the
        detector's class) until then, so a missed white cell or a clump must be said, not only counted."""
        base = self.detections.data.get("label")
        if base is None:
            return []
        not_white = set(self._differential_rules().get("not_white", ()))
        out = []
        for i, cls in enumerate(self.detections.class_name):
            lab = str(base[i])
            if str(cls) != "platelet" or i in self.corrections or not lab:
                continue
            if lab == UNKNOWN or self.groups.get(lab, lab) not in not_white:
                out.append(i)
        return out

    def reviewed_counts(self) -> dict[str, int]:
        """Boxes per detector class after review (:meth:`final_classes`): rejected boxes are not counted, and boxes
        a reviewer moved to another class are counted there."""
        out = {c: 0 for c in DETECTION_CLASSES}
        for cls in self.final_classes():
            if cls is not None:
                out[cls] = out.get(cls, 0) + 1
        return out

    def white_cells(self) -> int:
        """White cells after review: the white-cell boxes (:meth:`reviewed_counts`) less the nucleated red cells among
        them (:meth:`nrbc`), i.e. the cells the differential is counted over. The one white-cell count of a field:
        the Slide page, the batch summary and the stored batch items all show this one."""
        return self.reviewed_counts()["wbc"] - int(self.nrbc().get("count", 0))

    def is_corrected(self, index: int) -> bool:
        """Whether a reviewer changed box ``index``'s label (a correction to the model's own label, a reviewer
        confirming it, is none)."""
        if index not in self.corrections:
            return False
        base = self.detections.data.get("label")
        model = str(base[index]) if base is not None and base[index] else str(self.detections.class_name[index])
        return self.corrections[index] != model

    def labels(self) -> list[str]:
        """Final label per box: the reviewer's correction, else the classifier's label, else the class."""
        base = self.detections.data.get("label")
        names = self.detections.class_name
        out = []
        for i in range(len(self.detections)):
            if i in self.corrections:
                out.append(self.corrections[i])
            elif base is not None and base[i]:
                out.append(str(base[i]))
            else:
                out.append(str(names[i]))
        return out

    def _differential_rules(self) -> dict[str, tuple[str, ...]]:
        """The ``differential`` block of the first of this result's taxonomies that has one (the default's)."""
        from cellkit.taxonomy import DEFAULT_TAXONOMY, load_taxonomy

        for name in (*self.taxonomies, DEFAULT_TAXONOMY):
            try:
                rules = load_taxonomy(name).differential
            except CellkitError:
                continue
            if rules:
                return rules
        return {}

    def _wbc_labels(self) -> list[str]:
        """Final labels of the boxes counted as white cells after review (:meth:`final_classes`)."""
        if "label" not in self.detections.data:
            return []
        return [lab for lab, cls in zip(self.labels(), self.final_classes(), strict=True) if cls == "wbc"]

    def _wbc_groups(self) -> list[str]:
        return [self.groups.get(lab, lab) for lab in self._wbc_labels()]

    def rejected(self) -> dict[str, int]:
        """Boxes a reviewer rejected (artefact, smudge cell, not a cell), by rejection: kept, never counted."""
        out: dict[str, int] = {}
        for lab in self.labels():
            if lab in REJECTIONS:
                out[lab] = out.get(lab, 0) + 1
        return out

    def differential(self) -> dict[str, dict[str, float]]:
        """The clinical WBC differential: {group: {"count": n, "percent": p}} over the white cells, corrections
        applied, in the taxonomy's clinical order, with "Unidentified — review" (``unknown``) last.

        Nucleated red cells (the taxonomy's ``per_100_wbc`` groups) are not white cells: they are left out here
        and reported by :meth:`nrbc`. A white-cell box labelled as a ``not_white`` group (a platelet) is counted
        as unidentified until a person decides."""
        rules = self._differential_rules()
        apart, not_white = set(rules.get("per_100_wbc", ())), set(rules.get("not_white", ()))
        counts: dict[str, int] = {}
        for key in self._wbc_groups():
            if key in apart:
                continue
            key = UNKNOWN if key in not_white else key
            counts[key] = counts.get(key, 0) + 1
        total = sum(counts.values())
        return {k: {"count": counts[k], "percent": round(100.0 * counts[k] / total, 2)} for k in self.rank(counts)}

    def rank(self, counts: Mapping[str, int]) -> list[str]:
        """Differential groups in the taxonomy's clinical order (others after them by count), "Unidentified —
        review" last: the one order of every differential, of a field or of a case."""
        order = {g: k for k, g in enumerate(self._differential_rules().get("order", ()))}
        return sorted(counts, key=lambda g: (g == UNKNOWN, order.get(g, len(order)), -counts[g], g))

    def subtypes(self, only_split: bool = True) -> dict[str, dict[str, int]]:
        """Within each differential group, the white cells by their finer final label (band and segmented
        neutrophils, the immature granulocytes' stages): {group: {node: n}}; a cell labelled with the group itself
        (the model unsure between its subtypes) counts under the group's own id ("not subtyped"). With
        ``only_split`` only groups with a subtype; without, every group (to sum over the fields of a case)."""
        out: dict[str, dict[str, int]] = {}
        above = self._above_their_group()
        for lab in self._wbc_labels():
            group = self.groups.get(lab, lab)
            if lab != UNKNOWN:
                key = group if lab in above else lab  # "Lymphoid" is a lymphocyte not subtyped, not a subtype
                out.setdefault(group, {})
                out[group][key] = out[group].get(key, 0) + 1
        return {g: dict(sorted(v.items())) for g, v in out.items() if not only_split or set(v) != {g}}

    def _above_their_group(self) -> set[str]:
        """Nodes counted as a group that lies below them ("lymphoid" as a lymphocyte)."""
        from cellkit.taxonomy import load_taxonomy

        out: set[str] = set()
        for name in self.taxonomies:
            try:
                tax = load_taxonomy(name)
            except CellkitError:
                continue
            out |= {n for n in tax.ids if (g := self.groups.get(n, n)) != n and g in tax and n in tax.path(g)}
        return out

    def nrbc(self) -> dict[str, float | None]:
        """Nucleated red cells among the white-cell boxes: {"count": n, "per_100_wbc": n per 100 white cells}
        (the white cells of :meth:`differential`); empty when nothing was classified."""
        groups = self._wbc_groups()
        if not groups:
            return {}
        apart = set(self._differential_rules().get("per_100_wbc", ()))
        n = sum(1 for g in groups if g in apart)
        white = len(groups) - n
        return {"count": n, "per_100_wbc": round(100.0 * n / white, 1) if white else None}

    def composition(self, cell_type: str = "rbc") -> dict[str, dict[str, float]]:
        """Final labels of one detector class's boxes (e.g. red-cell forms): {label: {"count", "percent"}},
        corrections applied, largest first; {} when no model labelled that class."""
        cls = self.detections.class_name == cell_type
        labels = [
            lab
            for lab, keep in zip(self.labels(), cls, strict=True)
            if keep and lab != cell_type and lab not in REJECTIONS
        ]
        counts: dict[str, int] = {}
        for lab in labels:
            counts[lab] = counts.get(lab, 0) + 1
        total = sum(counts.values())
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return {k: {"count": v, "percent": round(100.0 * v / total, 2)} for k, v in ordered}

    def to_frame(self):
        """One row per box: x1 y1 x2 y2 class confidence [leaf label cls_confidence ood_score review corrected
        shown_as p_<node>]; ``shown_as`` is the final label's display name, as on screen."""
        import pandas as pd

        d = self.detections
        frame = pd.DataFrame(np.round(d.xyxy.astype(float), 2), columns=["x1", "y1", "x2", "y2"])
        frame["class"] = d.class_name
        frame["confidence"] = np.round(d.confidence.astype(float), 4)
        if "label" in d.data:
            frame["leaf"] = d.data["leaf"]
            frame["label"] = d.data["label"]
            frame["cls_confidence"] = np.round(d.data["cls_confidence"].astype(float), 4)
            frame["ood_score"] = np.round(d.data["ood_score"].astype(float), 4)
            frame["review"] = d.data.get("review", "")
            frame["corrected"] = [self.corrections[i] if self.is_corrected(i) else "" for i in range(len(d))]
            frame["shown_as"] = self.shown_as()
            frame["added_by"] = [self.added.get(i, "") for i in range(len(d))]
            probs = np.round(d.data["node_probs"].astype(float), 6)
            for j, node in enumerate(self.node_ids):
                frame[f"p_{node}"] = probs[:, j]
        return frame

    def to_dict(self) -> dict[str, Any]:
        frame = self.to_frame()
        cells = json.loads(frame.to_json(orient="records"))
        return {
            "name": self.name,
            "image_sha256": self.image_sha256,
            "image_shape": list(self.image_shape),
            "counts": self.counts,
            "counts_reviewed": self.reviewed_counts(),  # rejected boxes out, moved boxes where the review put them
            "differential": self.differential(),
            "nrbc": self.nrbc(),
            "rejected": self.rejected(),
            "timings": self.timings,
            "models": self.models,
            "node_ids": list(self.node_ids),
            "corrections": {str(k): v for k, v in self.corrections.items()},
            "added": {str(k): v for k, v in self.added.items()},
            "groups": self.groups,
            "taxonomies": list(self.taxonomies),
            "cells": cells,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SlideResult:
        """Rebuild a result from :meth:`to_dict` output (e.g. a saved JSON report)."""
        cells = raw.get("cells", [])
        node_ids = tuple(raw.get("node_ids", ()))
        n = len(cells)
        xyxy = np.array([[c["x1"], c["y1"], c["x2"], c["y2"]] for c in cells], np.float32).reshape(n, 4)
        cls_id = np.array([DETECTION_CLASSES.index(c["class"]) for c in cells], np.int64)
        conf = np.array([c["confidence"] for c in cells], np.float32)
        data: dict[str, np.ndarray] = {}
        if n and "label" in cells[0]:
            data = {
                "leaf": np.array([c["leaf"] or "" for c in cells], dtype=object),
                "label": np.array([c["label"] or "" for c in cells], dtype=object),
                "cls_confidence": np.array([_num(c["cls_confidence"]) for c in cells], np.float32),
                "ood_score": np.array([_num(c["ood_score"]) for c in cells], np.float32),
                "review": np.array([c.get("review") or "" for c in cells], dtype=object),
                "node_probs": np.array([[_num(c.get(f"p_{k}")) for k in node_ids] for c in cells], np.float32),
            }
        return cls(
            detections=Detections(xyxy, conf, cls_id, DETECTION_CLASSES, data),
            image_shape=tuple(raw.get("image_shape", (0, 0))),
            node_ids=node_ids,
            timings=dict(raw.get("timings", {})),
            models=dict(raw.get("models", {})),
            name=raw.get("name", ""),
            image_sha256=raw.get("image_sha256", ""),
            corrections={int(k): v for k, v in raw.get("corrections", {}).items()},
            groups=dict(raw.get("groups", {})),
            taxonomies=tuple(raw.get("taxonomies", ())),
            added={int(k): v for k, v in raw.get("added", {}).items()},
        )


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _version(model: Any) -> dict[str, str]:
    spec = getattr(model, "spec", None)
    name = getattr(spec, "name", type(model).__name__)
    card = getattr(spec, "card", {}) or {}
    return {"name": name, "display": str(card.get("display_name") or name), "sha256": str(card.get("sha256", ""))}


# ---------------------------------------------------------------------------------------- pipeline
def cell_models(classifier: Any = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{detector class: classifier}: each model for the classes its card ``applies_to``, then ``extra`` on top."""
    out: dict[str, Any] = {}
    if classifier is not None:
        for cls in getattr(classifier.spec, "applies_to", CLASSIFIED):
            if cls in DETECTION_CLASSES:
                out[cls] = classifier
    for cls, model in (extra or {}).items():
        if cls not in DETECTION_CLASSES:
            raise CellkitError(f"cell_models: expected detector classes {DETECTION_CLASSES}, got {cls!r}")
        out[cls] = model
    return out


def _crop_side(spec: Any, boxes: np.ndarray) -> float | None:
    """Crop side for models whose crops are relative to the slide (``crop_reference: slide``): crop_scale x the
    median side of this image's boxes of the model's classes; None for crops relative to each cell."""
    if getattr(spec, "crop_reference", "cell") != "slide" or not len(boxes):
        return None
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    return float(spec.crop_scale) * float(np.median(sides))


def classify_boxes(
    image: np.ndarray, dets: Detections, classifier: Any | Mapping[str, Any], batch_size: int = 16
) -> tuple[Detections, tuple[str, ...]]:
    """Add each box's classifier answer to ``dets.data``; ``classifier`` is one model (for the classes its card
    applies to) or ``{detector class: model}`` (:func:`cell_models`). Returns the detections and the node ids
    of ``node_probs``' columns.

    Every model's node ids are laid side by side in ``node_probs`` (NaN outside a box's own model), so one
    table holds white-cell and red-cell answers. Batches of 16: a forward pass of 64 crops holds ~0.3 GB of
    activations, 16 about a quarter, at the same speed on CPU.
    """
    models = dict(classifier) if isinstance(classifier, Mapping) else cell_models(classifier)
    distinct = list({id(m): m for m in models.values()}.values())
    offsets, node_ids = {}, []
    for m in distinct:
        offsets[id(m)] = len(node_ids)
        node_ids += [nid for nid in m.taxonomy.ids]
    n = len(dets)
    leaf = np.full(n, "", dtype=object)
    label = np.full(n, "", dtype=object)
    review = np.full(n, "", dtype=object)
    cconf = np.full(n, np.nan, np.float32)
    ood = np.full(n, np.nan, np.float32)
    probs = np.full((n, len(node_ids)), np.nan, np.float32)
    for model in distinct:
        classes = [c for c, m in models.items() if m is model]
        idx = np.flatnonzero(np.isin(dets.class_id, [DETECTION_CLASSES.index(c) for c in classes]))
        side = _crop_side(model.spec, dets.xyxy[idx])
        scale = float(getattr(model.spec, "crop_scale", 2.0))
        group = model.taxonomy.primary_grouping()
        lo = offsets[id(model)]
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            if side is None:
                crops = [crop_box(image, dets.xyxy[i], scale=scale) for i in chunk]
            else:
                from cellkit.rbc_boxes import slide_crop

                centres = (dets.xyxy[chunk, :2] + dets.xyxy[chunk, 2:]) / 2
                crops = [slide_crop(image, (float(x), float(y)), side) for x, y in centres]
            for i, pred in zip(chunk, model.predict(crops, batch_size=batch_size), strict=True):
                leaf[i], label[i], review[i] = pred.leaf, pred.label, pred.review
                if pred.label == UNKNOWN and model.taxonomy.flagged_as:  # red cells: "uncategorised", reason kept
                    label[i] = model.taxonomy.flagged_as
                box_class, said = dets.class_names[dets.class_id[i]], group.get(pred.label, pred.label)
                if box_class in model.taxonomy.ids and said != box_class and pred.label != UNKNOWN:
                    # a box class that is itself a node (platelet): the detector's class stands, never relabelled
                    label[i] = box_class
                    seen = model.taxonomy.display(said) if said in model.taxonomy.ids else said
                    review[i] = f"the classifier sees a {seen}; counted as the detector's {box_class}"
                elif said in dets.class_names and said != box_class:  # a white-cell box the classifier calls platelet
                    label[i] = UNKNOWN
                    review[i] = f"the detector found a {box_class} where the classifier sees a {said}"
                cconf[i], ood[i] = pred.confidence, pred.ood_score
                probs[i, lo : lo + len(pred.node_probs)] = pred.node_probs
    data = dict(dets.data, leaf=leaf, label=label, review=review, cls_confidence=cconf, ood_score=ood, node_probs=probs)
    return Detections(dets.xyxy, dets.confidence, dets.class_id, dets.class_names, data), tuple(node_ids)


def image_sha256(image: np.ndarray) -> str:
    """Hash of the decoded pixels (same picture, same hash, whatever the file format)."""
    h = hashlib.sha256()
    h.update(str(image.shape).encode())
    if image.flags.c_contiguous:
        h.update(memoryview(image).cast("B"))  # no copy: a 20000 x 15000 smear would need 900 MB more
    else:
        for y0 in range(0, image.shape[0], 256):  # a view: hash row bands, same bytes as tobytes()
            h.update(np.ascontiguousarray(image[y0 : y0 + 256]).tobytes())
    return h.hexdigest()


MIN_FIELD_SIDE = 32  # px: a smaller image cannot hold one cell at any magnification the detector knows


def check_field(image: np.ndarray) -> None:
    """CellkitError for an image too small to be a smear field (a 1 x 1 px image was once counted as a white cell)."""
    h, w = image.shape[:2]
    if min(h, w) < MIN_FIELD_SIDE:
        raise CellkitError(
            f"the image is {w}x{h} px: too small to be a smear field (at least {MIN_FIELD_SIDE} px a side); "
            "crops of single cells belong on the Classify page or `cellkit classify`"
        )


def model_versions(
    detector: Any, classifier: Any | None = None, by_class: Mapping[str, Any] | None = None
) -> dict[str, dict[str, str]]:
    """{role: name, display name, sha256} of the models :func:`analyze` runs with these arguments (a result's
    ``models``): ``detector``, ``classifier`` (the white-cell model) and ``classifier_<classes>`` for the others."""
    versions = {"detector": _version(detector)}
    chosen = cell_models(classifier, by_class)
    for model in {id(m): m for m in chosen.values()}.values():
        role = (
            "classifier"
            if model is classifier
            else "classifier_" + "_".join(c for c, m in chosen.items() if m is model)
        )
        versions[role] = _version(model)
    return versions


def analyze(
    image: np.ndarray,
    detector: Any,
    classifier: Any | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    name: str = "",
    by_class: Mapping[str, Any] | None = None,
) -> SlideResult:
    """Detect every cell, classify each box with the model for its class, count.

    ``classifier`` classifies the detector classes its card ``applies_to`` (the white-cell model: wbc and
    platelet boxes); ``by_class`` adds or replaces models per class, e.g. ``{"rbc": red-cell model}``.
    ``image`` is RGB uint8 (H, W, 3) (use ``cellkit.io.read_image`` for files). ``tile`` / ``overlap``
    default to the detector card's values (pixels of the original image).
    """
    if not isinstance(image, np.ndarray):
        raise CellkitError(f"analyze: expected a numpy RGB image, got {type(image).__name__}; read it with read_image")
    check_field(image)
    t0 = time.perf_counter()
    dets = detect_tiled(image, detector, tile, overlap)
    t1 = time.perf_counter()
    node_ids: tuple[str, ...] = ()
    groups: dict[str, str] = {}
    versions = model_versions(detector, classifier, by_class)
    chosen = cell_models(classifier, by_class)
    distinct = list({id(m): m for m in chosen.values()}.values())
    if chosen:
        dets, node_ids = classify_boxes(image, dets, chosen)
        for model in distinct:
            groups.update(model.taxonomy.primary_grouping())
    t2 = time.perf_counter()
    return SlideResult(
        detections=dets,
        image_shape=(int(image.shape[0]), int(image.shape[1])),
        node_ids=node_ids,
        timings={"detect_s": round(t1 - t0, 4), "classify_s": round(t2 - t1, 4), "total_s": round(t2 - t0, 4)},
        models=versions,
        name=name,
        image_sha256=image_sha256(image),
        groups=groups,
        taxonomies=tuple(m.taxonomy.name for m in distinct),
    )


def review_zip(image: np.ndarray, result: SlideResult, scale: float = 2.0) -> bytes:
    """The classified crops as a labelled folder (zip): ``<final label>/<image>_<index>.png`` + labels.csv.

    Final label = the reviewer's correction when there is one, else the classifier's label; the
    CSV keeps both, so the folder can feed ``cellkit train classifier`` after review.
    """
    import csv
    import io
    import zipfile

    from cellkit.io import encode_png

    stem = (result.name.rsplit(".", 1)[0] or "slide").replace("/", "_") or "slide"
    labels = result.labels()
    model = result.detections.data.get("label")
    buf, table = io.BytesIO(), io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["file", "index", "class", "model_label", "final_label", "corrected"])
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(len(result.detections)):
            cls = str(result.detections.class_name[i])
            if cls not in CLASSIFIED:
                continue
            name = f"{labels[i]}/{stem}_{i:05d}.png"
            zf.writestr(name, encode_png(crop_box(image, result.detections.xyxy[i], scale=scale)))
            model_label = str(model[i]) if model is not None else ""
            writer.writerow([name, i, cls, model_label, labels[i], int(result.is_corrected(i))])
        zf.writestr("labels.csv", table.getvalue())
    return buf.getvalue()
