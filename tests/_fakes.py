"""A deterministic stand-in detector for synthetic smears (cellkit.synth): finds the drawn discs by colour.

It behaves like the real detector towards the pipeline (``detect_batch`` on any crop of an image,
boxes in pixels of that crop, cut at the crop's borders), so tiling and merging are tested
without depending on trained weights.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cellkit.models import ModelSpec
from cellkit.synth import BACKGROUND, COLOURS
from cellkit.types import Detections

_PALETTE = np.array(
    [BACKGROUND, COLOURS["wbc"][0], COLOURS["wbc"][1], COLOURS["rbc"][0], COLOURS["platelet"][0]], np.float32
)
_CLASS_OF_COLOUR = {1: 0, 2: 0, 3: 1, 4: 2}  # palette index -> detector class


class ColourDetector:
    """Connected components of non-background pixels, classed by their dominant synthetic colour."""

    def __init__(self, tile: int = 640, overlap: int = 96):
        self.tile, self.overlap = tile, overlap
        self.class_names = ("wbc", "rbc", "platelet")
        self.spec = ModelSpec(
            name="colour-fake",
            task="detector",
            arch="threshold",
            weights="",
            input_size=tile,
            labels=list(self.class_names),
            card={"sha256": "0" * 64},
        )
        self.calls = 0

    def detect_batch(self, images):
        self.calls += len(images)
        return [self.detect(img) for img in images]

    def detect(self, image):
        px = image.astype(np.float32)
        dist = ((px[:, :, None, :] - _PALETTE[None, None]) ** 2).sum(-1)
        nearest = dist.argmin(-1)
        labels, n = ndimage.label(nearest > 0)
        if n == 0:
            return Detections.empty()
        boxes, classes = [], []
        for k, sl in enumerate(ndimage.find_objects(labels), start=1):
            region = nearest[sl][labels[sl] == k]
            if region.size < 4:
                continue
            colours = np.bincount(region, minlength=5)
            cls = 0 if colours[1] + colours[2] > 0.3 * region.size else _CLASS_OF_COLOUR[int(colours[1:].argmax()) + 1]
            boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
            classes.append(cls)
        if not boxes:
            return Detections.empty()
        return Detections(np.array(boxes, np.float32), np.full(len(boxes), 0.9, np.float32), np.array(classes))


def tiny_classifier_for(name: str | None = None):
    """Stands in for ``load_classifier``: an untrained tiny model of the named model's kind (white or red cells)."""
    from cellkit.classify import build_tiny_classifier
    from cellkit.errors import CellkitError
    from cellkit.models import load_spec

    kind = None
    if name is not None:
        try:
            kind = load_spec(name).applies_to
        except CellkitError:
            kind = None
    if kind and "rbc" in kind:
        clf = build_tiny_classifier("rbc12")
        clf.spec.name, clf.spec.applies_to = "tiny_rbc", ["rbc"]
        clf.spec.crop_scale, clf.spec.crop_reference = 2.0, "slide"
        return clf
    return build_tiny_classifier()


def labelled_result(labels: list[str], classes: list[str] | None = None, name: str = ""):
    """A SlideResult whose boxes already carry these final labels (white cells unless ``classes`` says otherwise),
    grouped by the PBC tree: for differential, case and report tests without any model."""
    from cellkit.slide import SlideResult
    from cellkit.taxonomy import load_taxonomy
    from cellkit.types import DETECTION_CLASSES

    n = len(labels)
    classes = classes or ["wbc"] * n
    xy = np.array([[20 * i, 0, 20 * i + 18, 18] for i in range(n)], np.float32)
    data = {
        "leaf": np.array(labels, dtype=object), "label": np.array(labels, dtype=object),
        "cls_confidence": np.ones(n, np.float32), "ood_score": np.zeros(n, np.float32),
        "node_probs": np.zeros((n, 1), np.float32),
    }  # fmt: skip
    cls = np.array([DETECTION_CLASSES.index(c) for c in classes], np.int64)
    dets = Detections(xy, np.ones(n, np.float32), cls, DETECTION_CLASSES, data)
    return SlideResult(dets, (40, 20 * n + 20), node_ids=("x",), name=name, taxonomies=("pbc",),
                       groups=load_taxonomy("pbc").primary_grouping(),
                       models={"detector": {"name": "d", "sha256": "ab"}})  # fmt: skip


def result_with_red_cells(side: float, n: int = 20):
    """A field of ``n`` red-cell boxes of ``side`` px, no other cell."""
    import numpy as np

    from cellkit.slide import SlideResult
    from cellkit.types import DETECTION_CLASSES, Detections

    xy = np.array([[10 * i, 0, 10 * i + side, side] for i in range(n)], np.float32)
    dets = Detections(xy, np.ones(n, np.float32), np.full(n, DETECTION_CLASSES.index("rbc")), DETECTION_CLASSES)
    return SlideResult(dets, (500, 500))
