"""Red-cell morphology on held-out Chula RBC-12 images: on the labelled points, and end to end from the detector.

Run: ``python bench/rbc_morphology.py --model rbc_lite0 [--detector detector] [--part test] [--threads 2]``

- *on points*: every labelled cell cropped around its point, as in training (``export_point_crops``);
- *end to end*: ``cellkit.slide.analyze`` with the red-cell model (the detector's boxes, crops at 2x the
  median box side); each labelled point takes the box it lies in (nearest centre if several) and that box's
  label (the best guess, flagged or not); a point in no box counts as an error (``missed``). This is what a
  user gets.

Figures: accuracy, macro-F1 over the 12 named forms (``uncategorised`` left out, as issue 11 asks), and
per-form F1. Images of the ``--part`` of the by-image split (``cellkit.rbc_boxes.image_split``) only.
What it cannot show: other labs' red cells (one lab, one microscope), and cells nobody labelled.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

MISSED = "missed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/chula_rbc12")
    parser.add_argument("--model", default="rbc_lite0")
    parser.add_argument("--detector", default=None)
    parser.add_argument("--part", default="test", choices=["val", "test"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="", help="write the figures as JSON here")
    parser.add_argument("--card", action="store_true", help="also keep them in the model's card (chula_bench)")
    parser.add_argument(
        "--compare", action="store_true", help="also keep the model's row in weights/rbc_comparison.json"
    )
    args = parser.parse_args()

    import torch

    from cellkit.classify import load_classifier
    from cellkit.detect import load_detector
    from cellkit.evaluate import per_class_metrics
    from cellkit.io import read_image
    from cellkit.points import points_in_boxes, read_points
    from cellkit.rbc_boxes import boxes_from_points, chula_images, image_split, slide_crop
    from cellkit.slide import analyze

    torch.set_num_threads(args.threads)
    root = Path(args.data)
    clf, det = load_classifier(args.model), load_detector(args.detector)
    names = {str(k): v for k, v in clf.taxonomy.datasets["chula_rbc12"]["folders"].items()}
    images = chula_images(root)
    part = image_split([p.stem for p in images])
    scale = float(clf.spec.crop_scale)
    truth, on_points, end_to_end = [], [], []
    for path in [p for p in images if part[p.stem] == args.part]:
        pts = read_points(root / "labels" / f"{path.stem}.txt")
        if not len(pts):
            continue
        image = read_image(path)
        labels = [names[str(int(c))] for c in pts.class_id]
        own = boxes_from_points(image, pts.xy)
        own_sides = np.maximum(own.xyxy[:, 2] - own.xyxy[:, 0], own.xyxy[:, 3] - own.xyxy[:, 1])[own.found]
        if not len(own_sides):
            continue
        side = scale * float(np.median(own_sides))
        crops = [slide_crop(image, (float(x), float(y)), side) for x, y in pts.xy]
        on_points += [p.leaf for p in clf.predict(crops)]
        # end to end: the slide pipeline itself (detector boxes, crops at the slide's scale, the red-cell model)
        res = analyze(image, det, None, by_class={"rbc": clf})
        is_rbc = res.detections.class_name == "rbc"
        boxes = res.detections.xyxy[is_rbc]
        box_labels = np.asarray(res.detections.data["leaf"], dtype=object)[is_rbc] if len(boxes) else []
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        inside = points_in_boxes(pts.xy, boxes)
        for i, (x, y) in enumerate(pts.xy):
            hits = np.flatnonzero(inside[i])
            if not len(hits):
                end_to_end.append(MISSED)
                continue
            best = hits[np.argmin(((centres[hits] - (x, y)) ** 2).sum(1))]
            end_to_end.append(str(box_labels[best]))
        truth += labels
    forms = [n for n in clf.taxonomy.leaves if n != "uncategorised"]
    results = {"model": clf.spec.name, "detector": det.spec.name, "part": args.part, "cells": len(truth)}
    for key, pred in (("on_points", on_points), ("end_to_end", end_to_end)):
        keep = [i for i, t in enumerate(truth) if t in forms]
        classes = [*forms, "uncategorised", MISSED]
        m = per_class_metrics([truth[i] for i in keep], [pred[i] for i in keep], classes)
        f1 = {c: m["per_class"][c]["f1"] for c in forms}
        results[key] = {
            "accuracy_12_forms": round(m["accuracy"], 4),
            "macro_f1_12_forms": round(float(np.mean(list(f1.values()))), 4),
            "missed": round(float(np.mean([p == MISSED for p in pred])), 4),
            "f1": f1,
        }
        print(f"{key:<11} cells {len(keep)}  accuracy {m['accuracy']:.3f}  macro-F1 (12 forms) "
              f"{np.mean(list(f1.values())):.3f}  missed {results[key]['missed']:.1%}")  # fmt: skip
        print("            " + ", ".join(f"{clf.taxonomy.display(c)} {v:.2f}" for c, v in f1.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    if args.card:  # the Models page's red-cell comparison reads these from the cards
        from cellkit.models import load_spec

        spec = load_spec(args.model)
        cmd = f"python bench/rbc_morphology.py --model {args.model} --part {args.part} --threads {args.threads} --card"
        spec.card["chula_bench"] = {**results, "command": cmd}
        print(f"card updated: {spec.save(spec.weights_path.parent)}")
    if args.compare:  # a row for the Models page even when the model is not shipped in weights/
        from cellkit import config
        from cellkit.evaluate import RBC_COMPARISON_FILE, red_cell_comparison
        from cellkit.models import load_spec

        spec = load_spec(args.model)
        spec.card["chula_bench"] = results
        row = {**red_cell_comparison([spec], folder="/nonexistent")[0], "shipped": spec.bundled}
        path = config.weights_dir() / RBC_COMPARISON_FILE
        table = json.loads(path.read_text()) if path.is_file() else {"rows": []}
        table["rows"] = [r for r in table["rows"] if r["name"] != row["name"]] + [row]
        table["command"] = "python bench/rbc_morphology.py --model NAME --compare"
        path.write_text(json.dumps(table, indent=1) + "\n")
        print(f"comparison row kept in {path}")


if __name__ == "__main__":
    main()
