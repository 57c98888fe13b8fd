"""Dataset readers on synthetic trees (classification, splits, YOLO, VOC, roots) and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from _datasets import make_classification, make_split_classification, make_voc, make_yolo

from cellkit import CellkitError, read_dataset
from cellkit.data import count_files, detect_kind, list_datasets, load_dataset, read_boxes


def test_classification_folders_map_to_nodes_with_prefix_rule(tmp_path):
    df = read_dataset(make_classification(tmp_path / "cls"))
    assert len(df) == 16  # 15 images + 1 corrupt file, README.txt ignored
    node = dict(zip(df["file"], df["node"], strict=True))
    assert node["neutrophil/BNE_1.png"] == "band_neutrophil"
    assert node["neutrophil/SNE_4.jpg"] == "segmented_neutrophil"
    assert node["neutrophil/NEUTROPHIL_5.png"] == "neutrophil"
    assert node["ig/PMY_1.jpg"] == "promyelocyte"
    assert node["ig/MY_2.png"] == "myelocyte"
    assert node["ig/MMY_3.png"] == "metamyelocyte"
    assert node["ig/IG_4.png"] == "myeloid_immature"
    assert node["lymphocyte/LY_1.png"] == "lymphocyte"
    assert node["smudge/S_1.png"] is None  # unknown folder: kept as its own class, no node
    assert set(df.loc[df["class"] == "smudge", "file"]) == {"smudge/S_1.png"}
    assert set(df["kind"]) == {"classification"} and set(df["dataset"]) == {"cls"}
    ok = df[df["error"].isna()]
    assert (ok["width"] == 48).all() and (ok["height"] == 48).all() and (ok["bytes"] > 0).all()


def test_corrupt_file_is_a_row_with_error_not_a_crash(tmp_path):
    df = read_dataset(make_classification(tmp_path / "cls"))
    bad = df[df["error"].notna()]
    assert list(bad["file"]) == ["neutrophil/SNE_broken.jpg"]
    assert "image" in bad["error"].iloc[0]


def test_prefix_rule_does_not_cross_folders(tmp_path):
    make_classification(tmp_path / "cls", corrupt=False)
    (tmp_path / "cls" / "lymphocyte" / "BNE_9.png").write_bytes(
        (tmp_path / "cls" / "lymphocyte" / "LY_1.png").read_bytes()
    )
    df = read_dataset(tmp_path / "cls")
    assert df.loc[df["file"] == "lymphocyte/BNE_9.png", "node"].item() == "lymphocyte"


def test_training_and_the_dataset_page_use_one_label_rule(tmp_path):
    """Every image gets the same node from the training indexer as from the Dataset page's reader."""
    from cellkit.taxonomy import load_taxonomy
    from cellkit.train.data import index_folder

    make_classification(tmp_path / "cls", corrupt=False)
    src = tmp_path / "cls" / "lymphocyte" / "LY_1.png"
    for odd in ("lymphocyte/BNE_9.png", "neutrophil/BNE_3.png", "ig/MY_4.png", "ig/IG_5.png"):
        (tmp_path / "cls" / odd).parent.mkdir(exist_ok=True)
        (tmp_path / "cls" / odd).write_bytes(src.read_bytes())
    paths, nodes = index_folder(tmp_path / "cls", load_taxonomy("pbc"))
    training = dict(zip(paths, nodes, strict=True))
    page = read_dataset(tmp_path / "cls").set_index("file")["node"].to_dict()
    assert training == {f: page[f] for f in training}
    assert training["lymphocyte/BNE_9.png"] == "lymphocyte"
    assert training["neutrophil/BNE_3.png"] == "band_neutrophil"
    assert training["ig/MY_4.png"] == "myelocyte" and training["ig/IG_5.png"] == "myeloid_immature"


def test_split_folders_are_read_and_normalised(tmp_path):
    root, _, _ = make_split_classification(tmp_path / "splits")
    df = read_dataset(root)
    assert df.groupby("split").size().to_dict() == {"test": 7, "train": 6, "val": 7}
    assert set(df["class"]) == {"lymphocyte", "monocyte"}


