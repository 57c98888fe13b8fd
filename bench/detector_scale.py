"""The cell sizes the detector was trained on: median red-cell box side per smear, by source, and how upscaled
smears look to it.

Run: ``python bench/detector_scale.py [--detector NAME] [--n 25] [--write-card]``

Per source of the detector's training data (TXL-PBC's four labs, CBC, Chula RBC-12), ``--n`` images drawn at
random: the median side of the ``rbc`` boxes it finds on each. ``--write-card`` stores the union of the
sources' 5th-95th percentile ranges (every source is a magnification it was trained on) in the detector's card
as ``reference_cell_px``. ``cellkit.scale.field_scale_warning`` warns when a field's median lies outside that
range widened by ``cellkit.scale.DETECTOR_MARGIN``: counts there are unreliable (printed below: one CBC smear
upscaled 3x gives 3 white cells for 1).
What it cannot show: a smear whose red cells are absent or packed into clumps has no reliable median, and a
magnification inside the range can still be a lab the detector never saw.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

import numpy as np


def sources(data: Path) -> dict[str, list[Path]]:
    """Image files per training source of the detector."""
    txl = data / "txl_pbc"
    with open(txl / "metadata.csv", newline="") as fh:
        by_name = {r["New_Image_Name"]: r["Source_Dataset"] for r in csv.DictReader(fh)}
    out: dict[str, list[Path]] = {}
    for part in ("train", "val", "test"):
        for p in sorted((txl / "images" / part).iterdir()):
            out.setdefault(f"TXL-PBC {by_name.get(p.name, '?')}", []).append(p)
    out["CBC"] = sorted((data / "cbc" / "Training" / "Images").iterdir())
    out["Chula RBC-12"] = sorted((data / "chula_rbc12" / "images").iterdir())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--detector", default=None)
    parser.add_argument("--n", type=int, default=25, help="images per source")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-card", action="store_true")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from cellkit.detect import load_detector
    from cellkit.io import read_image
    from cellkit.models import load_spec
    from cellkit.scale import field_scale_warning, red_cell_side
    from cellkit.slide import analyze

    torch.set_num_threads(args.threads)
    det = load_detector(args.detector)
    rng = random.Random(0)
    by_source: dict[str, dict[str, float]] = {}
    for src, files in sources(args.data).items():
        sides = []
        for p in rng.sample(files, min(args.n, len(files))):
            side = red_cell_side(analyze(read_image(p), det))
            if side is not None:
                sides.append(side)
        lo, mid, hi = np.percentile(sides, [5, 50, 95])
        by_source[src] = {
            "n": len(sides),
            "median": round(float(mid), 1),
            "range_5_95": [round(float(lo), 1), round(float(hi), 1)],
        }
        print(f"{src:<24} n={len(sides):<3} median {mid:6.1f} px   5-95 % {lo:6.1f} - {hi:6.1f}")
    lo = min(r["range_5_95"][0] for r in by_source.values())
    hi = max(r["range_5_95"][1] for r in by_source.values())
    print(f"all sources: {lo} - {hi} px")
    spec = load_spec(det.spec.name)
    spec.card["reference_cell_px"] = {
        "range_5_95": [lo, hi],
        "by_source": by_source,
        "measured": time.strftime("%Y-%m-%d"),
        "command": f"python bench/detector_scale.py --n {args.n} --write-card",
        "cannot_show": __doc__.split("What it cannot show: ")[1].strip(),
    }
    first = sources(args.data)["CBC"][0]
    image = read_image(first)
    for factor in (0.5, 1.0, 2.0, 3.0, 6.0):
        size = (int(image.shape[1] * factor), int(image.shape[0] * factor))
        result = analyze(np.asarray(Image.fromarray(image).resize(size)), det)
        side = red_cell_side(result)
        warned = bool(field_scale_warning(result, spec))
        print(f"{first.name} x{factor}: red-cell side {side:.0f} px, white cells {result.counts.get('wbc', 0)}, "
              f"warned {warned}")  # fmt: skip
    if args.write_card:
        spec.save(spec.folder or None)
        print(f"wrote reference_cell_px into {spec.name}'s card")


if __name__ == "__main__":
    main()
