"""`cellkit train detector` end to end on a tiny synthetic YOLO data set (a few seconds, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.data_yolo import voc_to_yolo
from cellkit.errors import CellkitError
from cellkit.io import encode_png
from cellkit.synth import make_smear


def _yolo_set(root, counts=(6, 3, 3)):
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for k in range(n):
            w, h = 160, 128
            img, boxes, cls = make_smear(w, h, n_wbc=2, n_rbc=6, n_platelet=2, seed=100 * len(split) + k)
            (root / "images" / split / f"{split}{k}.png").write_bytes(encode_png(img))
            c = (boxes[:, :2] + boxes[:, 2:]) / 2 / [w, h]
            s = (boxes[:, 2:] - boxes[:, :2]) / [w, h]
            rows = [
                f"{int(k_)} {a:.6f} {b:.6f} {c_:.6f} {d:.6f}" for k_, (a, b), (c_, d) in zip(cls, c, s, strict=True)
            ]
            (root / "labels" / split / f"{split}{k}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_train_detector_cli_end_to_end(tmp_path):
    txl = _yolo_set(tmp_path / "txl")
    out = tmp_path / "weights"
    args = ["train", "detector", "--txl", str(txl), "--no-cbc", "--imgsz", "64", "--epochs", "1", "--batch", "4"]
    result = CliRunner().invoke(app, [*args, "--name", "tinydet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = json.loads((out / "tinydet.json").read_text())
    assert card["task"] == "detector" and card["arch"] == "yolov8n.yaml" and card["input_size"] == 64
    assert card["labels"] == ["wbc", "rbc", "platelet"]
    assert set(card["card"]["metrics"]["per_class"]) <= {"wbc", "rbc", "platelet"}
    assert "train detector" in card["card"]["command"] and card["card"]["epochs_completed"] == 1

    from cellkit.detect import load_detector
    from cellkit.models import sha256_file

    assert card["card"]["sha256"] == sha256_file(out / "tinydet.safetensors")
    det = load_detector("tinydet", folder=out)  # safetensors, rebuilt from the yaml: no pickle
    img, *_ = make_smear(160, 128, seed=1)
    assert det.detect(img, conf=0.0).xyxy.shape[1] == 4


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    txl = _yolo_set(tmp_path / "txl", (1, 1, 1))
    result = CliRunner().invoke(app, ["train", "detector", "--txl", str(txl), "--no-cbc", "--name", "none", "--resume"])
    assert isinstance(result.exception, CellkitError) and "nothing to resume" in str(result.exception)


def test_missing_data_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["train", "detector", "--txl", str(tmp_path), "--no-cbc"])
    assert isinstance(result.exception, CellkitError) and "--txl" in str(result.exception)


def test_voc_conversion(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text(
        "<annotation><size><width>200</width><height>100</height></size>"
        "<object><name>WBC</name><bndbox><xmin>10</xmin><ymin>20</ymin><xmax>50</xmax><ymax>60</ymax></bndbox></object>"
        "<object><name>Platelets</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>"
        "<object><name>dust</name><bndbox><xmin>0</xmin><ymin>0</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>"
        "</annotation>"
    )
    lines, size = voc_to_yolo(xml)
    assert size == (200, 100) and len(lines) == 2
    assert np.allclose([float(v) for v in lines[0].split()], [0, 0.15, 0.4, 0.2, 0.4])
    assert lines[1].startswith("2 ")
    bad = tmp_path / "b.xml"
    bad.write_text("<annotation></annotation>")
    with pytest.raises(CellkitError, match="size"):
        voc_to_yolo(bad)


def _chula_set(root, n=4):
    """Chula layout: images/<n>.jpg and labels/<n>.txt with one ``x y class`` line per red cell."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for k in range(1, n + 1):
        img, boxes, cls = make_smear(160, 128, n_wbc=0, n_rbc=8, n_platelet=0, seed=500 + k)
        Image.fromarray(img).save(root / "images" / f"{k}.jpg", quality=95)
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        rows = [f"{x:.0f} {y:.0f} 0" for (x, y), c in zip(centres, cls, strict=True) if c == 1]
        (root / "labels" / f"{k}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_fine_tune_from_a_detector_with_chula_boxes_from_points(tmp_path):
    import torch
    from safetensors.torch import load_file

    txl = _yolo_set(tmp_path / "txl")
    out = tmp_path / "weights"
    base = ["train", "detector", "--txl", str(txl), "--no-cbc", "--imgsz", "64", "--epochs", "1", "--batch", "4"]
    assert CliRunner().invoke(app, [*base, "--name", "first", "--out", str(out)]).exit_code == 0
    chula = _chula_set(tmp_path / "chula")
    import os

    os.environ["CELLKIT_WEIGHTS_DIR"] = str(out)  # --init-from finds "first" among the bundled models
    try:
        args = [*base, "--name", "tuned", "--out", str(out), "--init-from", "first", "--chula", str(chula)]
        result = CliRunner().invoke(app, args)
    finally:
        del os.environ["CELLKIT_WEIGHTS_DIR"]
    assert result.exit_code == 0, result.output
    card = json.loads((out / "tuned.json").read_text())["card"]
    assert "Chula" in card["data"]["train"] and card["data"]["provenance"]["chula_train_images"] >= 2
    assert "fine-tuned from the bundled 'first'" in card["framework"]
    first, tuned = load_file(str(out / "first.safetensors")), load_file(str(out / "tuned.safetensors"))
    from cellkit._yolo import build_yolo

    fresh = build_yolo("yolov8n.yaml", nc=3).model.state_dict()
    key = next(k for k in first if k.endswith("conv.weight") and first[k].numel() > 1000)
    assert torch.dist(tuned[key], first[key]) < torch.dist(fresh[key].float(), first[key])  # it started from "first"
    from cellkit import config

    labels = sorted((config.cache_dir() / "det_data" / "tuned" / "chula" / "labels" / "train").glob("*.txt"))
    assert len(labels) >= 2 and all(p.read_text().strip() for p in labels)  # red-cell boxes from the points
