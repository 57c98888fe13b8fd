"""Compare trained classifiers on the same held-out PBC test split and the same speed benchmark.

    python bench/compare_classifiers.py --extra ~/.cache/cellkit/compare_weights --threads 2

Reads the model cards (test metrics written by `cellkit train classifier`) of every classifier in
weights/ (shipped) and in the ``--extra`` folders (trained for the comparison, not shipped), measures
each one's speed under identical conditions (``measure_speed``: median single-crop latency, batch-64
throughput) and writes weights/classifier_comparison.json, which the Models page shows.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", nargs="*", default=[], help="folders with classifiers trained for comparison")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from cellkit import config
    from cellkit.classify import load_classifier
    from cellkit.evaluate import COMPARISON_FILE, comparison_row
    from cellkit.models import list_specs
    from cellkit.train.classifier import measure_speed

    folders = [(config.weights_dir(), True)] + [(Path(f).expanduser(), False) for f in args.extra]
    rows = []
    for folder, shipped in folders:
        for spec in list_specs(folder, task="classifier"):
            if not spec.card.get("metrics_test"):
                continue
            clf = load_classifier(spec.name, folder)
            measure_speed(clf, n_single=5, batch=64, threads=args.threads)  # warm-up: the first model paid for it
            speed = measure_speed(clf, n_single=30, batch=64, threads=args.threads)
            rows.append(comparison_row(spec, speed, shipped=shipped))
            print(json.dumps(rows[-1]))
    rows.sort(key=lambda r: -(r["pbc8_f1"] or 0))
    note = (
        "Test metrics: macro precision/recall/F1 on the held-out test split (weights/pbc_split.json); "
        "pbc8 = the 8 PBC classes, leaf = the 11 subtypes (images labelled only at IG/neutrophil count at pbc8 "
        "only). Speed measured by `python bench/compare_classifiers.py` with "
        f"{args.threads} torch threads on this machine (load average {os.getloadavg()[0]:.1f} while measuring). "
        "Models trained from scratch had a smaller CPU budget (train_images_seen) than the shipped model."
    )
    out = config.weights_dir() / COMPARISON_FILE
    out.write_text(json.dumps({"rows": rows, "note": note}, indent=1) + "\n", encoding="utf-8")
    print(f"written {out}")


if __name__ == "__main__":
    main()
