"""End-to-end slide analysis time: a 640x480 smear, then larger images (time vs area should be linear).

Run: ``python bench/bench_slide.py`` (bundled detector + classifier from weights/). Uses real
TXL-PBC test images (a BCCD 640x480 field, and mosaics of test images for the large sizes) when
../shared/data is present, otherwise synthetic smears. Prints one line per size.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np


def _fields(n: int) -> list[np.ndarray]:
    """Real 640x480 smear fields when available (BCCD source of TXL-PBC test), else synthetic."""
    from cellkit import config
    from cellkit.io import read_image
    from cellkit.synth import make_smear

    root = config.data_dir()
    out: list[np.ndarray] = []
    if root is not None and (root / "txl_pbc" / "images" / "test").is_dir():
        for p in sorted((root / "txl_pbc" / "images" / "test").glob("*.png")):
            img = read_image(p)
            if img.shape[:2] == (480, 640):
                out.append(img)
            if len(out) == n:
                return out
    return out + [make_smear(640, 480, seed=s)[0] for s in range(n - len(out))]


def mosaic(width: int, height: int, fields: list[np.ndarray]) -> np.ndarray:
    """A large image made of smear fields side by side (cropped to width x height)."""
    rows, cols = -(-height // 480), -(-width // 640)
    strips = [np.concatenate([fields[(r * cols + c) % len(fields)] for c in range(cols)], axis=1) for r in range(rows)]
    return np.ascontiguousarray(np.concatenate(strips, axis=0)[:height, :width])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="640x480,1280x960,2560x1920,4000x3000")
    ap.add_argument("--repeat", type=int, default=5, help="runs per size (median reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--detector-dir", default=None, help="folder holding the detector card (default weights/)")
    ap.add_argument("--no-rbc", action="store_true", help="leave the red-cell model out (white cells only)")
    args = ap.parse_args()
    import torch

    from cellkit.classify import load_classifier
    from cellkit.detect import load_detector
    from cellkit.slide import analyze

    if args.threads:
        torch.set_num_threads(args.threads)
    from cellkit.errors import CellkitError

    det = load_detector(folder=Path(args.detector_dir) if args.detector_dir else None)
    by_class = {}
    try:
        clf = load_classifier()
        from cellkit.models import list_specs

        red = list_specs(task="classifier", cell_type="rbc")
        if red and not args.no_rbc:
            by_class = {"rbc": load_classifier(red[0].name)}  # every model the pipeline runs
    except CellkitError as exc:
        clf = None
        print(f"no classifier ({exc}): timing detection only")
    fields = _fields(8)
    print(
        f"detector {det.spec.name} (input {det.spec.input_size}, tile {det.tile}/{det.overlap}), "
        f"classifier {clf.spec.name if clf else 'none'}, "
        f"red cells {by_class['rbc'].spec.name if by_class else 'none'}; "
        f"torch threads {torch.get_num_threads()}"
    )
    analyze(fields[0], det, clf, by_class=by_class)  # warm-up
    base = None
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        img = fields[0] if (w, h) == (640, 480) else mosaic(w, h, fields)
        runs, res = [], None
        for _ in range(args.repeat if w * h <= 2_000_000 else max(1, args.repeat // 3)):
            t = time.perf_counter()
            res = analyze(img, det, clf, by_class=by_class)
            runs.append(time.perf_counter() - t)
        sec = statistics.median(runs)
        per_mpx = sec / (w * h / 1e6)
        base = base or per_mpx
        print(
            f"{w}x{h}: {sec:.3f} s end to end (detect {res.timings['detect_s']:.3f}, classify "
            f"{res.timings['classify_s']:.3f}); {per_mpx:.3f} s/Mpx ({per_mpx / base:.2f}x the 640x480 rate); "
            f"cells {sum(res.counts.values())} (wbc {res.counts['wbc']})"
        )


if __name__ == "__main__":
    main()
