"""Misclassification explorer: predictions on a labelled folder, confusion per tree level, error selection."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cellkit.classify import build_tiny_classifier
from cellkit.errors import CellkitError
from cellkit.errors_explorer import (
    accuracy,
    at_level,
    confusion,
    evaluate_folder,
    held_out_files,
    labelled_files,
    level_groups,
    levels,
    sample,
    select_errors,
)
from cellkit.taxonomy import load_taxonomy
from tests._datasets import make_classification

TAX = load_taxonomy("pbc")


def frame(rows: list[tuple[str, str]]) -> pd.DataFrame:
    """(true node, predicted leaf) pairs -> a predictions table with one-hot-ish leaf probabilities."""
    out = []
    for i, (true, leaf) in enumerate(rows):
        p = np.full(len(TAX.leaves), 0.02)
        p[TAX.leaves.index(leaf)] = 1 - 0.02 * (len(TAX.leaves) - 1)
        out.append({"path": f"/x/{i}.png", "true": true, "leaf": leaf, "label": leaf, "confidence": float(p.max())})
        out[-1].update({f"p_{lf}": float(v) for lf, v in zip(TAX.leaves, p, strict=True)})
        out[-1]["error"] = None
    return pd.DataFrame(out)


def test_levels_and_groups():
    assert levels(TAX) == ["leaves", "pbc8", "depth 1", "depth 2", "depth 3"]
    groups, mapping = level_groups(TAX, "depth 2")
    assert groups == ["myeloid_immature", "myeloid_mature", "lymphocyte", "erythroblast", "platelet"]
    assert mapping["band_neutrophil"] == "myeloid_mature" and mapping["myeloid"] == "myeloid"
    groups, mapping = level_groups(TAX, "pbc8")
    assert mapping["myelocyte"] == "myeloid_immature" and mapping["segmented_neutrophil"] == "neutrophil"
    with pytest.raises(CellkitError, match="depth 1"):
        level_groups(TAX, "depth 9x")


def test_confusion_per_level_counts_every_readable_image():
    df = frame(
        [
            ("band_neutrophil", "band_neutrophil"),
            ("band_neutrophil", "segmented_neutrophil"),  # wrong leaf, right pbc8 class
            ("myelocyte", "metamyelocyte"),  # wrong leaf, right pbc8 / depth 2
            ("myeloid_immature", "promyelocyte"),  # inner-node label: correct wherever it decides
            ("lymphocyte", "monocyte"),  # wrong at every level (lymphoid vs myeloid at depth 1)
            ("platelet", "platelet"),
        ]
    )
    leaves = confusion(df, TAX, "leaves")
    assert leaves.to_numpy().sum() == 6
    assert leaves.loc["band_neutrophil", "segmented_neutrophil"] == 1
    assert leaves.loc["myeloid_immature", "promyelocyte"] == 1  # a coarser label keeps its own row
    assert list(leaves.columns) == list(TAX.leaves)
    assert accuracy(df, TAX, "leaves") == pytest.approx(3 / 6)  # bne, IG->promyelocyte, platelet
    assert accuracy(df, TAX, "pbc8") == pytest.approx(5 / 6)
    assert accuracy(df, TAX, "depth 1") == pytest.approx(5 / 6)
    d1 = confusion(df, TAX, "depth 1")
    assert d1.loc["lymphoid", "myeloid"] == 1 and d1.loc["myeloid", "myeloid"] == 4
    errors = select_errors(df, TAX, "pbc8", "lymphocyte", "monocyte")
    assert list(errors["path"]) == ["/x/4.png"]
    assert select_errors(df, TAX, "pbc8", "neutrophil").empty  # band -> segmented is right at pbc8
    leaf_errors = select_errors(df, TAX, "leaves")
    assert set(leaf_errors["path"]) == {"/x/1.png", "/x/2.png", "/x/4.png"}
    lv = at_level(df, TAX, "depth 2")
    assert lv.loc[2, "pred_group"] == "myeloid_immature" and bool(lv.loc[2, "correct"])


def test_predicted_group_sums_probabilities_of_the_level():
    """Leaf argmax says monocyte, but the lymphoid lineage holds more probability in total."""
    df = frame([("lymphocyte", "monocyte")])
    p = {lf: 0.0 for lf in TAX.leaves}
    p.update(monocyte=0.4, lymphocyte=0.35, erythroblast=0.25)
    for lf, v in p.items():
        df[f"p_{lf}"] = v
    assert at_level(df, TAX, "leaves").loc[0, "pred_group"] == "monocyte"
    p.update(monocyte=0.3, promyelocyte=0.0, lymphocyte=0.35, erythroblast=0.35)
    for lf, v in p.items():
        df[f"p_{lf}"] = v
    assert at_level(df, TAX, "depth 1").loc[0, "pred_group"] in ("lymphoid", "erythroid")


def test_evaluate_folder_on_a_synthetic_tree(tmp_path):
    root = make_classification(tmp_path / "pbc")
    clf = build_tiny_classifier()
    files = labelled_files(root, TAX)
    assert "smudge" not in "".join(files["path"])  # a folder outside the taxonomy is not labelled
    df = evaluate_folder(clf, root)
    assert len(df) == len(files) == 15
    by_name = {p.rsplit("/", 1)[-1]: t for p, t in zip(df["path"], df["true"], strict=True)}
    assert by_name["BNE_1.png"] == "band_neutrophil" and by_name["IG_4.png"] == "myeloid_immature"
    broken = df[df["path"].str.endswith("SNE_broken.jpg")]
    assert len(broken) == 1 and broken["error"].iloc[0]
    ok = df[df["error"].isna()]
    assert np.allclose(ok[[f"p_{lf}" for lf in TAX.leaves]].sum(1), 1, atol=1e-4)
    for level in levels(TAX):
        assert confusion(df, TAX, level).to_numpy().sum() == 14
    assert len(evaluate_folder(clf, root, limit=5)) == 5
    with pytest.raises(CellkitError, match="not found"):
        evaluate_folder(clf, tmp_path / "nope")


def test_sample_spreads_over_classes():
    files = pd.DataFrame({"path": [f"{i}" for i in range(30)], "true": ["a"] * 20 + ["b"] * 5 + ["c"] * 5})
    picked = sample(files, 9, seed=1)
    assert len(picked) == 9 and picked["true"].value_counts().to_dict() == {"a": 3, "b": 3, "c": 3}
    assert sample(files, 9, seed=1).equals(picked)
    assert len(sample(files, None)) == 30


def test_test_split_from_the_model_card(tmp_path, monkeypatch):
    root = make_classification(tmp_path / "pbc", corrupt=False)
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setenv("CELLKIT_WEIGHTS_DIR", str(weights))
    clf = build_tiny_classifier()
    assert held_out_files(clf, root) is None  # the card names no split
    clf.spec.card = {"data": {"split_file": "split.json"}}
    (weights / "split.json").write_text(json.dumps({"train": ["ig/MY_2.png"], "test": ["lymphocyte/LY_1.png"]}))
    files = held_out_files(clf, root)
    assert list(files["true"]) == ["lymphocyte"]
    assert len(evaluate_folder(clf, root)) == 1
    assert len(evaluate_folder(clf, root, test_split=False)) == 14
