"""``cellkit explain IMAGE --method ... --node ... --out map.png [--npy map.npy]``."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from cellkit.classify import build_tiny_classifier, save_classifier
from cellkit.cli import main
from cellkit.synth import make_crop


@pytest.fixture
def crop_file(tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    clf = build_tiny_classifier(input_size=32)
    clf.spec.card = {"default": True}
    save_classifier(clf.model, clf.spec, weights)
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(weights))
    path = tmp_path / "cell.png"
    Image.fromarray(make_crop(0, 72, seed=5)).save(path)
    return path


def run(monkeypatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["cellkit", "explain", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "ig", "saliency", "gradcampp"])
def test_writes_overlay_png_and_npy(crop_file, tmp_path, monkeypatch, capsys, method):
    out, npy = tmp_path / f"{method}.png", tmp_path / f"{method}.npy"
    code = run(monkeypatch, crop_file, "--method", method, "--node", "myeloid_immature", "--out", out, "--npy", npy)
    assert code == 0
    png = np.asarray(Image.open(out))
    assert png.shape == (72, 72, 3)
    values = np.load(npy)
    assert values.shape == (32, 32) and values.dtype == np.float32 and 0 <= values.min() <= values.max() <= 1
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{method} node=myeloid_immature") and "deletion_auc=" in line


def test_default_node_is_the_predicted_label(crop_file, tmp_path, monkeypatch, capsys):
    from cellkit.io import read_image

    assert run(monkeypatch, crop_file, "--out", tmp_path / "m.png", "--no-faithfulness") == 0
    label = build_tiny_classifier(input_size=32).predict([read_image(crop_file)])[0].label
    assert f"gradcam node={label} " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--node", "macrophage"], "unknown node 'macrophage'; expected one of: myeloid, myeloid_immature"),
        (["--method", "shap"], "unknown method 'shap'"),
        (["--cmap", "rainbowish"], "unknown colour map"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(crop_file, tmp_path, monkeypatch, capsys, args, message):
    out = tmp_path / "m.png"
    assert run(monkeypatch, crop_file, "--out", out, *args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not out.exists()


def test_unreadable_image_and_missing_model(crop_file, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    assert run(monkeypatch, bad, "--out", tmp_path / "m.png") == 2
    assert capsys.readouterr().err.startswith("error: ")
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path / "empty"))
    assert run(monkeypatch, crop_file, "--out", tmp_path / "m.png") == 2
    assert "cellkit train classifier" in capsys.readouterr().err


def test_npy_and_out_the_same_file_is_refused(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from cellkit.classify import build_tiny_classifier, save_classifier
    from cellkit.synth import make_crop
    from tests._cli import run_cli

    clf = build_tiny_classifier()
    clf.spec.card = {"default": True}
    save_classifier(clf.model, clf.spec, tmp_path / "w")
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path / "w"))
    Image.fromarray(make_crop(0, 64, 0)).save(tmp_path / "cell.png")
    out = tmp_path / "same.png"
    code, _, err = run_cli(monkeypatch, capsys, "explain", tmp_path / "cell.png", "--out", out, "--npy", out)
    assert code == 2 and "its own file" in err and not out.exists()
