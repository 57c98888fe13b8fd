"""Robustness bench: the PBC test split under controlled shifts, and every TXL-PBC source as it is.

Each shift imitates what another lab's crops do to the model, at growing severity:

- stain: a yellowish stain (less haematoxylin, more eosin, warm tint) and a hue rotation;
- optics: scale of the cell 0.6-1.6x in a fixed field, Gaussian blur, JPEG at quality 30,
  2x and 3x fewer pixels (crops cut from low-magnification smears);
- framing: tight (the cell fills the crop), loose (the field doubled with slide background),
  off-centre (the window moved by a quarter of its side);
- real stains: the colour statistics of each other TXL-PBC source (Raabin-WBC, BCCD, BCDD) given to
  PBC's cells by Reinhard transfer, alone and with tight framing at half the resolution.

Reported per condition: PBC-8 accuracy (forced choice), 5-class accuracy over the mature white
cells (neutrophil, eosinophil, basophil, lymphocyte, monocyte) and the share flagged for review.
Then, per TXL-PBC source (PBC, Raabin-WBC, BCCD, BCDD; unlabelled white cells), the predicted
class shares and the share flagged: plausibility, not accuracy.

    python bench/robustness.py --models classifier_lite0 classifier_lite0_v4 [--n 800] [--write-card]

What it cannot show: real other-lab stains (these are synthetic shifts of one lab's images),
other patients' morphology, and cell types PBC lacks. The TXL-PBC rows carry no labels.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cellkit import config
from cellkit.models import load_spec

MATURE5 = ("neutrophil", "eosinophil", "basophil", "lymphocyte", "monocyte")
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def _bg(img: np.ndarray) -> np.ndarray:
    from cellkit.colour import background_rgb

    return background_rgb(img).astype(np.uint8)


def yellow_stain(img: np.ndarray, s: float) -> np.ndarray:
    """Less haematoxylin, more eosin, and a warm (yellow) tint of the light, by severity s."""
    od = -np.log(np.clip(img.astype(np.float32) / 255, 1 / 255, 1))
    hed = od @ _HED_FROM_RGB
    hed[..., 0] *= 1 - 0.5 * s
    hed[..., 1] *= 1 + 1.0 * s
    rgb = np.exp(-(hed @ _RGB_FROM_HED)) * np.array([1.0, 1.0 - 0.15 * s, 1.0 - 0.5 * s])
    return np.clip(rgb * 255, 0, 255).astype(np.uint8)


def hue_rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + round(degrees / 2)) % 180
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def scale_cell(img: np.ndarray, f: float) -> np.ndarray:
    """The same field size with everything f times larger (crop) or smaller (padded with slide background)."""
    from cellkit.framing import cut_square

    h, w = img.shape[:2]
    big = cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    side = max(h, w)
    return cut_square(big, (big.shape[1] - side) // 2, (big.shape[0] - side) // 2, side, fill=_bg(img))


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma)


def jpeg(img: np.ndarray, q: int) -> np.ndarray:
    _, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy()


def downsample(img: np.ndarray, f: float) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(img, (round(w / f), round(h / f)), interpolation=cv2.INTER_AREA)


def tight(img: np.ndarray, _: float = 0) -> np.ndarray:
    h, w = img.shape[:2]
    s = round(0.45 * min(h, w))  # PBC cells span about 0.4 of the field
    return img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]


def loose(img: np.ndarray, _: float = 0) -> np.ndarray:
    from cellkit.framing import cut_square

    h, w = img.shape[:2]
    side = 2 * max(h, w)
    return cut_square(img, (w - side) // 2, (h - side) // 2, side, fill=_bg(img))


def off_centre(img: np.ndarray, _: float = 0) -> np.ndarray:
    from cellkit.framing import cut_square

    h, w = img.shape[:2]
    return cut_square(img, round(0.25 * w), round(-0.25 * h), max(h, w), fill=_bg(img))


CONDITIONS = [("clean", lambda im: im, 0)]
CONDITIONS += [(f"yellow stain {s:.1f}", lambda im, s=s: yellow_stain(im, s), s) for s in (0.2, 0.4, 0.6)]
CONDITIONS += [(f"hue {d:+d} deg", lambda im, d=d: hue_rotate(im, d), d) for d in (15, 30, -30)]
CONDITIONS += [(f"scale {f:.2f}x", lambda im, f=f: scale_cell(im, f), f) for f in (0.6, 0.8, 1.25, 1.6)]
CONDITIONS += [(f"blur sigma {s:.0f} px", lambda im, s=s: blur(im, s), s) for s in (1, 2, 3)]
CONDITIONS += [("JPEG q30", lambda im: jpeg(im, 30), 30)]
CONDITIONS += [(f"{f:.0f}x fewer pixels", lambda im, f=f: downsample(im, f), f) for f in (2, 3)]
CONDITIONS += [("tight framing", tight, 0), ("loose framing", loose, 0), ("off-centre framing", off_centre, 0)]
# the failures reported from other labs, imitated in one go each
CONDITIONS += [
    ("scanner B: tight, yellow, 120 px", lambda im: cv2.resize(yellow_stain(tight(im), 0.4), (120, 120)), 0),
    ("smear crop: 3x fewer px, JPEG", lambda im: jpeg(downsample(blur(im, 1), 3), 50), 0),
    ("CellaVision B: cell 1.4x larger", lambda im: scale_cell(hue_rotate(im, 10), 1.4), 0),
]


def source_stains(txl: Path, per_source: int = 40) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Median Lab mean and std of each TXL-PBC source's smear images: its stain, as Reinhard transfer needs it."""
    import csv

    from cellkit.io import read_image

    with open(txl / "metadata.csv", newline="", encoding="utf-8") as fh:
        source_of = {r["New_Image_Name"]: r["Source_Dataset"] for r in csv.DictReader(fh)}
    stats: dict[str, list] = {}
    for path in sorted((txl / "images").rglob("*.png")):
        src = source_of.get(path.name)
        if src is None or src == "PBC" or len(stats.get(src, [])) >= per_source:
            continue
        lab = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float32)
        stats.setdefault(src, []).append((lab.mean(0), lab.std(0)))
    return {s: (np.median([m for m, _ in v], 0), np.median([d for _, d in v], 0)) for s, v in stats.items()}


