"""`cellkit adapt` on an imitated other lab: 10 labelled crops per class, balanced accuracy on the rest.

The "lab" is the PBC test split under one of the robustness bench's shifts (or several at once).
From it, ``--per-class`` crops of each PBC-8 class are the lab's labelled crops (folders named by
class, as a user would give them); every other crop of the split is the lab's unseen work. We
report the balanced accuracy (PBC-8, forced choice) and the share flagged for review on those
unseen crops, before and after adapting, and the time adapting took (cross-validation included).

    python bench/adapt_bench.py --model classifier_lite0_v4 --shift "yellow stain 0.6" --shift "2x fewer pixels"

What it cannot show: a real lab's stain, scanner and patients; the shifts are synthetic and the
cells are PBC's (healthy donors).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from cellkit import config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--shift", action="append", default=[], help="a robustness.py condition name (repeatable)")
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--n", type=int, default=1200, help="unseen crops to score")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustness import all_conditions

    from cellkit.adapt import LabelledCrops, adapt
    from cellkit.classify import load_classifier
    from cellkit.io import read_image
    from cellkit.train.data import index_folder

    shifts = {name: fn for name, fn, _ in all_conditions(config.data_dir())}
    unknown = [s for s in args.shift if s not in shifts]
    if unknown:
        raise SystemExit(f"unknown shift {unknown}; choose from {list(shifts)}")
    clf = load_classifier(args.model)
    tax = clf.taxonomy
    data = config.data_dir() / "pbc"
    split = json.loads((config.weights_dir() / "pbc_split.json").read_text())
    paths, nodes = index_folder(data, tax)
    group = dict(zip(paths, (tax.primary_grouping()[n] for n in nodes), strict=True))
    test = [p for p in split["test"] if p in group]
    rng = np.random.default_rng(args.seed)
    rng.shuffle(test)
    labelled = []
    for g in tax.group_ids:
        labelled += [p for p in test if group[p] == g][: args.per_class]
    unseen = [p for p in test if p not in set(labelled)][: args.n]

    def lab(path: str) -> np.ndarray:
        img = read_image(data / path)
        for s in args.shift:
            img = shifts[s](img)
        return img

    crops = LabelledCrops([lab(p) for p in labelled], [group[p] for p in labelled], labelled)
    work = [lab(p) for p in unseen]
    truth = [group[p] for p in unseen]

    def score(c) -> dict:
        preds = c.predict(work)
        got = [tax.primary_grouping()[p.leaf] for p in preds]
        per = {g: float(np.mean([a == g for a, t in zip(got, truth, strict=True) if t == g])) for g in set(truth)}
        return {
            "balanced_accuracy": round(float(np.mean(list(per.values()))), 3),
            "flagged": round(float(np.mean([p.label == "unknown" for p in preds])), 3),
            "per_class": {k: round(v, 3) for k, v in sorted(per.items())},
        }

    before = score(clf)
    t = time.perf_counter()
    result = adapt(clf, "bench_lab", crops, seed=args.seed)
    seconds = time.perf_counter() - t
    after = score(result.classifier)
    cv = result.report["cross_validation"]
    out = {
        "model": clf.spec.name,
        "shifts": args.shift,
        "labelled": len(crops.images),
        "unseen": len(work),
        "before": before,
        "after": after,
        "adapt_seconds_with_cv": round(seconds, 1),
        "cv_on_labelled": {"before": cv["before"]["balanced_accuracy"], "after": cv["after"]["balanced_accuracy"]},
    }
    print(f"lab = PBC test split + {' + '.join(args.shift) or 'no shift'}; {len(crops.images)} labelled crops")
    print(f"{'':<28}{'before':>8}{'after':>8}")
    print(f"{'balanced accuracy (unseen)':<28}{before['balanced_accuracy']:>8.3f}{after['balanced_accuracy']:>8.3f}")
    print(f"{'flagged for review':<28}{before['flagged']:>8.1%}{after['flagged']:>8.1%}")
    cvb, cva = out["cv_on_labelled"]["before"], out["cv_on_labelled"]["after"]
    print(f"{'CV on the labelled crops':<28}{cvb:>8.3f}{cva:>8.3f}")
    for g in before["per_class"]:
        print(f"  {tax.display(g):<26}{before['per_class'][g]:>8.2f}{after['per_class'][g]:>8.2f}")
    print(f"adapt took {seconds:.1f} s ({len(crops.images)} crops, {cv['folds']}-fold CV included)")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
