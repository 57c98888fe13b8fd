"""Tables of predictions: one row per input in order, errors kept as rows, batches bounded."""

from __future__ import annotations

import numpy as np

import cellkit.results_table as rt
from cellkit.classify import build_tiny_classifier
from cellkit.io import ImageItem
from cellkit.synth import make_crop


def test_rows_in_input_order_with_errors_and_display_names(monkeypatch):
    clf = build_tiny_classifier()
    monkeypatch.setattr(rt, "PENDING_PIXELS", 2 * 64 * 64)  # two crops per batch at most
    items = [ImageItem(f"c{k}.png", make_crop(k % 4, size=64, seed=k)) for k in range(5)]
    items.insert(2, ImageItem("broken.png", error="not an image"))
    done: list[int] = []
    rows = rt.classify_items(clf, items, batch_size=8, progress=done.append)
    assert [r["path"] for r in rows] == ["c0.png", "c1.png", "broken.png", "c2.png", "c3.png", "c4.png"]
    assert rows[2]["error"] == "not an image" and "label" not in rows[2]
    assert sum(done) == 6 and max(done) <= 2  # every item reported, in bounded batches
    columns = rt.result_columns(clf.taxonomy)
    for row in (r for r in rows if not r["error"]):
        assert set(row) <= set(columns) and row["shown_as"] == clf.taxonomy.display(row["label"])
        assert np.isclose(sum(row[f"p_{leaf}"] for leaf in clf.taxonomy.leaves), 1.0, atol=1e-4)


def test_the_readable_table_puts_each_probability_beside_its_own_name():
    """ "Confidence" once sat beside the best guess but was another node's (basophil 0.32 shown with mature
    myeloid's 0.55); a flagged row has no confidence, its best guess its own probability."""
    import pandas as pd

    clf = build_tiny_classifier()
    items = [ImageItem(f"c{k}.png", make_crop(k % 4, size=64, seed=k)) for k in range(4)]
    items.append(ImageItem("tiny.png", np.full((1, 1, 3), 100, np.uint8)))  # goes to review: too small
    items.append(ImageItem("broken.png", error="not an image"))
    table = pd.DataFrame(rt.classify_items(clf, items), columns=rt.result_columns(clf.taxonomy))
    shown = rt.readable_results(table, clf.taxonomy)
    for (_, row), (_, raw) in zip(shown.iterrows(), table.iterrows(), strict=True):
        if raw["error"]:
            assert np.isnan(row["P(best guess)"])
            continue
        assert row["P(best guess)"] == raw[f"p_{raw['leaf']}"]
        if raw["label"] == "unknown":
            assert np.isnan(row["Confidence"])
        else:
            assert row["Confidence"] == raw[f"p_{raw['label']}"]
    assert table["label"].iloc[4] == "unknown"
