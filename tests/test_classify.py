"""Classifier inference: hierarchical probabilities, labels, preprocessing, save/load, OOD, real data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cellkit.classify import Classifier, build_tiny_classifier, load_classifier, save_classifier
from cellkit.errors import CellkitError
from cellkit.models import ModelSpec
from cellkit.preprocess import Preprocess
from cellkit.synth import make_crop
from cellkit.taxonomy import load_taxonomy
from cellkit.unknown import fit_ood


def preprocess(images, size, mean, std, view=1.0, background=None):
    """The spec-built pipeline with these settings (no framing)."""
    return Preprocess(size, tuple(mean), tuple(std), view, tuple(background or ()))(images)


@pytest.fixture(scope="module")
def tiny() -> Classifier:
    return build_tiny_classifier(seed=1)


def crops(n: int = 6, size: int = 48) -> list[np.ndarray]:
    return [make_crop(i % 6, size, i) for i in range(n)]


def test_node_probabilities_are_consistent(tiny):
    tax = tiny.taxonomy
    x = tiny.preprocess(crops())
    p = tiny.node_probs(x).detach().numpy()
    assert p.shape == (6, len(tax.ids))
    roots = [tax.ids.index(r) for r in tax.roots]
    np.testing.assert_allclose(p[:, roots].sum(1), 1.0, atol=1e-5)
    for node in tax.ids:  # every inner node is the sum of its children
        kids = tax.children(node)
        if kids:
            np.testing.assert_allclose(
                p[:, tax.ids.index(node)], p[:, [tax.ids.index(k) for k in kids]].sum(1), atol=1e-5
            )


def test_node_probs_are_differentiable(tiny):
    x = tiny.preprocess(crops(2)).requires_grad_(True)
    tiny.node_probs(x)[:, tiny.taxonomy.ids.index("myeloid")].sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_predict_leaf_label_confidence(tiny):
    preds = tiny.predict(crops(5), batch_size=2)
    assert len(preds) == 5
    tax = tiny.taxonomy
    for pred in preds:
        assert pred.leaf in tax.leaves
        assert pred.label == tax.deepest_confident(pred.node_probs, tiny.spec.threshold)
        assert pred.confidence == pytest.approx(pred.prob(pred.label))
        assert pred.ood is False and pred.ood_score == 0.0  # no OOD statistics in the tiny model
        row = pred.as_dict()
        assert {f"p_{n}" for n in tax.ids} <= set(row)
    assert tiny.predict([]) == []


def test_uncertain_subtype_stops_at_parent():
    tax = load_taxonomy("pbc")
    leaf = np.zeros(len(tax.leaves), np.float32)
    leaf[tax.leaves.index("myelocyte")] = 0.45
    leaf[tax.leaves.index("metamyelocyte")] = 0.45
    leaf[tax.leaves.index("lymphocyte")] = 0.10
    assert tax.deepest_confident(tax.node_probs(leaf), 0.5) == "myeloid_immature"


def test_preprocess_handles_shapes_and_rejects_garbage(tiny):
    grey = np.full((30, 50), 200, np.uint8)
    rgba = np.zeros((40, 40, 4), np.uint8)
    wide = make_crop(0, 64, 0)[:32]
    x = preprocess([grey, rgba, wide, make_crop(1, 100, 0)], 32, [0.5] * 3, [0.5] * 3)
    assert x.shape == (4, 3, 32, 32) and torch.isfinite(x).all()
    with pytest.raises(CellkitError, match="expected an RGB crop"):
        tiny.preprocess([np.zeros((4, 4, 7), np.uint8)])


def _bullseye(side: int = 100, inner: float = 0.5) -> np.ndarray:
    """Grey field with a red centre square covering ``inner`` of the side."""
    img = np.full((side, side, 3), 200, np.uint8)
    a, b = round(side * (1 - inner) / 2), round(side * (1 + inner) / 2)
    img[a:b, a:b] = (255, 0, 0)
    return img


def test_view_keeps_the_centre_of_the_crop():
    img = _bullseye(100, 0.5)
    whole = preprocess([img], 40, [0.0] * 3, [1.0] * 3)[0]
    centre = preprocess([img], 40, [0.0] * 3, [1.0] * 3, view=0.5)[0]
    red = lambda x: float(((x[0] > 0.9) & (x[1] < 0.1)).float().mean())  # noqa: E731
    assert red(whole) == pytest.approx(0.25, abs=0.03)  # the centre square is a quarter of the field
    assert red(centre) > 0.95  # view 0.5 sees only the centre square


def test_classifier_uses_the_view_of_its_spec(tiny):
    img = _bullseye(96, 0.6)
    before = tiny.preprocess([img])
    tiny.spec.view = 0.6
    try:
        after = tiny.preprocess([img])
    finally:
        tiny.spec.view = 1.0
    np.testing.assert_allclose(after, preprocess([img], tiny.spec.input_size, tiny.spec.mean, tiny.spec.std, 0.6))
    assert not torch.allclose(before, after)


def test_save_load_roundtrip_with_ood(tmp_path, tiny):
    images = crops(12)
    feats = tiny.predict_arrays(images)["features"]
    stats = fit_ood(feats, np.arange(12) % 3, dim=4)
    tiny.spec.ood = {"threshold_distance": 2.0, "flag_above": 1.0}
    tiny.spec.card = {"default": True}
    save_classifier(tiny.model, tiny.spec, tmp_path, stats)
    loaded = load_classifier(folder=tmp_path)
    assert loaded.spec.name == "tiny" and set(loaded.ood_stats) == {"mu", "proj", "means", "precision"}
    a, b = tiny.predict_arrays(images)["node_probs"], loaded.predict_arrays(images)["node_probs"]
    np.testing.assert_allclose(a, b, atol=1e-6)
    scores = loaded.predict_arrays(images)["ood_score"]
    noise = np.random.default_rng(0).integers(0, 255, (4, 48, 48, 3), dtype=np.uint8)
    assert np.median(loaded.predict_arrays(list(noise))["ood_score"]) > np.median(scores)
    assert json.loads((tmp_path / "tiny.json").read_text())["ood"]["threshold_distance"] == 2.0


def test_missing_or_broken_weights_name_the_fix(tmp_path, tiny):
    with pytest.raises(CellkitError, match="cellkit train classifier"):
        load_classifier(folder=tmp_path)
    tiny.spec.save(tmp_path)  # card without weights
    with pytest.raises(CellkitError, match="cellkit train classifier"):
        load_classifier("tiny", folder=tmp_path)
    (tmp_path / "tiny.safetensors").write_bytes(b"garbage")
    with pytest.raises(CellkitError, match="could not be read"):
        load_classifier("tiny", folder=tmp_path)


def test_a_card_that_does_not_fit_its_taxonomy_names_cell_types_not_ids(tiny):
    spec = ModelSpec.from_dict({**json.loads(tiny.spec.to_json()), "labels": ["band", *tiny.taxonomy.leaves[1:]]})
    with pytest.raises(CellkitError) as info:
        Classifier(tiny.model, spec, tiny.taxonomy)
    text = str(info.value)
    assert "it has no output for Promyelocyte; it outputs 'band', not among its cell types" in text
    assert "promyelocyte" not in text and "retrain with `cellkit train classifier --taxonomy pbc`" in text


@pytest.mark.realdata
def test_bundled_model_on_pbc_test_sample(shared_data):
    """~200 images of the held-out test split of PBC, classified by the bundled default model."""
    from cellkit import config
    from cellkit.io import read_image
    from cellkit.train.data import label_for

    split_file = config.weights_dir() / "pbc_split.json"
    try:
        clf = load_classifier()
    except CellkitError as exc:
        pytest.skip(f"no bundled classifier: {exc}")
    if not split_file.is_file():
        pytest.skip("weights/pbc_split.json missing")
    test_files = json.loads(split_file.read_text())["test"]
    rng = np.random.default_rng(0)
    sample = [test_files[i] for i in rng.choice(len(test_files), 200, replace=False)]
    tax = clf.taxonomy
    truth = [label_for(p, tax) for p in sample]
    preds = clf.predict([read_image(shared_data / "pbc" / p) for p in sample])
    pbc8 = tax.cut(tax.groupings["pbc8"])
    hits = [pbc8[p.leaf] == (t if t in pbc8.values() else pbc8[t]) for p, t in zip(preds, truth, strict=True)]
    assert np.mean(hits) >= 0.93
    assert np.mean([p.ood for p in preds]) < 0.1  # in-distribution crops are rarely flagged


def test_other_lab_crops_and_source_report(tmp_path, tiny):
    from cellkit.ood import source_report, yolo_wbc_crops
    from cellkit.synth import make_smear

    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    meta = ["Original_Image_Name,Source_Dataset,New_Image_Name,Source_URL"]
    for i, source in enumerate(["LabA", "LabB"]):
        img, boxes, cls = make_smear(200, 160, n_wbc=2, n_rbc=5, n_platelet=1, seed=i)
        Image.fromarray(img).save(tmp_path / "images" / "train" / f"s{i}.png")
        h, w = img.shape[:2]
        lines = [
            f"{c} {(b[0] + b[2]) / 2 / w} {(b[1] + b[3]) / 2 / h} {(b[2] - b[0]) / w} {(b[3] - b[1]) / h}"
            for b, c in zip(boxes, cls, strict=True)
        ]
        (tmp_path / "labels" / "train" / f"s{i}.txt").write_text("\n".join(lines))
        meta.append(f"orig{i}.png,{source},s{i}.png,")
    (tmp_path / "metadata.csv").write_text("\n".join(meta) + "\n")
    crops = yolo_wbc_crops(tmp_path, scale=2.0)
    assert {k: len(v) for k, v in crops.items()} == {"LabA": 2, "LabB": 2}
    report = source_report(tiny, crops)
    assert report["LabA"]["n"] == 2 and 0 < report["LabA"]["top_class_share"] <= 1
    with pytest.raises(CellkitError, match=r"metadata\.csv"):
        yolo_wbc_crops(tmp_path / "nowhere")


def test_weights_saved_in_half_precision_load_into_float32_layers(tmp_path):
    import torch

    from cellkit.classify import build_tiny_classifier, load_classifier, save_classifier
    from cellkit.synth import make_crop

    clf = build_tiny_classifier(seed=1)
    full = save_classifier(clf.model, clf.spec, tmp_path / "full")
    half = save_classifier(clf.model, clf.spec, tmp_path / "half", half=True)
    assert half.stat().st_size < 0.6 * full.stat().st_size
    back = load_classifier(clf.spec.name, folder=tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in back.model.parameters())
    crops = [make_crop(k, 64, k) for k in range(4)]
    a, b = clf.predict_arrays(crops)["node_probs"], back.predict_arrays(crops)["node_probs"]
    assert abs(a - b).max() < 1e-2


def test_weights_that_do_not_match_the_cards_sha256_are_refused(tmp_path):
    """A changed or swapped weights file is never used under a card that names other weights."""
    import json

    from cellkit.classify import build_tiny_classifier, load_classifier, save_classifier
    from cellkit.errors import CellkitError
    from cellkit.models import sha256_file

    clf = build_tiny_classifier(seed=1)
    path = save_classifier(clf.model, clf.spec, tmp_path)
    card_path = tmp_path / f"{clf.spec.name}.json"
    raw = json.loads(card_path.read_text())
    raw["card"]["sha256"] = sha256_file(path)
    card_path.write_text(json.dumps(raw))
    assert load_classifier(clf.spec.name, tmp_path).spec.name == clf.spec.name
    other = build_tiny_classifier(seed=2)
    save_classifier(other.model, other.spec, tmp_path)  # the same file name, other weights; card kept
    card_path.write_text(json.dumps(raw))
    with pytest.raises(CellkitError, match="do not match the sha256"):
        load_classifier(clf.spec.name, tmp_path)


def test_a_crop_too_small_to_show_a_cell_goes_to_review(tiny):
    """A 1 x 1 px upload was classified with a full set of probabilities; now it is left for review, saying why."""
    from cellkit.classify import MIN_CROP_SIDE

    small = np.full((1, 1, 3), 120, np.uint8)
    edge = np.full((MIN_CROP_SIDE, 40, 3), 120, np.uint8)
    preds = tiny.predict([small, edge, make_crop(0, 48, 1)])
    assert preds[0].label == "unknown" and "1 px a side: too small" in preds[0].review
    assert "too small" not in preds[1].review and "too small" not in preds[2].review
