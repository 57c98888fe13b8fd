"""Real-data checks for other labs (../shared/data; skipped with a reason when it is absent)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cellkit.classify import load_classifier
from cellkit.errors import CellkitError
from cellkit.framing import cut_square, locate_cell
from cellkit.io import read_image
from cellkit.taxonomy import UNKNOWN

pytestmark = pytest.mark.realdata


def wbc_boxes(txl, per_source: int = 25):
    """(source, image, WBC box in pixels) from TXL-PBC's test split, a few per source."""
    with open(txl / "metadata.csv", newline="", encoding="utf-8") as fh:
        source_of = {r["New_Image_Name"]: r["Source_Dataset"] for r in csv.DictReader(fh)}
    taken: dict[str, int] = {}
    for path in sorted((txl / "images" / "test").glob("*.png")):
        src = source_of.get(path.name)
        if src is None or taken.get(src, 0) >= per_source:
            continue
        rows = [r.split() for r in (txl / "labels" / "test" / f"{path.stem}.txt").read_text().splitlines() if r]
        image = read_image(path)
        h, w = image.shape[:2]
        for r in rows:
            if r[0] == "0":
                cx, cy, bw, bh = map(float, r[1:5])
                taken[src] = taken.get(src, 0) + 1
                yield src, image, np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
                break


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def test_framer_finds_white_cells_of_four_labs_in_tight_and_pbc_like_crops(shared_data):
    hits: dict[tuple[str, str], list[bool]] = {}
    for src, image, box in wbc_boxes(shared_data / "txl_pbc"):
        for name, scale in (("tight", 1.1), ("pbc_like", 2.5)):
            side = round(scale * max(box[2] - box[0], box[3] - box[1]))
            left, top = round((box[0] + box[2] - side) / 2), round((box[1] + box[3] - side) / 2)
            loc = locate_cell(cut_square(image, left, top, side))
            hits.setdefault((src, name), []).append(loc.found and iou(loc.xyxy, box - [left, top, left, top]) >= 0.5)
    assert len({s for s, _ in hits}) == 4
    for (src, name), h in hits.items():  # bench/framing_bench.py: tight 0.94-0.98, PBC-like 0.80-0.93
        assert np.mean(h) >= (0.85 if name == "tight" else 0.6), f"{src} {name}: {np.mean(h):.2f}"


def test_shipped_model_flags_red_cells_and_rarely_known_white_cells(shared_data):
    from cellkit import config
    from cellkit.ood import yolo_wbc_crops
    from cellkit.train.data import label_for

    try:
        clf = load_classifier()
    except CellkitError as exc:
        pytest.skip(f"no bundled classifier: {exc}")
    split = json.loads((config.weights_dir() / "pbc_split.json").read_text())["test"]
    sample = [split[i] for i in np.random.default_rng(1).choice(len(split), 150, replace=False)]
    preds = clf.predict([read_image(shared_data / "pbc" / p) for p in sample])
    assert np.mean([p.label == UNKNOWN for p in preds]) <= 0.1  # calibrated to flag 5 % of known cells
    group = clf.taxonomy.primary_grouping()
    truth = [group[label_for(p, clf.taxonomy)] for p in sample]
    assert np.mean([group[p.leaf] == t for p, t in zip(preds, truth, strict=True)]) >= 0.93
    rbc = yolo_wbc_crops(shared_data / "txl_pbc", scale=clf.spec.crop_scale, max_per_source=15, wbc_class=1)
    crops = [c for items in rbc.values() for _, c in items]
    assert np.mean([p.label == UNKNOWN for p in clf.predict(crops)]) >= 0.7  # a red cell is no white cell


def test_bundled_default_keeps_pbc_at_home_as_its_card_says(shared_data):
    """Issue 9's must-not-fall targets, measured from the image files on the whole PBC test split."""
    from cellkit import config
    from cellkit.evaluate import evaluate_classifier

    try:
        clf = load_classifier()
    except CellkitError as exc:
        pytest.skip(f"no bundled classifier: {exc}")
    report = evaluate_classifier(clf, shared_data / "pbc", config.weights_dir() / "pbc_split.json", "test")
    card = clf.spec.card["metrics_test"]
    assert report["n"] == card["n"] == 2046
    for level in ("leaf", "pbc8"):  # the card holds what evaluation from the files gives
        assert report[level]["macro_f1"] == pytest.approx(card[level]["macro_f1"], abs=2e-3)
    assert report["pbc8"]["macro_f1"] >= 0.985 and report["leaf"]["macro_f1"] >= 0.91


