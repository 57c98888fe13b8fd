"""Small synthetic dataset trees (classification, YOLO, VOC) written with PIL for the data/stats tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cellkit.synth import make_crop, make_smear

# folder -> files (prefix rule of the PBC taxonomy: BNE_ band, SNE_ segmented, NEUTROPHIL_ unspecified, ...)
CLASSIFICATION = {
    "neutrophil": ["BNE_1.png", "BNE_2.png", "SNE_3.png", "SNE_4.jpg", "NEUTROPHIL_5.png"],
    "ig": ["PMY_1.jpg", "MY_2.png", "MMY_3.png", "IG_4.png"],
    "lymphocyte": ["LY_1.png", "LY_2.png", "LY_3.png"],
    "platelet": ["PLATELET_1.png", "PLATELET_2.png"],
    "smudge": ["S_1.png"],  # not in the taxonomy: kept as its own label
}


def save(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(image).save(path)
    return path


def make_classification(root: Path, corrupt: bool = True) -> Path:
    """``root/<class>/<PREFIX>_<n>.png`` with distinct synthetic crops, plus one corrupt JPEG."""
    seed = 0
    for folder, files in CLASSIFICATION.items():
        for name in files:
            seed += 1
            save(root / folder / name, make_crop(seed % 6, 48, seed))
    if corrupt:
        (root / "neutrophil" / "SNE_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (root / "README.txt").write_text("not an image")
    return root


def make_split_classification(root: Path) -> tuple[Path, str, str]:
    """train/val/test class folders where test holds an exact copy and val a slightly altered copy of train images.

    Returns the root and the relative names of the exact and the altered copy.
    """
    for split, offset in (("train", 0), ("val", 100), ("test", 200)):
        for k, cls in enumerate(("lymphocyte", "monocyte")):
            for i in range(3):
                seed = offset + 10 * k + i
                save(root / split / cls / f"{cls[:2].upper()}_{seed}.png", make_crop((seed * 7) % 6, 64, seed))
    src = root / "train" / "lymphocyte" / "LY_0.png"
    exact = root / "test" / "lymphocyte" / "LY_copy.png"
    exact.write_bytes(src.read_bytes())
    altered = np.clip(np.asarray(Image.open(src)).astype(int) + 3, 0, 255).astype(np.uint8)  # brighter by 3 levels
    save(root / "val" / "monocyte" / "MO_altered.png", altered)  # and under another label: a conflict
    return root, "test/lymphocyte/LY_copy.png", "val/monocyte/MO_altered.png"


def make_yolo(root: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """images/{train,val}, labels/..., data.yaml, metadata.csv with a Source_Dataset column."""
    truth = {}
    rows = ["Original_Image_Name,Source_Dataset,New_Image_Name"]
    for split, seeds in (("train", (1, 2, 3)), ("val", (4,))):
        for seed in seeds:
            w, h = (160, 120) if seed % 2 else (128, 128)
            img, boxes, cls = make_smear(w, h, n_wbc=1, n_rbc=4, n_platelet=1, seed=seed)
            name = f"img{seed}.png"
            save(root / "images" / split / name, img)
            lines = []
            for (x1, y1, x2, y2), c in zip(boxes, cls, strict=True):
                lines.append(
                    f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"
                )
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"img{seed}.txt").write_text("\n".join(lines) + "\n")
            rows.append(f"orig{seed}.jpg,{'A' if seed % 2 else 'B'},{name}")
            truth[f"images/{split}/{name}"] = np.asarray(boxes)
    (root / "data.yaml").write_text(
        "train: ./images/train/\nval: ./images/val/\nnc: 3\nnames: ['WBC', 'RBC', 'Platelets']\n"
    )
    (root / "metadata.csv").write_text("\n".join(rows) + "\n")
    return root, truth


VOC_XML = """<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
VOC_OBJECT = (
    "<object><name>{cls}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox>"
    "</object>"
)


def make_voc(root: Path) -> Path:
    """``Training/Images/*.jpg`` + ``Training/Annotations/*.xml`` (the CBC layout)."""
    names = ["WBC", "RBC", "Platelets"]
    for seed in (1, 2):
        img, boxes, cls = make_smear(160, 120, n_wbc=1, n_rbc=3, n_platelet=1, seed=seed)
        name = f"BloodImage_{seed:05d}.jpg"
        save(root / "Training" / "Images" / name, img)
        objects = "".join(
            VOC_OBJECT.format(cls=names[c], x1=int(b[0]), y1=int(b[1]), x2=int(b[2]), y2=int(b[3]))
            for b, c in zip(boxes, cls, strict=True)
        )
        xml = VOC_XML.format(name=name, w=160, h=120, objects=objects)
        (root / "Training" / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Training" / "Annotations" / f"BloodImage_{seed:05d}.xml").write_text(xml)
    return root
