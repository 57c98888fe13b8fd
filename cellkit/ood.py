"""Crops from other labs: does the classifier spread them over classes, and does the OOD score notice?

Uses a YOLO-format detection set with a ``metadata.csv`` naming each image's source (TXL-PBC:
PBC, Raabin-WBC, BCCD, BCDD). White-cell boxes (class 0) are cut with ``crop_box`` at the model's
``crop_scale`` - the same framing the slide pipeline uses - and classified.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from cellkit.crops import crop_box
from cellkit.errors import CellkitError
from cellkit.io import read_image
from cellkit.taxonomy import UNKNOWN


def yolo_wbc_crops(
    root: str | Path,
    scale: float = 2.0,
    sources: list[str] | None = None,
    max_per_source: int = 0,
    wbc_class: int = 0,
    seed: int = 0,
) -> dict[str, list[tuple[str, np.ndarray]]]:
    """WBC crops per source: ``{source: [(image/box name, crop), ...]}`` from images/ + labels/."""
    root = Path(root)
    meta = root / "metadata.csv"
    if not meta.is_file():
        raise CellkitError(f"{meta} not found; expected a YOLO folder with metadata.csv (TXL-PBC layout)")
    with meta.open(newline="", encoding="utf-8") as fh:
        source_of = {row["New_Image_Name"]: row["Source_Dataset"] for row in csv.DictReader(fh)}
    images = sorted((root / "images").rglob("*.png")) + sorted((root / "images").rglob("*.jpg"))
    rng = np.random.default_rng(seed)
    rng.shuffle(images)
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for path in images:
        source = source_of.get(path.name)
        if source is None or (sources and source not in sources):
            continue
        if max_per_source and len(out.get(source, [])) >= max_per_source:
            continue
        label = root / "labels" / path.parent.name / (path.stem + ".txt")
        if not label.is_file():
            continue
        rows = [line.split() for line in label.read_text().splitlines() if line.strip()]
        boxes = [list(map(float, r[1:5])) for r in rows if int(float(r[0])) == wbc_class]
        if not boxes:
            continue
        image = read_image(path)
        h, w = image.shape[:2]
        for k, (cx, cy, bw, bh) in enumerate(boxes):
            xyxy = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
            if xyxy[2] - xyxy[0] < 4 or xyxy[3] - xyxy[1] < 4:
                continue
            out.setdefault(source, []).append((f"{path.name}#{k}", crop_box(image, xyxy, scale)))
            if max_per_source and len(out[source]) >= max_per_source:
                break
    return out


def source_report(clf: Any, crops_by_source: dict[str, list[tuple[str, np.ndarray]]]) -> dict[str, dict[str, Any]]:
    """Per source: n, predicted group shares (forced choice), OOD score median, share flagged for review."""
    group = clf.taxonomy.primary_grouping()
    report: dict[str, dict[str, Any]] = {}
    for source, items in sorted(crops_by_source.items()):
        if not items:
            continue
        preds = clf.predict([c for _, c in items])
        counts = Counter(group[p.leaf] for p in preds)
        scores = np.array([p.ood_score for p in preds])
        report[source] = {
            "n": len(preds),
            "ood_score_median": round(float(np.median(scores)), 3),
            "ood_flagged": round(float(np.mean([p.label == UNKNOWN for p in preds])), 3),  # the review verdict
            "top_class_share": round(max(counts.values()) / len(preds), 3),
            "mean_confidence_leaf": round(float(np.mean([p.prob(p.leaf) for p in preds])), 3),
            **{f"share_{k}": round(counts.get(k, 0) / len(preds), 3) for k in clf.taxonomy.group_ids},
        }
    return report