def test_our_labels_of_other_labs_cells_point_at_white_cells_and_keep_parts_apart(shared_data):
    """bench/data/txl_pbc_wbc_labels.csv: every row is a white-cell box, and no image is in both parts."""
    from pathlib import Path

    labels = Path(__file__).resolve().parents[1] / "bench" / "data" / "txl_pbc_wbc_labels.csv"
    with labels.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 300
    parts = {p: {r["image"] for r in rows if r["part"] == p} for p in ("train", "eval")}
    assert parts["train"] and parts["eval"] and not parts["train"] & parts["eval"]
    assert all(r["image"].startswith("train/") for r in rows if r["part"] == "train")
    assert not any(r["image"].startswith("train/") for r in rows if r["part"] == "eval")
    for r in rows:
        line = (shared_data / "txl_pbc" / "labels" / r["image"]).with_suffix(".txt").read_text().splitlines()
        assert line[int(r["wbc_box"])].split()[0] == "0", r
    assert {r["label"] for r in rows} == {"neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil"}


def test_bundled_default_on_other_labs_cells_is_what_its_card_says(shared_data):
    """The card's other-lab figures (bench/other_labs_labelled.py) are what the crops give today."""
    import importlib.util
    from pathlib import Path

    try:
        clf = load_classifier()
    except CellkitError as exc:
        pytest.skip(f"no bundled classifier: {exc}")
    card = clf.spec.card.get("other_labs_labelled")
    if not card:
        pytest.skip(f"{clf.spec.name}'s card has no other_labs_labelled figures")
    bench = Path(__file__).resolve().parents[1] / "bench" / "other_labs_labelled.py"
    spec = importlib.util.spec_from_file_location("other_labs_labelled", bench)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    crops = module.labelled_crops(shared_data / "txl_pbc", "eval", clf.spec.crop_scale)
    every = [it for src in module.SOURCES for it in crops.get(src, [])]
    got = module.score(clf, every)
    want = card["rows"]["all three"]
    assert got["n"] == want["n"] == 143
    assert got["accuracy"] == pytest.approx(want["accuracy"], abs=0.015)  # two cells of 143
    assert got["wrong_unflagged"] <= 0.1  # errors that reach a differential stay rare


def test_adapting_the_default_to_one_other_lab_gives_what_its_card_says(shared_data, monkeypatch, tmp_path):
    """bench/adapt_other_labs.py's first draw for Raabin-WBC: 10 labelled cells per type, scored on other images."""
    import sys
    from pathlib import Path

    from cellkit.adapt import adapt

    try:
        base = load_classifier()
    except CellkitError as exc:
        pytest.skip(f"no bundled classifier: {exc}")
    runs = {r["base_model"]: r for r in base.spec.card.get("other_labs_adapt", [])}
    if base.spec.name not in runs:
        pytest.skip(f"{base.spec.name}'s card has no other_labs_adapt figures of its own")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))
    monkeypatch.setenv("CELLKIT_HOME", str(tmp_path))
    sys.modules.pop("adapt_other_labs", None)
    import adapt_other_labs as bench

    root = shared_data / "txl_pbc"
    train = bench.labelled_crops(root, "train", base.spec.crop_scale)["Raabin-WBC"]
    test = bench.labelled_crops(root, "eval", base.spec.crop_scale)["Raabin-WBC"]
    lab = bench.sample(train, 10, seed=0)
    assert lab.counts() == {c: 10 for c in ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")}
    got = bench.score(adapt(base, "bench_0", lab, folds=5, seed=0).classifier, test)
    want = runs[base.spec.name]["rows"]["Raabin-WBC"]["after_labelled"]["balanced_accuracy_per_seed"][0]
    assert got["balanced_accuracy"] == pytest.approx(want, abs=0.03)
    assert got["wrong_unflagged"] <= 0.05
