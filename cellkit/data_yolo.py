"""Detection data sets in YOLO layout: TXL-PBC as is, CBC converted from Pascal VOC, de-duplicated.

Everything is written to a cache folder outside the repository: images are symlinked (never
copied into the project), labels are written as YOLO text files, and a ``data.yaml`` with
absolute paths ties the splits together. TXL-PBC's BCCD images overlap with CBC (both come from
BCCD), so CBC images that match *any* TXL-PBC image (same BCCD file name, or a perceptual hash
within ``max_hash_distance``) are left out: none can leak into the TXL validation/test splits, and
no image appears twice with two different sets of boxes.
"""

from __future__ import annotations

import csv
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cellkit.errors import CellkitError

CLASS_NAMES = ("wbc", "rbc", "platelet")
_VOC_NAMES = {"wbc": 0, "rbc": 1, "platelets": 2, "platelet": 2}
SPLITS = ("train", "val", "test")


def voc_to_yolo(xml_path: str | Path) -> tuple[list[str], tuple[int, int]]:
    """YOLO label lines (``class cx cy w h`` normalised) and (width, height) from one VOC XML file."""
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    if size is None:
        raise CellkitError(f"{xml_path}: VOC annotation without <size>; re-export it from the labelling tool")
    w, h = int(float(size.findtext("width", "0"))), int(float(size.findtext("height", "0")))
    if w <= 0 or h <= 0:
        raise CellkitError(f"{xml_path}: expected positive image size, got {w}x{h}")
    lines = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip().lower()
        box = obj.find("bndbox")
        if name not in _VOC_NAMES or box is None:
            continue
        x1, y1, x2, y2 = (float(box.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax"))
        x1, x2 = np.clip([x1, x2], 0, w)
        y1, y2 = np.clip([y1, y2], 0, h)
        if not (x2 > x1 and y2 > y1):
            continue
        cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
        lines.append(f"{_VOC_NAMES[name]} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    return lines, (w, h)


def _phash(path: Path) -> Any:
    import imagehash
    from PIL import Image

    with Image.open(path) as im:
        return imagehash.phash(im.convert("RGB"))


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.is_symlink() or dst.exists():
        dst.unlink()
    os.symlink(src.resolve(), dst)


def prepare_detection_data(
    out_dir: str | Path,
    txl_dir: str | Path,
    cbc_dir: str | Path | None = None,
    max_hash_distance: int = 8,
    chula_dir: str | Path | None = None,
) -> Path:
    """Build ``out_dir/data.yaml`` (absolute paths) from TXL-PBC (+ de-duplicated CBC, + Chula RBC-12 in train).

    Chula's training images (``cellkit.rbc_boxes.image_split``; its val/test images are never used here) get
    red-cell boxes made from their labelled points, plus boxes for the cells nobody labelled
    (``cellkit.rbc_boxes.boxes_from_points``): a 1000x magnification the other sets do not have.

    Returns the yaml path. A ``provenance.json`` beside it records what was kept and dropped.
    """
    out, txl = Path(out_dir), Path(txl_dir)
    if not (txl / "images" / "train").is_dir():
        raise CellkitError(f"{txl} does not look like TXL-PBC (no images/train); point --txl at the txl_pbc folder")
    prov: dict[str, Any] = {"txl": str(txl), "cbc": str(cbc_dir) if cbc_dir else None, "splits": {}}
    for split in SPLITS:
        images = sorted((txl / "images" / split).glob("*.png"))
        for img in images:
            _link(img, out / "txl" / "images" / split / img.name)
            lab = txl / "labels" / split / f"{img.stem}.txt"
            dst = out / "txl" / "labels" / split / f"{img.stem}.txt"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text(lab.read_text() if lab.is_file() else "")
        prov["splits"][split] = len(images)
    train_dirs = [str((out / "txl" / "images" / "train").resolve())]
    if cbc_dir:
        cbc = Path(cbc_dir)
        names: set[str] = set()
        meta = txl / "metadata.csv"
        if meta.is_file():
            with open(meta, newline="") as fh:
                names = {r["Original_Image_Name"] for r in csv.DictReader(fh) if r.get("Source_Dataset") == "BCCD"}
        txl_hashes = [_phash(p) for s in SPLITS for p in sorted((txl / "images" / s).glob("*.png"))]
        txl_hashes = [h for h in txl_hashes]
        kept, dropped_name, dropped_hash = 0, [], []
        for img in sorted((cbc / "Training" / "Images").glob("*.jpg")):
            if img.name in names:
                dropped_name.append(img.name)
                continue
            h = _phash(img)
            if min(int(h - t) for t in txl_hashes) <= max_hash_distance:
                dropped_hash.append(img.name)
                continue
            xml = cbc / "Training" / "Annotations" / f"{img.stem}.xml"
            if not xml.is_file():
                continue
            lines, _ = voc_to_yolo(xml)
            _link(img, out / "cbc" / "images" / "train" / img.name)
            dst = out / "cbc" / "labels" / "train" / f"{img.stem}.txt"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text("\n".join(lines) + "\n")
            kept += 1
        prov["cbc_kept"] = kept
        prov["cbc_dropped_same_bccd_name"] = len(dropped_name)
        prov["cbc_dropped_phash"] = dropped_hash
        prov["max_hash_distance"] = max_hash_distance
        train_dirs.append(str((out / "cbc" / "images" / "train").resolve()))
    if chula_dir:
        from cellkit.io import read_image
        from cellkit.points import read_points
        from cellkit.rbc_boxes import boxes_from_points, chula_images, image_split

        images = chula_images(chula_dir)
        part = image_split([p.stem for p in images])
        kept = 0
        for img in images:
            lab = Path(chula_dir) / "labels" / f"{img.stem}.txt"
            if part[img.stem] != "train" or not lab.is_file():
                continue
            pixels = read_image(img)
            h, w = pixels.shape[:2]
            found = boxes_from_points(pixels, read_points(lab).xy)
            boxes = np.concatenate([found.xyxy[found.found], found.extra])
            lines = [
                f"1 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                for x1, y1, x2, y2 in boxes.tolist()
            ]
            _link(img, out / "chula" / "images" / "train" / img.name)
            dst = out / "chula" / "labels" / "train" / f"{img.stem}.txt"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_text("\n".join(lines) + "\n")
            kept += 1
        prov["chula"] = str(chula_dir)
        prov["chula_train_images"] = kept
        prov["chula_boxes"] = "red cells only, from labelled points + unlabelled cell-sized components (rbc_boxes)"
        train_dirs.append(str((out / "chula" / "images" / "train").resolve()))
    data = {
        "path": str(out.resolve()),
        "train": train_dirs,
        "val": str((out / "txl" / "images" / "val").resolve()),
        "test": str((out / "txl" / "images" / "test").resolve()),
        "nc": 3,
        "names": {i: n for i, n in enumerate(CLASS_NAMES)},
    }
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    (out / "provenance.json").write_text(json.dumps(prov, indent=2))
    return path
