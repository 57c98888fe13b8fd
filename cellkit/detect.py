"""Cell detector (wbc / rbc / platelet): a YOLOv8 network run directly, without ultralytics' predictor.

Weights are a safetensors state dict plus a JSON model card (``weights/detector.json``); the
network is rebuilt from its model yaml (``spec.arch``), so loading never unpickles anything.
Inference letterboxes each image to ``spec.input_size``, runs the network in inference mode and
applies ultralytics' NMS, then maps boxes back to pixels of the image given. No state is kept
between calls, so one cached detector serves every browser session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cellkit.errors import CellkitError
from cellkit.models import ModelSpec, check_model_ref, default_spec, load_spec, sha256_file
from cellkit.types import DETECTION_CLASSES, Detections

PAD_VALUE = 114  # ultralytics' letterbox grey


class DetectorLike(Protocol):
    """What the slide pipeline needs: batch detection plus a name/version for the report."""

    spec: ModelSpec

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio so the longer side is ``size``; pad to size x size (centred).

    Returns the padded image, the scale factor and the (left, top) padding.
    """
    import cv2

    h, w = image.shape[:2]
    r = size / max(h, w)
    nh, nw = max(1, round(h * r)), max(1, round(w * r))
    interp = cv2.INTER_AREA if r < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nh, nw) != (h, w) else image
    top, left = (size - nh) // 2, (size - nw) // 2
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    out[top : top + nh, left : left + nw] = resized
    return out, r, (left, top)


class Detector:
    """YOLO network + model card. ``detect(image)`` returns boxes in pixels of ``image``."""

    def __init__(self, model: Any, spec: ModelSpec, conf: float = 0.25, iou: float = 0.5, max_det: int = 1000):
        if spec.task != "detector":
            raise CellkitError(f"model {spec.name!r} is a {spec.task}, not a detector; pick a detector card")
        self.model = model.eval()
        self.spec = spec
        self.conf = float(spec.card.get("conf", conf))
        self.iou = float(spec.card.get("iou", iou))
        self.max_det = max_det
        self.class_names = tuple(spec.labels) or DETECTION_CLASSES

    @property
    def tile(self) -> int:
        """Tile side in pixels of the original image used for large images (card ``tile``)."""
        return int(self.spec.card.get("tile", 640))

    @property
    def overlap(self) -> int:
        """Tile overlap in pixels; larger than the largest cell (card ``overlap``)."""
        return int(self.spec.card.get("overlap", 192))

    @property
    def version(self) -> dict[str, str]:
        return {"name": self.spec.name, "sha256": str(self.spec.card.get("sha256", ""))}

    def detect(self, image: np.ndarray, conf: float | None = None) -> Detections:
        """Detect cells in one RGB uint8 image (no tiling; see ``cellkit.slide`` for large images)."""
        return self.detect_batch([image], conf=conf)[0]

    def detect_batch(self, images: Sequence[np.ndarray], conf: float | None = None) -> list[Detections]:
        """Detect cells in several RGB uint8 images at once (one forward pass)."""
        import torch

        from cellkit._yolo import nms

        if not len(images):
            return []
        size = int(self.spec.input_size)
        batch, metas = [], []
        for img in images:
            if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
                raise CellkitError(f"detect: expected an RGB uint8 image (H, W, 3), got {img.shape} {img.dtype}")
            padded, r, pad = letterbox(img, size)
            batch.append(padded)
            metas.append((r, pad, img.shape[:2]))
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.inference_mode():
            out = self.model(x)
            out = out[0] if isinstance(out, (list, tuple)) else out
            kept = nms(out, conf if conf is not None else self.conf, self.iou, self.max_det)
        results = []
        for det, (r, (left, top), (h, w)) in zip(kept, metas, strict=True):
            det = det.cpu().numpy()
            if not len(det):
                results.append(Detections.empty(self.class_names))
                continue
            xyxy = det[:, :4].copy()
            xyxy[:, [0, 2]] = np.clip((xyxy[:, [0, 2]] - left) / r, 0, w)
            xyxy[:, [1, 3]] = np.clip((xyxy[:, [1, 3]] - top) / r, 0, h)
            ok = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            results.append(
                Detections(xyxy[ok], np.clip(det[ok, 4], 0, 1), det[ok, 5].astype(np.int64), self.class_names)
            )
        return results


def load_detector(name: str | None = None, folder: str | Path | None = None) -> Detector:
    """The bundled detector (default card) or one by name, from safetensors weights (no pickle)."""
    if name is not None:  # a bad name is said as it is, without the training hint
        check_model_ref(name)
    try:
        spec = load_spec(name, folder) if name is not None else default_spec("detector", folder)
    except CellkitError as exc:
        raise CellkitError(f"{exc}; train one with `cellkit train detector`") from None
    path = Path(folder) / spec.weights if folder else spec.weights_path
    if not path.is_file():
        raise CellkitError(f"detector weights {path} not found; train one with `cellkit train detector`")
    from cellkit._yolo import detection_model

    model = detection_model(spec.arch, nc=len(spec.labels))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError:  # shape mismatch
        missing, unexpected = ["(shapes differ)"], []
    if missing or unexpected:
        raise CellkitError(
            f"detector weights {path.name} do not fit {spec.arch} with {len(spec.labels)} classes "
            f"(missing {len(missing)}, unexpected {len(unexpected)} tensors); retrain with `cellkit train detector`"
        )
    if spec.card.get("sha256") and spec.card["sha256"] != sha256_file(path):
        raise CellkitError(f"detector weights {path.name} do not match the sha256 in {spec.name}.json; re-download")
    model.fuse(verbose=False) if hasattr(model, "fuse") else None
    return Detector(model, spec)
