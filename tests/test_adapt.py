"""Adapting a classifier to a lab: reading labelled folders/zips, AdaBN, head fine-tuning, CV, saving, CLI."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from cellkit.adapt import (
    adapt,
    advice,
    check_name,
    lab_background,
    read_labelled,
    recalibrate_batchnorm,
    save_adapted,
)
from cellkit.classify import build_tiny_classifier, load_classifier, save_classifier
from cellkit.errors import CellkitError
from cellkit.io import encode_png
from cellkit.synth import make_crop
from tests._cli import run_cli as run

# three synthetic "cell types" that the untrained tiny model cannot tell apart before adapting
KINDS = {"eosinophil": 1, "lymphocyte": 2, "neutrophil": 4}  # neutrophil is an inner node of the tree


def write_labelled(root, per_class: int = 10, seed: int = 0) -> None:
    for node, kind in KINDS.items():
        (root / node).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / node / f"c{i}.png").write_bytes(encode_png(make_crop(kind, 64, seed + 100 * kind + i)))


def base_model(seed: int = 3):
    """The untrained tiny CNN with BatchNorm statistics of generic crops, so its features have a usable scale."""
    clf = build_tiny_classifier(seed=seed)
    recalibrate_batchnorm(clf.model, clf.preprocess([make_crop(i % 6, 64, 1000 + i) for i in range(48)]))
    return clf


@pytest.fixture()
def lab(tmp_path):
    write_labelled(tmp_path / "lab")
    (tmp_path / "lab" / "unknown").mkdir()
    (tmp_path / "lab" / "unknown" / "x.png").write_bytes(encode_png(make_crop(0, 64, 7)))
    (tmp_path / "lab" / "not_a_cell_type").mkdir()
    (tmp_path / "lab" / "not_a_cell_type" / "y.png").write_bytes(encode_png(make_crop(0, 64, 8)))
    return tmp_path / "lab"


def test_read_labelled_takes_node_folders_and_skips_the_rest(lab):
    crops = read_labelled([lab], build_tiny_classifier().taxonomy)
    assert crops.counts() == {"eosinophil": 10, "lymphocyte": 10, "neutrophil": 10}
    assert len(crops.skipped) == 2 and any("not_a_cell_type" in s for s in crops.skipped)


def test_read_labelled_from_a_zip_like_the_review_export(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Eosinophil/a.png", encode_png(make_crop(1, 48, 0)))  # display names work too
        zf.writestr("LY/b.png", encode_png(make_crop(2, 48, 1)))  # and abbreviations
    (tmp_path / "r.zip").write_bytes(buf.getvalue())
    crops = read_labelled([tmp_path / "r.zip"], build_tiny_classifier().taxonomy)
    assert crops.counts() == {"eosinophil": 1, "lymphocyte": 1}


def test_read_labelled_with_nothing_usable_says_what_layout_it_wants(tmp_path):
    (tmp_path / "a.png").write_bytes(encode_png(make_crop(1, 48, 0)))
    with pytest.raises(CellkitError, match="<cell type>/<image>"):
        read_labelled([tmp_path], build_tiny_classifier().taxonomy)


def test_adaptation_improves_held_out_accuracy_and_keeps_the_base(lab):
    base = base_model()
    before_weights = {k: v.clone() for k, v in base.model.state_dict().items()}
    crops = read_labelled([lab], base.taxonomy)
    result = adapt(base, "my_lab", crops, folds=5)
    cv = result.report["cross_validation"]
    assert cv["folds"] == 5 and cv["before"]["n"] == cv["after"]["n"] == 30
    assert cv["after"]["balanced_accuracy"] >= 0.9
    assert cv["after"]["balanced_accuracy"] > cv["before"]["balanced_accuracy"] + 0.3
    assert result.report["advice"].startswith("adapting helped")
    assert any(s.startswith("cell types: the model's last layer is fitted to 30 labelled crops")
               for s in result.report["steps"])  # fmt: skip
    assert not any("OOD" in s or "feature bank" in s or "head" in s for s in result.report["steps"])  # words
    # the base model is untouched; the adapted one answers the lab's classes
    for k, v in base.model.state_dict().items():
        assert torch.equal(v, before_weights[k]), k
    preds = result.classifier.predict(crops.images)
    right = [node in base.taxonomy.path(p.leaf) for p, node in zip(preds, crops.nodes, strict=True)]
    assert np.mean(right) >= 0.9
    assert result.classifier.spec.name == "my_lab" and result.classifier.spec.card["adapted_from"]["name"] == "tiny"


def test_advice_says_to_keep_the_base_when_adapting_did_not_help():
    cv = {"before": {"balanced_accuracy": 0.942}, "after": {"balanced_accuracy": 0.925}}
    assert "keep using base_x" in advice(cv, "base_x")
    cv["after"]["balanced_accuracy"] = 0.945
    assert advice(cv, "base_x").startswith("no clear change")


def test_batchnorm_statistics_follow_the_lab():
    clf = build_tiny_classifier(seed=0)
    bn = next(m for m in clf.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = torch.randn(40, 3, 32, 32) * 0.5 + 2.0
    recalibrate_batchnorm(clf.model, x)
    assert bn.running_mean.abs().mean() > 0.05  # moved from the untrained zeros towards the lab's data
    assert not bn.training and bn.momentum == 0.1


def test_lab_background_is_the_slide_colour():
    crops = [np.full((30, 30, 3), (230, 210, 190), np.uint8) for _ in range(3)]
    for c in crops:
        c[10:20, 10:20] = (90, 40, 130)
    assert lab_background(crops) == [230.0, 210.0, 190.0]


def test_unlabelled_adaptation_needs_no_labels():
    base = build_tiny_classifier(seed=0)
    crops = [make_crop(i % 6, 48, i) for i in range(40)]
    with pytest.raises(CellkitError, match="unlabelled crops alone change nothing in tiny"):
        adapt(base, "unlabelled_lab", unlabelled=crops)  # no slide-colour reference, BatchNorm not asked
    base.spec.background = [255.0, 228.0, 203.0]
    result = adapt(base, "unlabelled_lab", unlabelled=crops)
    assert "cross_validation" not in result.report
    assert result.report["advice"].startswith("no labelled crops: whether this helps your lab cannot be measured")
    assert not any("BatchNorm" in s for s in result.report["steps"])  # off unless asked: it hurt on real labs
    assert any(s.startswith("slide colour: this lab's slide background") for s in result.report["steps"])
    assert not any("255" in s or "[" in s for s in result.report["steps"])  # words for people, never RGB triples
    same = {k: v for k, v in base.model.state_dict().items() if "running" in k}
    assert all(torch.equal(v, result.classifier.model.state_dict()[k]) for k, v in same.items())
    asked = adapt(base, "unlabelled_lab", unlabelled=crops, batchnorm=True)
    assert any("BatchNorm layers re-estimated on the lab's 40 crops" in s for s in asked.report["steps"])
    moved = asked.classifier.model.state_dict()
    assert any(not torch.equal(v, moved[k]) for k, v in same.items())
    with pytest.raises(CellkitError, match="labelled crops, unlabelled crops"):
        adapt(base, "x")


def test_names_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(tmp_path))
    clf = build_tiny_classifier()
    clf.spec.name, clf.spec.weights = "shipped", "shipped.safetensors"
    save_classifier(clf.model, clf.spec, tmp_path)
    with pytest.raises(CellkitError, match="bundled model"):
        check_name("shipped")
    for bad in ("", "../evil", "a b", "x" * 65):
        with pytest.raises(CellkitError, match="model name"):
            check_name(bad)


@pytest.fixture()
def installed(tmp_path, monkeypatch):
    """A bundled weights folder holding the base model (default) and an empty CELLKIT_HOME."""
    weights, home = tmp_path / "weights", tmp_path / "home"
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("CELLKIT_HOME", str(home))
    base = base_model()
    base.spec.card = {"default": True}
    save_classifier(base.model, base.spec, weights)
    return weights, home


def test_saved_model_is_found_by_name_and_by_the_cli(lab, installed, tmp_path, monkeypatch, capsys):
    weights, home = installed
    base = load_classifier("tiny")
    path = save_adapted(adapt(base, "lab_a", read_labelled([lab], base.taxonomy), folds=3))
    assert path.parent == home / "models" and not (weights / "lab_a.json").exists()
    again = load_classifier("lab_a")
    assert again.spec.card["adaptation"]["cross_validation"]["folds"] == 3
    out = tmp_path / "preds.csv"
    code, _, err = run(monkeypatch, capsys, "classify", lab / "eosinophil", "--model", "lab_a", "--out", out)
    assert code == 0, err
    assert out.read_text().count("\n") == 11


def test_cli_adapt_end_to_end(lab, installed, monkeypatch, capsys):
    _, home = installed
    code, out, err = run(monkeypatch, capsys, "adapt", "--labelled", lab, "--name", "lab_b", "--folds", "3")
    assert code == 0, err
    assert "before" in out and "after" in out and (home / "models" / "lab_b.json").is_file()
    assert "warning: no labelled crops of " in err and "Monocyte" in err  # the classes left out may lose ground
    code, out, err = run(monkeypatch, capsys, "adapt", "--labelled", lab, "--name", "tiny")
    assert code == 2 and "bundled model" in err and err.count("\n") == 1
    code, out, err = run(monkeypatch, capsys, "adapt", "--name", "nothing")
    assert code == 2 and "--labelled" in err
    card = (home / "models" / "lab_b.json").read_bytes()
    code, out, err = run(monkeypatch, capsys, "adapt", "--labelled", lab, "--name", "lab_b", "--folds", "2")
    assert code == 2 and "already exists" in err and err.count("\n") == 1  # refused before any work
    assert (home / "models" / "lab_b.json").read_bytes() == card
    args = ("adapt", "--labelled", lab, "--name", "lab_b", "--folds", "2")
    code, out, err = run(monkeypatch, capsys, *args, "--replace")
    assert code == 0, err
    assert (home / "models" / "lab_b.json").read_bytes() != card


def test_cli_adapt_from_unlabelled_crops_with_a_named_base(tmp_path, installed, monkeypatch, capsys):
    """`--unlabelled` alone: the lab's slide colour from its crops (BatchNorm statistics only with --batchnorm)."""
    weights, home = installed
    coloured = build_tiny_classifier(seed=2)
    coloured.spec.name, coloured.spec.weights = "tiny_bg", "tiny_bg.safetensors"
    coloured.spec.background = [255.0, 228.0, 203.0]  # a model with a slide-colour reference, as the bundled ones
    save_classifier(coloured.model, coloured.spec, weights)
    folder = tmp_path / "lab_crops"
    folder.mkdir()
    for i in range(40):  # a lab whose slides are bluer than PBC's
        crop = make_crop(i % 3, 64, 100 + i).astype(float) * [0.85, 0.95, 1.1]
        (folder / f"c{i}.png").write_bytes(encode_png(np.clip(crop, 0, 255).astype(np.uint8)))
    (folder / "broken.png").write_bytes(b"not an image")
    code, _, err = run(monkeypatch, capsys, "adapt", "--unlabelled", folder, "--name", "lab_u", "--base", "tiny_bg")
    assert code == 0, err
    assert "--unlabelled: 1 of 41 file(s) skipped, e.g. " in err and "broken.png: not a readable image" in err
    card = json.loads((home / "models" / "lab_u.json").read_text())
    assert card["card"]["adapted_from"]["name"] == "tiny_bg" and card["card"]["adaptation"]["n_unlabelled"] == 40
    assert len(card["source_background"]) == 3  # the lab's own background, balanced to the model's
    assert not any("BatchNorm" in step for step in card["card"]["adaptation"]["steps"])
    code, _, err = run(
        monkeypatch, capsys, "adapt", "--unlabelled", folder, "--name", "lab_w", "--base", "tiny_bg", "--batchnorm"
    )
    assert code == 0, err
    steps = json.loads((home / "models" / "lab_w.json").read_text())["card"]["adaptation"]["steps"]
    assert any("BatchNorm layers re-estimated on the lab's 40 crops" in step for step in steps)
    code, _, err = run(monkeypatch, capsys, "adapt", "--unlabelled", folder, "--name", "lab_v", "--base", "no_such")
    assert code == 2 and "not found" in err and err.count("\n") == 1