def reinhard(img: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Give a crop another lab's colour statistics (Reinhard et al. 2001, in Lab)."""
    lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)
    m, s = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0) + 1e-3
    out = (lab - m) / s * std + mean
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def all_conditions(data: Path) -> list:
    """The fixed shifts plus, when TXL-PBC is under ``data``, the stains of its three other labs."""
    conditions = list(CONDITIONS)
    txl = data / "txl_pbc"
    if (txl / "metadata.csv").is_file():  # the stains of the three other labs, transferred onto PBC's cells
        for src, (mean, std) in sorted(source_stains(txl).items()):
            conditions.append((f"stain of {src}", lambda im, m=mean, s=std: reinhard(im, m, s), 0))
            harder = lambda im, m=mean, s=std: downsample(tight(reinhard(im, m, s)), 2)  # noqa: E731
            conditions.append((f"stain of {src}, tight, 2x fewer px", harder, 0))
    return conditions


def evaluate(clf, images: list[np.ndarray], groups: list[str]) -> dict[str, float]:
    preds = clf.predict(images)
    group_of = clf.taxonomy.primary_grouping()
    got = np.array([group_of[p.leaf] for p in preds])
    truth = np.array(groups)
    mature = np.isin(truth, MATURE5)
    return {
        "pbc8_accuracy": round(float(np.mean(got == truth)), 3),
        "mature5_accuracy": round(float(np.mean(got[mature] == truth[mature])), 3),
        "flagged": round(float(np.mean([p.label == "unknown" for p in preds])), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=[None])
    ap.add_argument("--n", type=int, default=800, help="test crops per condition (stratified sample)")
    ap.add_argument("--per-source", type=int, default=150, help="TXL-PBC white cells per source")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--write-card", action="store_true", help="store the figures in each model's card")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from cellkit.classify import load_classifier
    from cellkit.io import read_image
    from cellkit.ood import source_report, yolo_wbc_crops
    from cellkit.train.data import index_folder

    data = config.data_dir()
    if data is None:
        raise SystemExit("no ../shared/data (set CELLKIT_DATA_DIR)")
    split = json.loads((config.weights_dir() / "pbc_split.json").read_text())
    clfs = [load_classifier(m) for m in args.models]
    tax = clfs[0].taxonomy
    paths, nodes = index_folder(data / "pbc", tax)
    group_of = dict(zip(paths, (tax.primary_grouping()[n] for n in nodes), strict=True))
    rng = np.random.default_rng(0)
    test = [p for p in split["test"] if p in group_of]
    pick = sorted(rng.permutation(len(test))[: args.n])
    files = [test[i] for i in pick]
    images = [read_image(data / "pbc" / f) for f in files]
    groups = [group_of[f] for f in files]
    table: dict[str, dict[str, dict[str, float]]] = {c.spec.name: {} for c in clfs}
    head = "".join(f"{c.spec.name[:26]:>28}" for c in clfs)
    print(f"{'condition (n=' + str(len(files)) + ')':<24}{head}")
    print(f"{'':<24}" + "".join(f"{'PBC-8  5-class flagged':>28}" for _ in clfs))
    conditions = list(CONDITIONS)
    txl = data / "txl_pbc"
    if (txl / "metadata.csv").is_file():  # the stains of the three other labs, transferred onto PBC's cells
        for src, (mean, std) in sorted(source_stains(txl).items()):
            conditions.append((f"stain of {src}", lambda im, m=mean, s=std: reinhard(im, m, s), 0))
            conditions.append(
                (
                    f"stain of {src}, tight, 2x fewer px",
                    lambda im, m=mean, s=std: downsample(tight(reinhard(im, m, s)), 2),
                    0,
                )
            )
    for name, fn, _sev in conditions:
        shifted = [fn(im) for im in images]
        cells = []
        for c in clfs:
            r = evaluate(c, shifted, groups)
            table[c.spec.name][name] = r
            cells.append(f"{r['pbc8_accuracy']:>10.3f}{r['mature5_accuracy']:>8.3f}{r['flagged']:>9.0%} ")
        print(f"{name:<24}" + "".join(cells), flush=True)
    sources = {}
    if (txl / "metadata.csv").is_file():
        for c in clfs:
            crops = yolo_wbc_crops(txl, scale=c.spec.crop_scale, max_per_source=args.per_source)
            sources[c.spec.name] = source_report(c, crops)
        print("\nTXL-PBC white cells (no labels): flagged share and the largest predicted classes")
        for c in clfs:
            for src, r in sources[c.spec.name].items():
                shares = sorted(((k[6:], v) for k, v in r.items() if k.startswith("share_")), key=lambda kv: -kv[1])
                top = ", ".join(f"{tax.display(k)} {v:.0%}" for k, v in shares[:4])
                print(f"{c.spec.name[:26]:<28}{src:<12} n={r['n']:<4} flagged {r['ood_flagged']:>4.0%}  {top}")
    if args.write_card:
        for c in clfs:
            spec = load_spec(c.spec.name)  # the card as it is now: only its robustness block is replaced
            spec.card["robustness"] = {
                "command": "python bench/robustness.py --models "
                + " ".join(str(m) for m in args.models)
                + f" --n {args.n} --per-source {args.per_source}",
                "n_test_crops": len(files),
                "measured": time.strftime("%Y-%m-%d"),
                "conditions": table[spec.name],
                "txl_pbc_sources": sources.get(spec.name, {}),
                "cannot_show": __doc__.split("What it cannot show: ")[1].strip(),
            }
            spec.save(spec.folder or None)
            print(f"wrote the figures into {spec.name}'s card")


if __name__ == "__main__":
    main()
