"""White cells of three other labs, labelled by us: 5-class accuracy of classifiers, and an export for training.

    python bench/other_labs_labelled.py --models classifier_lite0_v4 classifier_lite0
    python bench/other_labs_labelled.py --export-train /tmp/other_labs   # <node>/<image> crops of the train part

The labels (``bench/data/txl_pbc_wbc_labels.csv``) are ours: 336 white-cell boxes of TXL-PBC's Raabin-WBC, BCCD
and BCDD images, named neutrophil / lymphocyte / monocyte / eosinophil / basophil from contact sheets of the
crops by the engineers, **not by a hematologist**. Cells we were not sure of were left out, so the set is easier
than real smears (no blasts, no reactive or atypical cells, no smudges). It is a proxy for "another lab", with
known limits:

- ``part=eval`` boxes come from TXL-PBC's val and test images, ``part=train`` from its train images: no image
  is in both parts.
- The shares are not the labs' differentials (TXL-PBC's Raabin-WBC images over-sample rare classes).
- A model trained on the train part has seen these three labs' stains: its figures here are no longer
  zero-shot, and the gain it shows is an upper bound on the gain at a lab it never saw.

A fourth row, ``BCCD, more images (80 cells)``, scores white cells of the BCCD images that ``cbc/`` holds and TXL-PBC
does not (``bench/data/bccd_cbc_wbc_labels.csv``, labelled by us the same way on 2026-12-02: 157 cells, 109
neutrophils, 25 eosinophils, 18 lymphocytes, 4 monocytes, 1 basophil; 47 unsure cells left out). Its ``part``
column splits them by image: odd image numbers are ``eval`` (80 cells: 54 N, 13 E, 10 L, 3 M), even ones
``train`` (77 cells: 55 N, 12 E, 8 L, 1 M, 1 B; exported with ``--export-train``). Only the eval part is scored.
No image is in TXL-PBC (by original name; no perceptual hash within 10 bits of one), but they are the same lab's
smears, perhaps the same patients': a model trained on TXL-PBC's BCCD cells has seen that lab.

Crops are cut as the slide pipeline cuts a detection (``crop_box`` at the model's ``crop_scale``), then go
through the model's own framing and colour steps. ``accuracy`` is forced choice over the 8 PBC groups (a
call outside the five is wrong); ``flagged`` is the review verdict's share; ``wrong & unflagged`` are silent
errors, the ones that reach a differential.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

LABELS = Path(__file__).parent / "data" / "txl_pbc_wbc_labels.csv"
CBC_LABELS = Path(__file__).parent / "data" / "bccd_cbc_wbc_labels.csv"
SOURCES = ("Raabin-WBC", "BCCD", "BCDD")
CBC_ROW = "BCCD, more images (80 cells)"  # BCCD images TXL-PBC does not hold (odd numbers): more eval cells


def txl_root() -> Path:
    """TXL-PBC under the data folder (``../shared/data`` or ``CELLKIT_DATA_DIR``); stops the bench when absent."""
    from cellkit import config

    data = config.data_dir()
    if data is None or not (data / "txl_pbc").is_dir():
        raise SystemExit("no ../shared/data/txl_pbc: set CELLKIT_DATA_DIR")
    return data / "txl_pbc"


def labelled_crops(root: Path, part: str, scale: float) -> dict[str, list[tuple[str, np.ndarray, str]]]:
    """{source: [(image#box, crop, label), ...]} for one part of the label file."""
    from cellkit.crops import crop_box
    from cellkit.io import read_image

    out: dict[str, list[tuple[str, np.ndarray, str]]] = {}
    with LABELS.open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["part"] == part]
    for r in rows:
        image = read_image(root / "images" / r["image"])
        h, w = image.shape[:2]
        line = (root / "labels" / r["image"]).with_suffix(".txt").read_text().splitlines()[int(r["wbc_box"])]
        cls, cx, cy, bw, bh = (float(v) for v in line.split()[:5])
        if int(cls) != 0:
            raise SystemExit(f"{r['image']} box {r['wbc_box']} is not a white-cell box: the label file is stale")
        box = [(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]
        out.setdefault(r["source"], []).append(
            (f"{r['image']}#{r['wbc_box']}", crop_box(image, box, scale), r["label"])
        )
    return out


def cbc_crops(data: Path, scale: float, part: str = "eval") -> list[tuple[str, np.ndarray, str]]:
    """The white cells of one ``part`` (``eval`` / ``train``) of ``bench/data/bccd_cbc_wbc_labels.csv``: BCCD
    images of ``cbc/`` that TXL-PBC does not hold (checked by original file name and perceptual hash, none within
    10 bits of a TXL-PBC BCCD image), cut as the slide pipeline cuts a detection. ``wbc_box`` counts the image's
    WBC objects in its VOC file's order. Labelled by us from contact sheets, not by a hematologist; cells we were
    unsure of (blurred, cut by the border, overlapping) were left out. [] when ``cbc/`` is absent."""
    import xml.etree.ElementTree as ET

    from cellkit.crops import crop_box
    from cellkit.io import read_image

    folder = data / "cbc" / "Training"
    if not folder.is_dir():
        return []
    out = []
    with CBC_LABELS.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            if r["part"] != part:
                continue
            objects = ET.parse(folder / "Annotations" / f"{Path(r['image']).stem}.xml").findall("object")
            wbc = [o.find("bndbox") for o in objects if (o.findtext("name") or "").strip().upper() == "WBC"]
            box = [float(wbc[int(r["wbc_box"])].findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            image = read_image(folder / "Images" / r["image"])
            out.append((f"cbc/{r['image']}#{r['wbc_box']}", crop_box(image, box, scale), r["label"]))
    return out


def score(clf: object, items: list[tuple[str, np.ndarray, str]]) -> dict[str, object]:
    """Accuracy, balanced accuracy, per-class recall, flagged share, silent errors and the top confusions."""
    group = clf.taxonomy.primary_grouping()
    preds = clf.predict([c for _, c, _ in items])
    truth = [t for *_, t in items]
    called = [group[p.leaf] for p in preds]
    ok = np.array([a == b for a, b in zip(truth, called, strict=True)])
    flagged = np.array([p.label == "unknown" for p in preds])
    classes = sorted(set(truth))
    recall = {c: round(float(ok[[t == c for t in truth]].mean()), 3) for c in classes}
    confusions = Counter(f"{a}->{b}" for a, b, o in zip(truth, called, ok, strict=True) if not o)
    return {
        "n": len(items),
        "accuracy": round(float(ok.mean()), 3),
        "balanced_accuracy": round(float(np.mean(list(recall.values()))), 3),
        "recall": recall,
        "flagged": round(float(flagged.mean()), 3),
        "wrong_unflagged": round(float((~ok & ~flagged).mean()), 3),
        "accuracy_unflagged": round(float(ok[~flagged].mean()), 3) if (~flagged).any() else None,
        "top_confusions": dict(confusions.most_common(4)),
    }


def write_crops(out: Path, source: str, items: list[tuple[str, np.ndarray, str]]) -> int:
    """Write one source's crops as ``<node>/<source>_<image>_<box>.png`` (the layout of ``--extra`` and adapt)."""
    import cv2

    for name, crop, label in items:
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{source}_{Path(name.split('#')[0]).stem}_{name.split('#')[1]}"
        cv2.imwrite(str(folder / f"{stem}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return len(items)


def export(root: Path, out: Path, scale: float) -> None:
    """Write the train part under ``out`` (every source, and the train images of ``cbc/``'s BCCD cells)."""
    n = sum(write_crops(out, source, items) for source, items in labelled_crops(root, "train", scale).items())
    n += write_crops(out, "BCCD-cbc", cbc_crops(root.parent, scale, "train"))
    print(f"{n} crops written under {out}")


CANNOT_SHOW = (
    "Labels by engineers, not a hematologist; only cells we were sure of (no blasts, reactive or atypical cells); "
    "three labs, 143 cells, so one cell is 0.7 points; a model trained on the train part has seen these labs' "
    "stains, so its figures are not zero-shot."
)


def write_card(spec: object, rows: dict[str, dict[str, object]], folder: Path) -> None:
    """Store the figures in the model card (``card["other_labs_labelled"]``), saying whether it saw these labs."""
    import datetime

    extra = spec.card.get("training", {}).get("config", {}).get("extra") or []
    spec.card["other_labs_labelled"] = {
        "command": f"python bench/other_labs_labelled.py --models {spec.name} --write-card",
        "measured": datetime.date.today().isoformat(),
        "labels": "bench/data/txl_pbc_wbc_labels.csv (part eval: TXL-PBC val and test images)",
        "trained_on_these_labs": bool(extra),
        "rows": rows,
        "cannot_show": CANNOT_SHOW,
    }
    spec.save(folder)
    print(f"written to {folder / (spec.name + '.json')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=[None], help="classifier names (default: the default one)")
    parser.add_argument("--export-train", type=Path, default=None, help="write the train part here and stop")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--write-card", action="store_true", help="store the figures in each model's card")
    parser.add_argument(
        "--cut", type=float, default=None, help="cut cells at this x their box (default: model crop_scale; 5: loose)"
    )
    args = parser.parse_args()
    if args.write_card and args.cut is not None:
        raise SystemExit("--write-card stores the figures of the model's own framing: leave out --cut")

    import torch

    from cellkit import config
    from cellkit.classify import load_classifier

    torch.set_num_threads(args.threads)
    root = txl_root()
    if args.export_train:
        export(root, args.export_train, 2.5)
        return
    report: dict[str, dict[str, object]] = {}
    for name in args.models:
        clf = load_classifier(name)
        crops = labelled_crops(root, "eval", args.cut or clf.spec.crop_scale)
        rows = {src: score(clf, crops[src]) for src in SOURCES if src in crops}
        every = [it for src in SOURCES for it in crops.get(src, [])]
        rows["all three"] = score(clf, every)
        more = cbc_crops(root.parent, args.cut or clf.spec.crop_scale)
        if more:
            rows[CBC_ROW] = score(clf, more)
        report[clf.spec.name] = rows
        if args.write_card:
            write_card(clf.spec, rows, config.weights_dir())
        for src, row in rows.items():
            print(
                f"{clf.spec.name:<24} {src:<11} n={row['n']:<4} acc {row['accuracy']:.3f} "
                f"balanced {row['balanced_accuracy']:.3f} flagged {row['flagged']:.2f} "
                f"wrong&unflagged {row['wrong_unflagged']:.2f}  recall {row['recall']}  {row['top_confusions']}"
            )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
