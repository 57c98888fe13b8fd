"""Detector: letterbox geometry, safetensors round trip (no pickle), errors, and the bundled weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cellkit.detect import Detector, letterbox, load_detector
from cellkit.errors import CellkitError
from cellkit.models import ModelSpec, sha256_file
from cellkit.synth import make_demo_smear, make_smear


def test_letterbox_keeps_aspect_and_centres():
    img = np.zeros((100, 200, 3), np.uint8)
    out, r, (left, top) = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and r == pytest.approx(0.32) and left == 0 and top == 16
    assert (out[:16] == 114).all() and (out[16:48] == 0).all()


@pytest.fixture(scope="module")
def tiny_detector_folder(tmp_path_factory):
    """A randomly initialised yolov8n (built from yaml) saved the way `cellkit train detector` ships it."""
    import torch
    from safetensors.torch import save_file

    from cellkit._yolo import detection_model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    model = detection_model("yolov8n.yaml", nc=3)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "det.safetensors"))
    spec = ModelSpec(
        name="det",
        task="detector",
        arch="yolov8n.yaml",
        weights="det.safetensors",
        input_size=128,
        labels=["wbc", "rbc", "platelet"],
        card={"default": True},
    )
    spec.card["sha256"] = sha256_file(folder / "det.safetensors")
    spec.save(folder)
    return folder


def test_safetensors_round_trip_gives_boxes_in_image_pixels(tiny_detector_folder):
    det = load_detector(folder=tiny_detector_folder)
    assert isinstance(det, Detector) and det.version["name"] == "det"
    img, *_ = make_smear(320, 200, seed=1)
    found = det.detect(img, conf=0.0)  # untrained: keep everything to check geometry
    assert len(found) > 0
    assert (found.xyxy[:, [0, 2]] <= 320).all() and (found.xyxy[:, [1, 3]] <= 200).all() and (found.xyxy >= 0).all()
    again = load_detector("det", folder=tiny_detector_folder).detect(img, conf=0.0)
    np.testing.assert_allclose(found.xyxy, again.xyxy, atol=1e-3)  # deterministic, nothing cached between calls
    batch = det.detect_batch([img, img[:100, :150].copy()], conf=0.0)
    np.testing.assert_allclose(batch[0].xyxy, found.xyxy, atol=1e-2)
    assert (batch[1].xyxy[:, 2] <= 150).all()


def test_bad_inputs_and_missing_or_tampered_weights(tiny_detector_folder, tmp_path):
    det = load_detector(folder=tiny_detector_folder)
    with pytest.raises(CellkitError, match="RGB uint8"):
        det.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(CellkitError, match="cellkit train detector"):
        load_detector(folder=tmp_path)
    card = json.loads((tiny_detector_folder / "det.json").read_text())
    card["card"]["sha256"] = "0" * 64
    (tmp_path / "det.json").write_text(json.dumps(card))
    (tmp_path / "det.safetensors").write_bytes((tiny_detector_folder / "det.safetensors").read_bytes())
    with pytest.raises(CellkitError, match="sha256"):
        load_detector("det", folder=tmp_path)
    card["input_size"], card["labels"] = 128, ["a", "b"]
    card["card"].pop("sha256")
    (tmp_path / "det.json").write_text(json.dumps(card))
    with pytest.raises(CellkitError, match="do not fit"):
        load_detector("det", folder=tmp_path)


@pytest.mark.realdata
def test_bundled_detector_finds_white_cells_on_txl_test(shared_data):
    """WBC recall (IoU >= 0.5) of the shipped weights on a sample of held-out TXL-PBC test images."""
    from cellkit.config import weights_dir
    from cellkit.io import read_image
    from cellkit.models import list_specs

    if not list_specs(weights_dir(), task="detector"):
        pytest.skip("no bundled detector in weights/")
    det = load_detector()  # the bundled default
    images = sorted((shared_data / "txl_pbc" / "images" / "test").glob("*.png"))[::6][:20]
    hit = total = 0
    for path in images:
        img = read_image(path)
        h, w = img.shape[:2]
        rows = np.loadtxt(shared_data / "txl_pbc" / "labels" / "test" / f"{path.stem}.txt", ndmin=2)
        truth = rows[rows[:, 0] == 0, 1:] * [w, h, w, h]
        truth = np.c_[truth[:, :2] - truth[:, 2:] / 2, truth[:, :2] + truth[:, 2:] / 2]
        found = det.detect(img)
        pred = found.xyxy[found.class_id == 0]
        for t in truth:
            total += 1
            if len(pred):
                x1, y1 = np.maximum(t[0], pred[:, 0]), np.maximum(t[1], pred[:, 1])
                x2, y2 = np.minimum(t[2], pred[:, 2]), np.minimum(t[3], pred[:, 3])
                inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
                union = (t[2] - t[0]) * (t[3] - t[1]) + (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1]) - inter
                hit += int((inter / union).max() >= 0.5)
    assert total >= 15 and hit / total >= 0.9, f"WBC recall {hit}/{total}"


def test_loading_the_detector_keeps_corrupt_files_a_clear_error(tiny_detector_folder):
    """ultralytics patches PIL.Image.open on import (pip-installing pi-heif); cellkit undoes that."""
    from cellkit.io import read_image

    load_detector(folder=tiny_detector_folder)
    with pytest.raises(CellkitError, match="not a readable image"):
        read_image(b"\xff\xd8\xff not a jpeg", name="broken.jpg")


def test_bundled_detector_finds_the_demo_smear_cells():
    """The Slide page's demo smear must show real counts with the shipped weights (no ../shared needed)."""
    from cellkit.config import weights_dir
    from cellkit.models import list_specs

    if not list_specs(weights_dir(), task="detector"):
        pytest.skip("no bundled detector in weights/")
    img, _boxes, classes = make_demo_smear(seed=5)
    counts = load_detector().detect(img).counts()
    assert counts["wbc"] == int(np.sum(classes == 0))
    assert abs(counts["rbc"] - int(np.sum(classes == 1))) <= 2
