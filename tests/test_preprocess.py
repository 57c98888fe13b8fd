"""One preprocessing built from the spec: training, evaluation and inference feed the network the same input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cellkit.classify import build_tiny_classifier
from cellkit.colour import white_balance
from cellkit.errors import CellkitError
from cellkit.io import encode_png, read_image
from cellkit.preprocess import Preprocess
from cellkit.taxonomy import load_taxonomy
from cellkit.train.data import load_image_set

REFERENCE = (240.0, 222.0, 205.0)


def drawn_cell(seed: int, side: int = 150, cell: float = 0.2) -> np.ndarray:
    """A beige field with pink red cells and a white cell whose radius is ``cell`` of the side."""
    rng = np.random.default_rng(seed)
    img = np.empty((side, side, 3), np.float32)
    img[:] = REFERENCE
    yy, xx = np.mgrid[:side, :side]
    for _ in range(8):
        cx, cy = rng.uniform(0, side, 2)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < (0.1 * side) ** 2] = (215, 150, 150)
    c = side / 2 + rng.uniform(-3, 3, 2)
    img[(xx - c[0]) ** 2 + (yy - c[1]) ** 2 < (cell * side) ** 2] = (205, 185, 215)
    img[(xx - c[0] - 4) ** 2 + (yy - c[1]) ** 2 < (0.6 * cell * side) ** 2] = (95, 45, 135)
    return np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)


def test_training_evaluation_and_inference_agree_on_the_same_crops(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "data"
    crops = {}
    for k, node in enumerate(("lymphocyte", "monocyte")):
        (root / node).mkdir(parents=True)
        for i in range(4):  # tight (cell fills the crop), PBC-like and loose crops: framing must even them out
            crop = drawn_cell(10 * k + i, cell=(0.35, 0.2, 0.1, 0.2)[i])
            (root / node / f"{node}_{i}.png").write_bytes(encode_png(crop))
            crops[f"{node}/{node}_{i}.png"] = read_image(root / node / f"{node}_{i}.png")
    clf = build_tiny_classifier(input_size=48)
    spec = clf.spec
    spec.view, spec.framing, spec.crop_scale, spec.background = 0.7, "nucleus", 2.5, list(REFERENCE)
    spec.resample_size = 64  # the training cache's size: inference resamples through it, as training did
    tax = load_taxonomy("pbc")

    # training: the cache holds framed, viewed crops at the cache size, white-balanced once to the reference
    cached = load_image_set(root, tax, 64, progress=False, view=0.7, framing="nucleus", crop_scale=2.5)
    balanced = np.stack([white_balance(im, REFERENCE) for im in cached.images])
    training = Preprocess(48, tuple(spec.mean), tuple(spec.std))(list(balanced))
    # evaluation (cellkit evaluate): the files read again, through the classifier's preprocessing
    from cellkit.train.data import index_folder

    paths, _ = index_folder(root, tax)
    evaluation = clf.preprocess([read_image(root / p) for p in paths])
    # inference: the files as uploaded
    inference = clf.preprocess([crops[p] for p in cached.paths])

    assert cached.paths == paths
    for name, other in (("training", training), ("evaluation", evaluation)):
        # normalised units (std 0.5: 0.015 = 0.75 % of the range). What remains is the white balance, estimated
        # on the cache in training and on the input at inference; without resample_size the gap is 0.021.
        gap = (other - inference).abs().mean(dim=(1, 2, 3))
        assert gap.max() < 0.015, f"{name} differs from inference by {gap.max():.4f}"


def test_inference_resamples_through_the_training_cache_size():
    """A model trained from a 128 px cache sees 128 -> 112 px crops; straight to 112 px is another picture."""
    rng = np.random.default_rng(3)
    crop = np.clip(drawn_cell(5, side=288).astype(int) + rng.integers(-40, 40, (288, 288, 3)), 0, 255).astype(np.uint8)
    direct = Preprocess(112, view=0.7)([crop])
    through = Preprocess(112, view=0.7, resample_size=128)([crop])
    training = Preprocess(112)([Preprocess(112, view=0.7).canonical(crop, 128)])  # the cache, then the network
    assert torch.equal(through, training)
    assert (direct - through).abs().mean() > 0.01  # the skew the spec field removes is real


def test_colour_normalisation_is_an_identity_on_reference_stained_images():
    crop = drawn_cell(0)
    plain = Preprocess(48, view=0.7)([crop])
    balanced = Preprocess(48, view=0.7, background=REFERENCE)([crop])
    assert (balanced - plain).abs().max() < 3 / 255 / 0.5  # within 3 grey levels


def test_a_labs_fixed_background_replaces_per_crop_estimates():
    crop = drawn_cell(1)
    tinted = np.clip(crop * np.array([0.8, 1.0, 1.1]), 0, 255).astype(np.uint8)
    lab_bg = tuple(np.array(REFERENCE) * [0.8, 1.0, 1.1])
    fixed = Preprocess(48, background=REFERENCE, source_background=lab_bg)([tinted])
    reference = Preprocess(48, background=REFERENCE)([crop])
    assert (fixed - reference).abs().mean() < 0.03


def test_bad_settings_say_what_they_expected():
    with pytest.raises(CellkitError, match="framing: expected one of"):
        Preprocess(48, framing="magic")
    with pytest.raises(CellkitError, match="size: expected a positive"):
        Preprocess(0)
    assert Preprocess(32)([]).shape == (0, 3, 32, 32)
    assert torch.isfinite(Preprocess(32, framing="nucleus")([np.zeros((20, 30), np.uint8)])).all()


def test_the_training_cache_follows_the_framers_code(tmp_path, monkeypatch):
    import cellkit.framing

    monkeypatch.setenv("CELLKIT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "data" / "lymphocyte").mkdir(parents=True)
    (tmp_path / "data" / "lymphocyte" / "LY_0.png").write_bytes(encode_png(drawn_cell(0)))
    tax = load_taxonomy("pbc")
    load_image_set(tmp_path / "data", tax, 32, progress=False, framing="nucleus")
    copy = tmp_path / "framing.py"
    copy.write_text(Path(cellkit.framing.__file__).read_text() + "\n# changed\n")
    monkeypatch.setattr(cellkit.framing, "__file__", str(copy))
    load_image_set(tmp_path / "data", tax, 32, progress=False, framing="nucleus")
    assert len(list((tmp_path / "cache").glob("cls_*.npz"))) == 2
