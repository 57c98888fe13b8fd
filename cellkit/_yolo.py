"""Fully offline ultralytics: no downloads, no telemetry, no auto-install, fonts from matplotlib.

Import ``yolo()`` from here instead of importing ultralytics directly: the environment variables
and the settings file must be in place *before* ultralytics is imported for the first time.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from cellkit import config

_READY = False


def _prepare() -> None:
    global _READY
    if _READY:
        return
    cfg = Path(os.environ.get("YOLO_CONFIG_DIR") or config.cache_dir() / "ultralytics")
    cfg.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(cfg)
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    try:  # ultralytics wants Arial for plots/labels and would download it: give it DejaVu Sans
        import matplotlib

        font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        for name in ("Arial.ttf", "Arial.Unicode.ttf"):
            if font.is_file() and not (cfg / name).exists():
                shutil.copyfile(font, cfg / name)
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        pass
    from ultralytics.utils import SETTINGS

    _unpatch_pil()

    wanted = {"sync": False, "hub": False, "wandb": False, "mlflow": False, "tensorboard": False, "clearml": False,
              "raytune": False, "comet": False, "dvc": False, "neptune": False}  # fmt: skip  # no logger integrations
    wanted = {k: v for k, v in wanted.items() if k in SETTINGS and SETTINGS[k] != v}
    if wanted:
        SETTINGS.update(wanted)
    _READY = True


def _unpatch_pil() -> None:
    """Undo ultralytics' global ``PIL.Image.open`` patch (it tries to pip-install pi-heif on unknown files).

    With the patch, reading a corrupt upload anywhere in the process raises ModuleNotFoundError instead
    of PIL's UnidentifiedImageError, which ``cellkit.io`` turns into a clear CellkitError.
    """
    from PIL import Image
    from ultralytics.utils import patches

    if getattr(patches, "_image_open", None) is not None and Image.open is getattr(patches, "image_open", None):
        Image.open = patches._image_open


def yolo_class() -> Any:
    """The ``ultralytics.YOLO`` class, imported with the offline environment in place."""
    _prepare()
    from ultralytics import YOLO

    return YOLO


def build_yolo(arch: str = "yolov8n.yaml", nc: int = 3) -> Any:
    """A fresh, randomly initialised YOLO built from a model yaml (never a downloaded *.pt)."""
    if not arch.endswith((".yaml", ".yml")):
        from cellkit.errors import CellkitError

        raise CellkitError(f"detector arch must be a model yaml such as 'yolov8n.yaml', got {arch!r}")
    yolo_cls = yolo_class()
    model = yolo_cls(arch, task="detect")
    if model.model.yaml.get("nc") != nc:
        from ultralytics.nn.tasks import DetectionModel

        model.model = DetectionModel(arch, nc=nc, verbose=False)
    return model


def detection_model(arch: str = "yolov8n.yaml", nc: int = 3) -> Any:
    """A bare ultralytics ``DetectionModel`` (torch module) built from a model yaml."""
    _prepare()
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(arch, nc=nc, verbose=False)


def nms(prediction: Any, conf: float, iou: float, max_det: int = 1000) -> list[Any]:
    """ultralytics' class-aware NMS on raw YOLO output; one (n, 6) tensor x1 y1 x2 y2 conf cls per image."""
    _prepare()
    from ultralytics.utils.nms import non_max_suppression

    return non_max_suppression(prediction, conf_thres=conf, iou_thres=iou, max_det=max_det)
