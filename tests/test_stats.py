"""Counts, duplicates / leakage, balancing, boxes, mosaic, figures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _datasets import make_classification, make_split_classification, make_voc, make_yolo

import cellkit.dataset_index as dataset_index
import cellkit.stats as stats
from cellkit import CellkitError, dataset_stats, load_taxonomy, plots


@pytest.fixture
def cls_index(tmp_path):
    return dataset_index.index_dataset(make_classification(tmp_path / "cls"))


def test_counts_per_class_level_split(cls_index):
    tax = cls_index.taxonomy
    levels = stats.level_counts(cls_index.images, tax).set_index("node")
    assert levels.loc["neutrophil", "count"] == 5  # BNE 2 + SNE 2 + NEUTROPHIL 1 (the broken SNE excluded)
    assert levels.loc["neutrophil", "labelled_here"] == 1
    assert levels.loc["myeloid", "count"] == 9 and levels.loc["myeloid", "level"] == 1
    assert levels.loc["band_neutrophil", "level"] == 4
    classes = stats.class_counts(cls_index.images)
    assert classes.groupby("class")["count"].sum().to_dict() == {
        "ig": 4, "lymphocyte": 3, "neutrophil": 5, "platelet": 2, "smudge": 1,
    }  # fmt: skip
    assert stats.size_counts(cls_index.images).to_dict("records") == [{"width": 48, "height": 48, "count": 15}]
    assert stats.colour_table(cls_index.images, "class")["n"].sum() == 15
    shown = stats.colour_table(cls_index.images, "class", readable=True)
    assert shown["images"].sum() == 15 and "Red, mean" in shown and "Hue (°), sd" in shown
    assert not any("_" in c for c in shown.columns)


def test_exact_and_near_duplicates_across_splits(tmp_path):
    root, exact, altered = make_split_classification(tmp_path / "splits")
    index = dataset_index.index_dataset(root)
    pairs = stats.duplicates(index.images, threshold=4)
    found = {frozenset((r["file_a"], r["file_b"])): r for r in pairs.to_dict("records")}
    src = "train/lymphocyte/LY_0.png"
    e = found[frozenset((src, exact))]
    assert e["exact"] and e["distance"] == 0 and e["cross_split"] and not e["label_conflict"]
    n = found[frozenset((src, altered))]
    assert not n["exact"] and n["distance"] <= 4 and n["cross_split"] and n["label_conflict"]
    summary = stats.duplicate_summary(pairs)
    assert summary["exact_pairs"] >= 1 and summary["cross_split_pairs"] >= 3  # the copy and the altered copy pair
    leak = stats.leakage(pairs).set_index("splits")
    assert leak.loc["test ~ train", "exact"] >= 1 and leak.loc["train ~ val", "near"] >= 1
    assert stats.duplicates(index.images, threshold=0)["distance"].max() == 0
    shown = stats.duplicates_table(pairs, index.taxonomy)  # for the screen: words, display names, no ids
    assert not any("_" in c for c in shown.columns) and "Different labels" in shown
    row = shown[(shown["Image A"] == src) | (shown["Image B"] == src)].iloc[0]
    assert "Lymphocyte" in (row["Class A"], row["Class B"])
    assert "lymphocyte" not in set(shown["Class A"]) | set(shown["Class B"])


def _nodes_frame(counts: dict[str, int]) -> pd.DataFrame:
    nodes = [n for n, k in counts.items() for _ in range(k)]
    return pd.DataFrame({"node": nodes, "error": [None] * len(nodes)})


def test_balanced_counts_caps_each_level_at_smallest_not_below_threshold():
    tax = load_taxonomy("pbc")
    df = _nodes_frame(
        {"band_neutrophil": 300, "segmented_neutrophil": 500, "neutrophil": 7, "lymphocyte": 200, "eosinophil": 50}
    )
    bal = stats.balanced_counts(df, tax, min_count=100)
    lvl1 = bal[bal["level"] == 1].set_index("node")
    assert lvl1["count"].to_dict() == {"myeloid": 857, "lymphoid": 200}
    assert lvl1["balanced"].to_dict() == {"myeloid": 200, "lymphoid": 200}
    lvl3 = bal[bal["level"] == 3].set_index("node")
    assert lvl3.loc["eosinophil", "target"] == 100  # smallest is 50, but never below 100
    assert lvl3["balanced"].to_dict() == {"neutrophil": 100, "eosinophil": 50, "lymphocyte": 100}
    lvl4 = bal[bal["level"] == 4].set_index("node")
    assert "neutrophil" not in lvl4.index  # "neutrophil, unspecified" has no label at the band/segmented level
    assert lvl4.loc["band_neutrophil", "balanced"] == 100
    assert (bal["balanced"] <= bal["count"]).all()
    no_floor = stats.balanced_counts(df, tax, min_count=0)
    assert no_floor[no_floor["level"] == 3]["balanced"].max() == 50
    with pytest.raises(CellkitError):
        stats.balanced_counts(df, tax, min_count=-1)


def test_detection_index_boxes_and_mosaic(tmp_path):
    root, truth = make_yolo(tmp_path / "yolo")
    index = dataset_index.index_dataset(root)
    assert len(index.boxes) == sum(len(b) for b in truth.values())
    assert index.boxes["x2"].max() > 1  # pixels, not 0..1
    per_image = stats.boxes_per_image(index.images)
    assert set(per_image["class"]) == {"WBC", "RBC", "Platelets"}
    sizes = stats.box_size_table(index.boxes).set_index("class")
    assert sizes.loc["WBC", "boxes"] == 4
    grid, labels = stats.mosaic(index, per_group=3, size=32)
    assert labels == ["WBC", "RBC", "Platelets"] and grid.shape == (96, 96, 3) and grid.dtype == np.uint8
    voc = dataset_index.index_dataset(make_voc(tmp_path / "voc"))
    assert voc.boxes["class"].value_counts()["RBC"] == 6


def test_summary_and_public_dataset_stats(tmp_path):
    root, _ = make_yolo(tmp_path / "yolo")
    s = dataset_stats(root)
    assert s["images"] == 4 and s["per_split"] == {"train": 3, "val": 1} and s["per_source"] == {"A": 2, "B": 2}
    assert s["boxes"]["WBC"] == 4 and "per_class" not in s
    cls = dataset_stats(make_classification(tmp_path / "cls"))
    assert cls["per_class"]["neutrophil"] == 5 and cls["unmapped_classes"] == ["smudge"]
    assert cls["per_label"]["band_neutrophil"] == 2 and len(cls["unreadable"]) == 1
    assert cls["per_level"]["level 1"]["myeloid"] == 9


def test_all_images_unreadable_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(CellkitError, match="none of the 1 image files could be read"):
        dataset_index.index_dataset(tmp_path)


def test_figures_build(cls_index, tmp_path):
    tax, images = cls_index.taxonomy, cls_index.images
    figs = [
        plots.taxonomy_sunburst(stats.level_counts(images, tax), tax),
        plots.counts_bar(stats.class_counts(images), "class", color="node"),
        plots.colour_box(images, "class", "hue"),
        plots.colour_scatter(images, "class"),
        plots.size_scatter(stats.size_counts(images)),
        plots.balance_bars(stats.balanced_counts(images, tax, min_count=1)),
        plots.mosaic_figure(*stats.mosaic(cls_index, per_group=2, size=16)),
    ]
    root, _, _ = make_split_classification(tmp_path / "splits")
    split_index = dataset_index.index_dataset(root)
    figs.append(plots.crosstab_bar(stats.crosstab(split_index.images, "class", "split")))
    figs.append(plots.distance_hist(stats.duplicates(split_index.images)))
    assert all(len(f.data) > 0 for f in figs)
    sun = figs[0].data[0]
    assert dict(zip(sun.ids, sun.values, strict=True))["myeloid"] == 9


@pytest.mark.realdata
@pytest.mark.slow
def test_txl_pbc_sources_differ_in_colour(shared_data):
    index = dataset_index.index_dataset(shared_data / "txl_pbc")
    s = stats.summary(index)
    assert s["per_split"] == {"train": 845, "val": 240, "test": 118} and s["readable"] == 1203
    assert s["boxes"]["WBC"] > 1000 and s["boxes"]["RBC"] > s["boxes"]["WBC"]
    colour = stats.colour_table(index.images, "source").set_index("source")
    assert colour.loc["PBC", "mean_r_mean"] - colour.loc["Raabin-WBC", "mean_r_mean"] > 20  # another scanner/stain
    assert colour.loc["PBC", "stained_mean"] < colour.loc["Raabin-WBC", "stained_mean"]  # single cells vs full fields