def test_yolo_reader_splits_sources_and_boxes_in_pixels(tmp_path):
    root, truth = make_yolo(tmp_path / "yolo")
    ds = load_dataset(root)
    df = ds.images
    assert detect_kind(root) == "yolo" and ds.class_names == ["WBC", "RBC", "Platelets"]
    assert df.groupby("split").size().to_dict() == {"train": 3, "val": 1}
    assert df.set_index("file")["source"].to_dict()["images/train/img1.png"] == "A"
    assert (df["n_boxes"] == df["n_WBC"] + df["n_RBC"] + df["n_Platelets"]).all()
    assert df.set_index("file")["n_boxes"].to_dict() == {f: len(b) for f, b in truth.items()}
    assert (df["n_WBC"] == 1).all()
    boxes = read_boxes(root)
    for file, xyxy in truth.items():
        got = boxes.loc[boxes["file"] == file, ["x1", "y1", "x2", "y2"]].to_numpy()
        np.testing.assert_allclose(np.sort(got, axis=0), np.sort(xyxy, axis=0), atol=0.05)


def test_voc_reader(tmp_path):
    root = make_voc(tmp_path / "voc")
    ds = load_dataset(root)
    assert detect_kind(root) == "voc"
    assert set(ds.images["split"]) == {"train"}  # "Training" normalised
    assert len(ds.images) == 2 and (ds.images["n_boxes"] == 5).all()
    assert set(ds.boxes["class"]) == {"WBC", "RBC", "Platelets"}
    assert (ds.boxes["w"] > 0).all() and (ds.boxes["x2"] <= 160).all()


def test_root_with_several_datasets_lists_them_and_needs_a_pick(tmp_path):
    make_classification(tmp_path / "root" / "pbc_like", corrupt=False)
    make_yolo(tmp_path / "root" / "smears")
    (tmp_path / "root" / "attributes").mkdir()
    (tmp_path / "root" / "attributes" / "a.csv").write_text("x\n1\n")
    found = {d.name: d.kind for d in list_datasets(tmp_path / "root")}
    assert found == {"pbc_like": "classification", "smears": "yolo"}
    with pytest.raises(CellkitError, match=r"several datasets.*pbc_like"):
        read_dataset(tmp_path / "root")
    assert len(read_dataset(tmp_path / "root", dataset="smears")) == 4
    with pytest.raises(CellkitError, match="no dataset named 'nope'"):
        read_dataset(tmp_path / "root", dataset="nope")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such folder"),
        (lambda p: p, "folder is empty"),
        (lambda p: (p / "notes.txt").write_text("x") and p, "no images found among 1 files"),
        (lambda p: (p / "a.jpg").write_text("x") and p / "a.jpg", "is a file"),
        (lambda p: "", "no dataset path given"),
        (lambda p: f"{p}/bad\x00name", "no such folder"),
        (lambda p: "x" * 5000, "not a usable path"),
    ],
)
def test_bad_paths_raise_one_clear_error(tmp_path, make, message):
    with pytest.raises(CellkitError, match=message):
        read_dataset(make(tmp_path))


def test_count_files_counts_without_opening(tmp_path):
    make_classification(tmp_path / "cls")
    counts = count_files(tmp_path / "cls")
    assert counts.groupby("class").size().to_dict() == {
        "ig": 4,
        "lymphocyte": 3,
        "neutrophil": 6,
        "platelet": 2,
        "smudge": 1,
    }


@pytest.mark.realdata
def test_pbc_counts_match_readme(shared_data):
    counts = count_files(shared_data / "pbc")
    per_class = counts.groupby("class").size().to_dict()
    assert per_class == {
        "neutrophil": 2663, "eosinophil": 2494, "basophil": 974, "lymphocyte": 971,
        "monocyte": 1136, "ig": 2317, "erythroblast": 1241, "platelet": 1878,
    }  # fmt: skip
    per_node = counts.groupby("node").size().to_dict()
    assert {k: per_node[k] for k in ("band_neutrophil", "segmented_neutrophil", "neutrophil")} == {
        "band_neutrophil": 1306, "segmented_neutrophil": 1317, "neutrophil": 40,
    }  # fmt: skip
    assert {k: per_node[k] for k in ("promyelocyte", "myelocyte", "metamyelocyte", "myeloid_immature")} == {
        "promyelocyte": 474, "myelocyte": 910, "metamyelocyte": 812, "myeloid_immature": 121,
    }  # fmt: skip


