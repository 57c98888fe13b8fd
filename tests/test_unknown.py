"""The review verdict: OOD detectors (pytorch-ood), calibration, a held-out class, the label shown everywhere."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from cellkit.adapt import recalibrate_batchnorm
from cellkit.classify import build_tiny_classifier, load_classifier, save_classifier
from cellkit.crops import crop_box
from cellkit.errors import CellkitError
from cellkit.synth import make_crop, make_demo_smear
from cellkit.taxonomy import UNKNOWN, UNKNOWN_NAME, load_taxonomy
from cellkit.types import Prediction
from cellkit.unknown import METHODS, OodScorer, auroc, calibrate, fit_ood, mahalanobis, sharpness


def clusters(n: int, centres: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), n)
    return (centres[labels] + rng.normal(0, 1.0, (n, centres.shape[1]))).astype(np.float32), labels


@pytest.fixture(scope="module")
def synthetic():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4.0, (5, 32))  # classes 0-3 known, class 4 held out (never taught)
    train, y = clusters(600, centres[:4], 1)
    val, _ = clusters(400, centres[:4], 2)
    known, _ = clusters(400, centres[:4], 3)
    novel, _ = clusters(200, centres[4:], 4)
    head = torch.nn.Linear(32, 4)
    with torch.no_grad():  # a head that separates the known classes (nearest class mean)
        head.weight.copy_(torch.tensor(centres[:4], dtype=torch.float32))
        head.bias.copy_(torch.tensor(-0.5 * (centres[:4] ** 2).sum(1), dtype=torch.float32))
    return train, y, val, known, novel, head


@pytest.mark.parametrize("method", METHODS)
def test_a_class_never_taught_is_flagged(method, synthetic):
    train, y, val, known, novel, head = synthetic
    scorer = OodScorer.fit(method, train, y, head=head)
    score = lambda f: scorer.score(torch.from_numpy(f), head(torch.from_numpy(f))).detach().numpy()  # noqa: E731
    thr = calibrate(score(val), flag_share=0.05)
    assert np.mean(score(val) > thr) == pytest.approx(0.05, abs=0.01)
    assert np.mean(score(known) > thr) < 0.12
    if method != "energy":  # energy sees only logits, and this held-out class sits between known ones
        assert np.mean(score(novel) > thr) > 0.9
        assert auroc(score(known), score(novel)) > 0.95


def test_fast_knn_score_equals_pytorch_ood(synthetic):
    from pytorch_ood.detector import KNN

    train, y, _, known, novel, _ = synthetic
    reference = KNN(None, k=10).fit_features(torch.from_numpy(train).half().float(), torch.from_numpy(y))
    ours = OodScorer.fit("knn", train, y)
    probe = torch.from_numpy(np.concatenate([known[:50], novel[:50]]))
    np.testing.assert_allclose(ours.score(probe).numpy(), reference.predict_features(probe).numpy(), atol=1e-4)


def test_calibrate_counts_unsure_cells_towards_the_share():
    scores = np.arange(100, dtype=float)
    unsure = np.zeros(100, bool)
    unsure[:3] = True  # three low-score cells are already flagged as unsure
    thr = calibrate(scores, unsure, 0.05)
    assert np.mean((scores > thr) | unsure) == pytest.approx(0.05)
    unsure[:10] = True  # unsure alone is over budget: the score flags nothing more
    assert np.mean(scores > calibrate(scores, unsure, 0.05)) == 0
    with pytest.raises(CellkitError):
        calibrate(np.array([]))


def test_bad_method_and_shapes_say_what_they_expected():
    with pytest.raises(CellkitError, match="expected one of"):
        OodScorer("magic")
    with pytest.raises(CellkitError, match="expected features"):
        OodScorer.fit("knn", np.zeros((4, 3)), np.zeros(5))
    with pytest.raises(CellkitError, match="needs the model's linear head"):
        OodScorer.fit("vim", np.zeros((4, 3)), np.zeros(4))


def tiny_with_scorer(method: str = "knn"):
    """The tiny CNN with usable BatchNorm statistics and a detector fitted on synthetic cells of kinds 0-3."""
    clf = build_tiny_classifier(seed=2)
    known = [make_crop(i % 4, 48, i) for i in range(80)]
    recalibrate_batchnorm(clf.model, clf.preprocess(known))
    out = clf.predict_arrays(known)
    clf.scorer = OodScorer.fit(method, out["features"], np.arange(80) % 4, head=clf.model.get_classifier())
    raw = clf.scorer.score(torch.from_numpy(out["features"]), torch.from_numpy(out["logits"])).numpy()
    clf.spec.ood = {"method": method, "params": clf.scorer.params, "threshold": calibrate(raw, flag_share=0.05)}
    return clf


def test_the_verdict_labels_cells_unlike_the_training_ones_unknown():
    clf = tiny_with_scorer()
    rng = np.random.default_rng(0)
    junk = [rng.integers(0, 255, (48, 48, 3), dtype=np.uint8) for _ in range(10)]  # noise, no cell
    preds = clf.predict(junk)
    assert all(p.label == UNKNOWN and p.review for p in preds)
    assert clf.taxonomy.display(preds[0].label) == UNKNOWN_NAME
    assert preds[0].leaf in clf.taxonomy.leaves  # the model's best guess stays available
    known = clf.predict([make_crop(i % 4, 48, 500 + i) for i in range(20)])
    assert np.mean([p.label == UNKNOWN for p in known]) <= 0.25


def test_unsure_cells_go_to_review_too():
    clf = build_tiny_classifier(seed=0)  # untrained: near-uniform probabilities
    clf.spec.ood = {"min_group_prob": 0.5}
    pred = clf.predict([make_crop(0, 48, 0)])[0]
    assert pred.label == UNKNOWN and "unsure" in pred.review
    clf.spec.ood = {}
    assert clf.predict([make_crop(0, 48, 0)])[0].label != UNKNOWN


def test_sharpness_falls_with_blur_and_ignores_stain():
    crops = [make_crop(i % 4, 96, i) for i in range(8)]
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255
    sharp = sharpness(x)
    blurred = sharpness(torch.from_numpy(np.stack([cv2.GaussianBlur(c, (0, 0), 6) for c in crops])).permute(0, 3, 1, 2))
    assert (blurred < 0.5 * sharp).all()
    assert torch.allclose(sharpness(x * 0.6 + 0.2), sharp, rtol=1e-4)  # contrast and brightness do not move it


def test_out_of_focus_cells_go_to_review():
    clf = build_tiny_classifier(seed=0)
    crop = make_crop(1, 96, 3)
    clf.spec.ood = {}
    sharp = clf.predict_arrays([crop])["sharpness"][0]
    clf.spec.ood = {"min_sharpness": float(sharp) * 0.5}
    assert "out of focus" not in clf.predict([crop])[0].review
    pred = clf.predict([cv2.GaussianBlur(crop, (0, 0), 8)])[0]
    assert pred.label == UNKNOWN and "out of focus" in pred.review


def test_an_object_too_large_for_its_predicted_class_goes_to_review():
    clf = build_tiny_classifier(seed=0)
    clf.spec.framing = "nucleus"  # the cell's size comes from the framer
    smear, boxes, classes = make_demo_smear(seed=0)
    crop = crop_box(smear, boxes[list(classes).index(0)], 1.5)  # a white cell filling about 2/3 of the crop
    clf.spec.ood = {}
    assert 0.4 < clf.predict_arrays([crop])["cell_fraction"][0] < 0.9
    leaf = clf.predict([crop])[0].leaf
    clf.spec.ood = {"max_cell_fraction": {leaf: 0.3}}
    pred = clf.predict([crop])[0]
    assert pred.label == UNKNOWN and "of the crop's side" in pred.review
    clf.spec.ood = {"max_cell_fraction": {leaf: 0.9}}
    assert "of the crop's side" not in clf.predict([crop])[0].review


def test_scorer_travels_in_the_safetensors_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path))
    clf = tiny_with_scorer("knn")
    save_classifier(clf.model, clf.spec, tmp_path, clf.scorer.tensors)
    again = load_classifier("tiny")
    assert again.scorer is not None and again.scorer.method == "knn"
    crops = [make_crop(i % 6, 48, 900 + i) for i in range(8)]
    np.testing.assert_allclose(
        again.predict_arrays(crops)["ood_score"], clf.predict_arrays(crops)["ood_score"], rtol=1e-3, atol=1e-3
    )


def test_prediction_unknown_needs_a_reason():
    tax = load_taxonomy("pbc")
    probs = tax.node_probs(np.full(len(tax.leaves), 1 / len(tax.leaves)))
    with pytest.raises(CellkitError, match="review reason"):
        Prediction(probs, tax.ids, tax.leaves[0], UNKNOWN, 0.1)
    p = Prediction(probs, tax.ids, tax.leaves[0], UNKNOWN, 0.1, review="unsure")
    assert p.as_dict()["label"] == UNKNOWN and p.as_dict()["review"] == "unsure"


def test_mahalanobis_prefers_own_class():
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 1, (50, 6)), rng.normal(8, 1, (50, 6))])
    stats = fit_ood(feats, np.repeat([0, 1], 50), dim=6)
    near = mahalanobis(stats, torch.tensor(feats[:5], dtype=torch.float32))
    far = mahalanobis(stats, torch.full((5, 6), 30.0))
    assert float(far.min()) > float(near.max())
