"""Red cells found on Chula RBC-12 smears (another lab, 1000x): recall of the labelled points and boxes per cell.

Run: ``python bench/rbc_detection.py [--detector NAME] [--part test] [--threads 2]``

Images are those of the by-image split's ``--part`` (``cellkit.rbc_boxes.image_split``): a detector trained
with ``--chula`` saw only the train part.

Every labelled red cell is a point; a point is found when it lies inside an ``rbc`` box
(``cellkit.points.match_points``). Issue 11's target is recall >= 0.95 with one box per cell.
What it cannot show: cells the annotators left unlabelled (boxes on them count as neither right nor wrong).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/chula_rbc12")
    parser.add_argument("--detector", default=None)
    parser.add_argument("--n", type=int, default=0, help="at most this many images (0 = all of the part)")
    parser.add_argument(
        "--part", default="test", choices=["train", "val", "test", "all"], help="images of the by-image split"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from cellkit.detect import load_detector
    from cellkit.io import read_image
    from cellkit.points import match_points, read_points
    from cellkit.rbc_boxes import chula_images, image_split
    from cellkit.slide import detect_tiled

    torch.set_num_threads(args.threads)
    root = Path(args.data)
    images = chula_images(root)
    part = image_split([p.stem for p in images])  # the split the detector's Chula training images came from
    images = [p for p in images if args.part == "all" or part[p.stem] == args.part]
    images = images[: args.n] if args.n else images
    det = load_detector(args.detector)
    rows, seconds = [], 0.0
    for path in images:
        pts = read_points(root / "labels" / f"{path.stem}.txt")
        img = read_image(path)
        t = time.perf_counter()
        d = detect_tiled(img, det)
        seconds += time.perf_counter() - t
        rows.append(match_points(pts.xy, d.xyxy[d.class_name == "rbc"]))
    points = sum(r["points"] for r in rows)
    recall = sum(r["recall"] * r["points"] for r in rows) / max(1, points)
    per_cell = np.mean([r["boxes_per_cell"] for r in rows if r["recall"] > 0])
    twice = sum(r["in_two_or_more"] * r["points"] for r in rows) / max(1, points)
    print(f"detector        {det.spec.name}")
    print(f"images          {len(rows)} of the {args.part} part ({points} labelled red cells)")
    print(f"recall          {recall:.3f} of the points inside an rbc box (target >= 0.95)")
    print(f"boxes per cell  {per_cell:.2f} per found cell (target 1.0); {twice:.1%} of cells in two or more boxes")
    print(f"speed           {seconds / max(1, len(rows)):.3f} s per 640x480 field (detection only)")


if __name__ == "__main__":
    main()