@pytest.mark.realdata
def test_shared_root_and_txl_splits(shared_data):
    found = {d.name: d.kind for d in list_datasets(shared_data)}
    # chula_rbc12 (point labels, red-cell issue) is also found; its format is not read as boxes here
    assert {k: found[k] for k in ("pbc", "txl_pbc", "cbc")} == {
        "pbc": "classification",
        "txl_pbc": "yolo",
        "cbc": "voc",
    }
    txl = load_dataset(shared_data, dataset="txl_pbc", headers=False).images
    assert txl.groupby("split").size().to_dict() == {"train": 845, "val": 240, "test": 118}
    assert txl.groupby("source").size().to_dict() == {"PBC": 500, "Raabin-WBC": 500, "BCCD": 103, "BCDD": 100}
    cbc = load_dataset(shared_data / "cbc", headers=False)
    assert len(cbc.images) == 300 and set(cbc.class_names) == {"WBC", "RBC", "Platelets"}


def test_malformed_yolo_labels_are_reported_per_image(tmp_path):
    root, _ = make_yolo(tmp_path / "yolo")
    with (root / "labels" / "train" / "img1.txt").open("a") as fh:
        fh.write("7 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "train" / "img2.txt").write_text("0 0.5 oops\n")
    (root / "labels" / "val" / "img4.txt").unlink()  # no label file: an image without boxes
    df = read_dataset(root).set_index("file")
    assert "class id 7" in df.loc["images/train/img1.png", "label_error"]
    assert "line 1 malformed" in df.loc["images/train/img2.png", "label_error"]
    assert df.loc["images/val/img4.png", "n_boxes"] == 0 and df.loc["images/val/img4.png", "label_error"] is None
    assert df["error"].isna().all()


@pytest.mark.parametrize("line", ["-1 0.5 0.5 0.1 0.1", "inf 0.5 0.5 0.1 0.1", "0 nan 0.5 0.1 0.1"])
def test_hostile_yolo_label_lines_are_a_label_error_not_a_crash(tmp_path, line):
    root, _ = make_yolo(tmp_path / "yolo")
    (root / "data.yaml").unlink()  # no names either: class ids are not checked against a list
    (root / "labels" / "train" / "img1.txt").write_text(line + "\n")
    df = read_dataset(root).set_index("file")
    assert "line 1 malformed" in df.loc["images/train/img1.png", "label_error"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("data.yaml", "names: {wbc: 0}\n", "names must map class ids"),
        ("classes.txt", b"\xff\xfe wbc\n", "expected UTF-8 text"),
    ],
)
def test_a_yolo_names_file_of_the_wrong_shape_is_one_error(tmp_path, name, content, message):
    root, _ = make_yolo(tmp_path / "yolo")
    (root / "data.yaml").unlink()
    target = root / name
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    with pytest.raises(CellkitError, match=message):
        read_dataset(root)


def test_a_voc_image_set_that_is_not_utf8_is_one_error(tmp_path):
    root = make_voc(tmp_path / "voc")
    main = root / "Training" / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_bytes(b"\xff\xfe\n")
    with pytest.raises(CellkitError, match="expected UTF-8 text"):
        read_dataset(root)


def test_named_sub_dataset_without_images_is_an_error(tmp_path):
    make_classification(tmp_path / "root" / "cells", corrupt=False)
    (tmp_path / "root" / "empty_yolo" / "images").mkdir(parents=True)
    (tmp_path / "root" / "empty_yolo" / "data.yaml").write_text("names: [a]\n")
    with pytest.raises(CellkitError, match="no images found"):
        read_dataset(tmp_path / "root", dataset="empty_yolo")


def test_a_symlink_loop_in_a_dataset_is_skipped_not_fatal(tmp_path):
    from cellkit.data import _images_in

    (tmp_path / "neutrophil").mkdir()
    (tmp_path / "neutrophil" / "a.png").write_bytes(b"x")
    (tmp_path / "neutrophil" / "loop.png").symlink_to(tmp_path / "neutrophil" / "loop.png")  # points at itself
    assert [p.name for p in _images_in(tmp_path, recursive=True)] == ["a.png"]


def test_a_root_holding_a_voc_dataset_beside_others_lists_them_all(tmp_path):
    from cellkit.data import list_datasets

    make_voc(tmp_path / "root" / "cbc")
    make_classification(tmp_path / "root" / "cells", corrupt=False)
    make_yolo(tmp_path / "root" / "txl")
    found = {d.name: d.kind for d in list_datasets(tmp_path / "root")}
    assert found == {"cbc": "voc", "cells": "classification", "txl": "yolo"}
    assert [d.kind for d in list_datasets(tmp_path / "root" / "cbc")] == ["voc"]  # Training/ is its split
    (tmp_path / "root" / "cbc" / "notes").mkdir()  # an empty folder beside the splits changes nothing
    assert [d.kind for d in list_datasets(tmp_path / "root" / "cbc")] == ["voc"]