def test_a_home_where_no_model_can_be_saved_is_refused_before_the_work(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("not a folder")
    monkeypatch.setenv("CELLKIT_HOME", str(tmp_path / "afile" / "home"))
    with pytest.raises(CellkitError, match="is a file, not a folder; set CELLKIT_HOME to a writable folder"):
        check_name("my_lab")


def test_a_zip_without_cell_type_folders_is_named_and_explained():
    from cellkit.taxonomy import load_taxonomy

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a.png", encode_png(make_crop(0, 64, 1)))
    with pytest.raises(CellkitError, match=r"my lab\.zip/a\.png: in no cell-type folder; expected <cell type>/<image>"):
        read_labelled([buf.getvalue()], load_taxonomy("pbc"), upload_name="my lab.zip")


def test_skipped_folders_say_why_and_suggest_the_near_cell_type(tmp_path):
    """ "Neutrophils/" was dropped with no hint, and "unknown/" (cells left for review) called no cell type."""
    from cellkit.adapt import read_labelled
    from cellkit.io import encode_png
    from cellkit.synth import make_crop
    from cellkit.taxonomy import load_taxonomy

    for folder in ("Neutrophils", "unknown", "lymphocyte"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(encode_png(make_crop(1, 48, 0)))
    crops = read_labelled([tmp_path], load_taxonomy("pbc"))
    assert crops.counts() == {"lymphocyte": 1}
    why = " | ".join(crops.skipped)
    assert "'Neutrophils' is no cell type of taxonomy 'pbc'; did you mean neutrophil?" in why
    assert "left for review (unknown/)" in why and "'unknown' is no cell type" not in why


def test_cli_adapt_notes_skipped_crops_and_folders_left_out_on_stderr_and_still_saves(
    lab, installed, monkeypatch, capsys
):
    """A whole cell type (``Basophils/``, no cell type of the tree) was dropped with exit 0 and a list on stdout
    among the figures. Still exit 0 (a model was saved and is usable), but the notes are on stderr and the
    folders left out are a warning, before the work and again after it, and in the card."""
    _, home = installed
    (lab / "Basophils").mkdir()
    for i in range(3):
        (lab / "Basophils" / f"b{i}.png").write_bytes(encode_png(make_crop(5, 64, 300 + i)))
    code, out, err = run(monkeypatch, capsys, "adapt", "--labelled", lab, "--name", "lab_d", "--folds", "2")
    assert code == 0, err
    assert (home / "models" / "lab_d.json").is_file() and "labelled crops:" in out and "(5 skipped)" in out
    assert "skipped:" not in out and "Basophils" not in out and "not_a_cell_type" not in out  # stdout: the figures
    assert "skipped: " in err and "unknown/x.png: a cell left for review" in err
    warning = next(line for line in err.splitlines() if line.startswith("warning: 2 folder(s) gave no crops"))
    assert "so lab_d is adapted without them: Basophils/ (3 crop(s): folder 'Basophils' is no cell type" in warning
    assert "did you mean basophil?" in warning and "not_a_cell_type/ (1 crop(s)" in warning
    assert "unknown/" not in warning  # cells left for review are no cell type the lab labelled
    assert "warning: lab_d was saved without the crops of Basophils/, not_a_cell_type/ (see above)" in err
    assert err.index("gave no crops") < err.index("fold 1 of 2")  # said before the work
    dropped = json.loads((home / "models" / "lab_d.json").read_text())["card"]["adaptation"]["dropped"]
    assert set(dropped) == {"Basophils", "not_a_cell_type"} and dropped["Basophils"].startswith("3 crop(s): ")
