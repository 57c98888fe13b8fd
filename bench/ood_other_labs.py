"""Crops from other labs: predicted-class spread and OOD scores per TXL-PBC source vs the PBC test split.

    python bench/ood_other_labs.py --per-source 150 --write-card

WBC boxes (class 0) of TXL-PBC images are cut with ``crop_box(scale=spec.crop_scale)``. The PBC
source of TXL-PBC holds PBC cells (possibly even training images), so it is a sanity row, not a test.
The reference row ``PBC test split`` uses the classifier's held-out test images (weights/pbc_split.json).
With ``--write-card`` the table goes into the model card as ``card["ood_other_sources"]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--per-source", type=int, default=150, help="crops per source (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args()

    import torch

    from cellkit import config
    from cellkit.classify import load_classifier
    from cellkit.io import read_image
    from cellkit.ood import source_report, yolo_wbc_crops

    torch.set_num_threads(args.threads)
    clf = load_classifier(args.model)
    root = config.data_dir()
    if root is None:
        raise SystemExit("no ../shared/data: set CELLKIT_DATA_DIR")
    crops = yolo_wbc_crops(root / "txl_pbc", scale=clf.spec.crop_scale, max_per_source=args.per_source)
    split = config.weights_dir() / "pbc_split.json"
    if split.is_file():
        test = json.loads(split.read_text())["test"]
        rng = np.random.default_rng(0)
        pick = [test[i] for i in rng.choice(len(test), min(len(test), args.per_source or len(test)), replace=False)]
        crops["PBC test split (reference)"] = [(p, read_image(root / "pbc" / p)) for p in pick]
    report = source_report(clf, crops)
    cols = ["n", "ood_score_median", "ood_flagged", "top_class_share", "mean_confidence_leaf"]
    print(f"{'source':28s} " + " ".join(f"{c:>20s}" for c in cols))
    for source, row in report.items():
        print(f"{source:28s} " + " ".join(f"{row[c]:>20}" for c in cols))
        shares = {k[6:]: v for k, v in row.items() if k.startswith("share_") and v > 0}
        print(" " * 29 + ", ".join(f"{k} {v:.2f}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1])))
    if args.write_card:
        spec = clf.spec
        spec.card["ood_other_sources"] = report
        spec.card["ood_other_sources_command"] = f"python bench/ood_other_labs.py --per-source {args.per_source}"
        spec.save(config.weights_dir())
        print(f"written to {config.weights_dir() / (spec.name + '.json')}")


if __name__ == "__main__":
    main()
