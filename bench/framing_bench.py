"""How well does the framer find the white cell in crops of other labs, framed any way?

Uses TXL-PBC's hand-drawn WBC boxes (four sources: PBC, Raabin-WBC, BCCD, BCDD). For every box,
crops are cut the ways users send them - PBC-like (2.5x the box), tight (1.1x), loose (5x),
off-centre (2.5x, shifted by 0.6 box sides) and at an image border (the crop clipped at the cell's
edge) - and ``cellkit.framing.locate_cell`` must find the cell. Reported per source and framing:
IoU of the found cell box with the drawn box, the share with IoU >= 0.5, and the median ratio of
drawn cell side / found nucleus side (the constant ``CELL_PER_NUCLEUS``), plus ms per crop.

    python bench/framing_bench.py [--data ../shared/data/txl_pbc] [--per-source 150] [--seed 0] [--grey]

``--grey`` turns every crop to greyscale (luminance) first: how well the darkness fallback for crops without
colour (``cellkit.framing.MONO_CHROMA``) finds the cell.

What it cannot show: framing of cell types none of these sources has (blasts, smudge cells), and
boxes drawn by other annotators.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from cellkit.framing import cut_square, locate_cell
from cellkit.io import read_image

FRAMINGS = {"pbc_like": (2.5, 0.0), "tight": (1.1, 0.0), "loose": (5.0, 0.0), "off_centre": (2.5, 0.6)}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def boxes_by_source(root: Path, per_source: int, seed: int = 0):
    with open(root / "metadata.csv", newline="", encoding="utf-8") as fh:
        source_of = {r["New_Image_Name"]: r["Source_Dataset"] for r in csv.DictReader(fh)}
    images = sorted((root / "images").rglob("*.png"))
    np.random.default_rng(seed).shuffle(images)
    out: dict[str, list] = {}
    for path in images:
        src = source_of.get(path.name)
        if src is None or len(out.get(src, [])) >= per_source:
            continue
        lab = root / "labels" / path.parent.name / (path.stem + ".txt")
        if not lab.is_file():
            continue
        rows = [r.split() for r in lab.read_text().splitlines() if r.strip()]
        wbc = [list(map(float, r[1:5])) for r in rows if r[0] == "0"]
        if not wbc:
            continue
        image = read_image(path)
        h, w = image.shape[:2]
        for cx, cy, bw, bh in wbc:
            box = np.array([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
            out.setdefault(src, []).append((image, box))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data/txl_pbc")
    ap.add_argument("--per-source", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0, help="which smears are drawn (BCCD and BCDD have about 100 only)")
    ap.add_argument("--grey", action="store_true", help="greyscale crops (the framer's darkness fallback)")
    args = ap.parse_args()
    data = boxes_by_source(Path(args.data), args.per_source, args.seed)
    rng = np.random.default_rng(1)
    print(f"{'source':<11} {'framing':<11} {'n':>4} {'IoU med':>8} {'IoU>=.5':>8} {'cell/nuc':>9} {'ms':>6}")
    for src, items in sorted(data.items()):
        for name, (scale, shift) in [*FRAMINGS.items(), ("border", (2.5, 0.0))]:
            ious, ratios, times = [], [], []
            for image, box in items:
                side = scale * max(box[2] - box[0], box[3] - box[1])
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
                ang = rng.uniform(0, 2 * np.pi)
                cx += shift * (box[2] - box[0]) * np.cos(ang)
                cy += shift * (box[3] - box[1]) * np.sin(ang)
                left, top = round(cx - side / 2), round(cy - side / 2)
                crop = cut_square(image, left, top, round(side))
                gt = box - [left, top, left, top]
                if name == "border":  # the crop ends at the cell's left edge plus 30 % of it
                    cut = max(1, int(gt[0] + 0.3 * (gt[2] - gt[0])))
                    crop, gt = crop[:, cut:], gt - [cut, 0, cut, 0]
                if args.grey:
                    crop = np.round(crop.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
                t = time.perf_counter()
                loc = locate_cell(crop)
                times.append(time.perf_counter() - t)
                ious.append(iou(np.array(loc.xyxy), gt) if loc.found else 0.0)
                nuc = loc.nucleus_xyxy
                if loc.found and name == "pbc_like":
                    ratios.append(max(gt[2] - gt[0], gt[3] - gt[1]) / max(nuc[2] - nuc[0], nuc[3] - nuc[1]))
            ious = np.array(ious)
            ratio = f"{np.median(ratios):.2f}" if ratios else ""
            print(
                f"{src:<11} {name:<11} {len(ious):>4} {np.median(ious):>8.2f} {np.mean(ious >= 0.5):>8.2f} "
                f"{ratio:>9} {1000 * np.median(times):>6.2f}"
            )


if __name__ == "__main__":
    main()
