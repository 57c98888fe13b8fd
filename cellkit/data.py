"""Dataset readers: one tidy table per dataset, whatever the folder layout.

Recognised layouts (detected automatically):

- ``classification``: ``<class>/<image>`` or ``<split>/<class>/<image>``; folder names map to
  taxonomy nodes, and a file-name prefix rule (``BNE_`` -> band neutrophil, ...) refines them.
- ``yolo``: ``images/<split>/``, ``labels/<split>/`` (``class cx cy w h``), ``data.yaml`` with the
  class names, optional ``metadata.csv`` with a source column (e.g. TXL-PBC's ``Source_Dataset``).
- ``voc``: Pascal VOC ``Annotations/*.xml`` + ``Images/`` (or ``JPEGImages/``), directly or in
  split sub-folders (``Training/``, ...).
- ``images``: a flat folder of images without labels.

A folder holding several datasets (like ``../shared/data``) is a *root*: :func:`list_datasets`
names them and ``dataset=`` picks one. Readers open image headers only (no decoding); the pixel
statistics and hashes live in :mod:`cellkit.stats`, which caches them on disk.
"""

from __future__ import annotations

import csv
import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from PIL import Image, UnidentifiedImageError

from cellkit import config
from cellkit.errors import CellkitError
from cellkit.io import IMAGE_SUFFIXES, printable
from cellkit.taxonomy import DEFAULT_TAXONOMY, Taxonomy, load_taxonomy

KINDS = ("classification", "yolo", "voc", "images")
SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "testing", "dev"}
_SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}


def normalise_split(name: str) -> str:
    """``Training`` -> ``train``, ``valid`` -> ``val``...; other names are kept as they are."""
    return _SPLIT_ALIASES.get(name.lower(), name.lower() if name.lower() in SPLIT_NAMES else name)


LAYOUT_HELP = (
    "expected class folders (<class>/<image>), a YOLO folder (images/, labels/, data.yaml), "
    "a Pascal VOC folder (Annotations/, Images/) or a folder of images"
)
IMAGE_COLUMNS = [
    "path", "file", "dataset", "kind", "split", "source", "class", "node",
    "width", "height", "mode", "format", "bytes", "mtime_ns", "error",
]  # fmt: skip
BOX_COLUMNS = ["file", "split", "source", "class", "x1", "y1", "x2", "y2", "w", "h"]


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset found on disk: its name, folder, layout kind and number of image files."""

    name: str
    path: Path
    kind: str
    n_images: int


@dataclass
class Dataset:
    """The tables of one dataset: ``images`` (one row per file) and ``boxes`` (detection sets)."""

    info: DatasetInfo
    images: pd.DataFrame
    boxes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BOX_COLUMNS))
    class_names: list[str] = field(default_factory=list)

    @property
    def is_detection(self) -> bool:
        return self.info.kind in ("yolo", "voc")


# ---- discovery -------------------------------------------------------------------------------
def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(
            p
            for p in path.iterdir()
            if p.is_dir() and not p.name.startswith((".", "__")) and (not p.is_symlink() or config.may_follow(p))
        )
    except OSError:
        return []


def _images_in(path: Path, recursive: bool = False) -> list[Path]:
    """Image files under ``path`` (sorted), via os.scandir: fast on 14k files."""
    out: list[Path] = []
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith((".", "__")):
                continue
            try:
                if e.is_dir(follow_symlinks=False):
                    if recursive:
                        stack.append(Path(e.path))
                elif e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES) and _followable(e):
                    out.append(Path(e.path))
            except OSError:  # a symlink loop, a file gone meanwhile: not an image we can read
                continue
    return sorted(out)


def _followable(entry: os.DirEntry) -> bool:
    """A plain entry, or a link the current confinement lets readers follow (see ``config.may_follow``)."""
    return not entry.is_symlink() or config.may_follow(entry.path)


def _has_images(path: Path) -> bool:
    try:
        return any(e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES) and _followable(e) for e in os.scandir(path))
    except OSError:
        return False


def _voc_parts(path: Path) -> list[Path]:
    """Folders holding ``Annotations/``: the folder itself or its split sub-folders."""
    if (path / "Annotations").is_dir():
        return [path]
    return [d for d in _subdirs(path) if (d / "Annotations").is_dir()]


def detect_kind(path: str | os.PathLike) -> str | None:
    """The layout of a dataset folder (one of :data:`KINDS`), or None if it is not one."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / "data.yaml").is_file() or ((path / "images").is_dir() and (path / "labels").is_dir()):
        return "yolo"
    subs = _subdirs(path)
    if any(d.name.lower() in SPLIT_NAMES and (d / "images").is_dir() and (d / "labels").is_dir() for d in subs):
        return "yolo"
    parts = _voc_parts(path)
    others = [d for d in subs if d not in parts and (_has_images(d) or _subdirs(d))]  # an empty notes/ is no dataset
    if parts and ((path / "Annotations").is_dir() or not others):  # VOC splits only; else a root of many datasets
        return "voc"
    if any(_has_images(d) for d in subs):
        return "classification"
    if any(d.name.lower() in SPLIT_NAMES and any(_has_images(c) for c in _subdirs(d)) for d in subs):
        return "classification"
    if _has_images(path):
        return "images"
    return None


def list_datasets(root: str | os.PathLike) -> list[DatasetInfo]:
    """Datasets at ``root``: itself when it is one, else its sub-folders that are datasets."""
    root = _check_folder(root)
    kind = detect_kind(root)
    if kind is not None:
        return [DatasetInfo(root.name, root, kind, len(_images_in(root, recursive=True)))]
    found = []
    for d in _subdirs(root):
        k = detect_kind(d)
        if k is not None:
            found.append(DatasetInfo(d.name, d, k, len(_images_in(d, recursive=True))))
    return found


def _check_folder(path: str | os.PathLike) -> Path:
    if not str(path).strip():
        raise CellkitError("no dataset path given; type a folder path (or set CELLKIT_DATA_DIR)")
    path = Path(path).expanduser()
    try:
        exists = path.exists()
    except (OSError, ValueError) as exc:  # embedded NUL, name too long, ...
        raise CellkitError(f"{str(path)[:200]!r} is not a usable path ({exc}); check the path") from None
    if not exists:
        raise CellkitError(f"{path}: no such folder; check the path (or set CELLKIT_DATA_DIR)")
    if not path.is_dir():
        raise CellkitError(f"{path}: is a file; expected a dataset folder")
    return path


def resolve_dataset(path: str | os.PathLike, dataset: str | None = None) -> DatasetInfo:
    """The one dataset meant by ``path`` (+ ``dataset`` name inside a root), with clear errors."""
    root = _check_folder(path)
    found = list_datasets(root)
    if dataset:
        match = [d for d in found if d.name == dataset]
        if not match and (root / dataset).is_dir():
            return resolve_dataset(root / dataset)
        if not match:
            names = ", ".join(d.name for d in found) or "none"
            raise CellkitError(f"{root}: no dataset named {dataset!r}; found: {names}")
        if match[0].n_images == 0:
            raise CellkitError(f"{match[0].path}: no images found; {LAYOUT_HELP}")
        return match[0]
    if not found:
        try:
            n_files = sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        except OSError:
            n_files = 0
        if n_files == 0:
            raise CellkitError(f"{root}: folder is empty; {LAYOUT_HELP}")
        raise CellkitError(
            f"{root}: no images found among {n_files} files (looked for {', '.join(IMAGE_SUFFIXES)}); {LAYOUT_HELP}"
        )
    if len(found) > 1:
        names = ", ".join(f"{d.name} ({d.kind}, {d.n_images} images)" for d in found)
        raise CellkitError(f"{root} holds several datasets: {names}; pick one (dataset=NAME or its sub-folder)")
    if found[0].n_images == 0:
        raise CellkitError(f"{found[0].path}: no images found; {LAYOUT_HELP}")
    return found[0]


# ---- labels -> taxonomy nodes ----------------------------------------------------------------
def _folder_rules(taxonomy: Taxonomy, dataset_name: str) -> tuple[dict[str, str], dict[str, str]]:
    """Folder -> node and prefix -> node rules: the dataset's own rule first, then all others."""
    folders: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    rules = list(taxonomy.datasets.items())
    rules.sort(key=lambda kv: kv[0] != dataset_name)  # the matching rule wins
    for _, rule in reversed(rules):
        folders.update({str(k).lower(): str(v) for k, v in (rule.get("folders") or {}).items()})
        prefixes.update({str(k).upper(): str(v) for k, v in (rule.get("prefixes") or {}).items()})
    return folders, prefixes


def class_to_node(taxonomy: Taxonomy, label: str, folders: dict[str, str] | None = None) -> str | None:
    """Map a class / folder name to a taxonomy node id (rule, id, name or abbreviation), else None."""
    key = label.strip().lower()
    if folders and key in folders and folders[key] in taxonomy:
        return folders[key]
    for nid in taxonomy.ids:
        node = taxonomy.node(nid)
        if key in (nid.lower(), node.name.lower(), node.abbr.lower(), nid.lower().replace("_", " ")):
            return nid
    return None


def refine_by_prefix(taxonomy: Taxonomy, node: str | None, filename: str, prefixes: dict[str, str]) -> str | None:
    """The finer node given by a file-name prefix (``BNE_123.jpg``), if it lies under ``node``."""
    stem = Path(filename).stem
    if "_" not in stem:
        return node
    finer = prefixes.get(stem.split("_", 1)[0].upper())
    if finer is None or finer not in taxonomy:
        return node
    if node is None or node in taxonomy.path(finer):
        return finer
    return node


# ---- headers ---------------------------------------------------------------------------------
def read_header(path: Path) -> dict:
    """Size, mode and format from the image header (no decoding), or ``error`` when unreadable."""
    row: dict = {"width": None, "height": None, "mode": None, "format": None, "error": None}
    try:
        st = path.stat()
        row["bytes"], row["mtime_ns"] = st.st_size, st.st_mtime_ns
    except OSError as exc:
        row.update(bytes=0, mtime_ns=0, error=f"cannot stat file ({exc.strerror})")
        return row
    if row["bytes"] == 0:
        row["error"] = "file is empty (0 bytes)"
        return row
    try:
        with Image.open(path) as img:
            row.update(width=img.size[0], height=img.size[1], mode=img.mode, format=img.format)
    except UnidentifiedImageError:
        row["error"] = "not a readable image"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        row["error"] = f"corrupt image ({exc})"
    return row


def file_stat(path: Path) -> dict:
    """Size and modification time (the cache key of a file), or an error."""
    try:
        st = path.stat()
    except OSError as exc:
        return {"bytes": 0, "mtime_ns": 0, "error": f"cannot stat file ({exc.strerror})"}
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "error": None}


def _image_rows(
    files: list[tuple[Path, str, str | None]], base: Path, info: DatasetInfo, headers: bool = True
) -> list[dict]:
    """One dict per (file, split, class) with header fields (or only size/mtime without headers)."""
    rows = []
    for path, split, label in files:
        row = {
            "path": str(path),
            "file": path.relative_to(base).as_posix(),
            "dataset": info.name,
            "kind": info.kind,
            "split": normalise_split(split),
            "source": info.name,
            "class": label,
            "node": None,
        }
        row.update(read_header(path) if headers else file_stat(path))
        shown = printable(row["path"])
        if shown != row["path"]:  # bytes that are not UTF-8 cannot go into the table, the cache or a report
            row.update(path=shown, file=printable(row["file"]), error="file name is not valid UTF-8; rename it")
        rows.append(row)
    return rows


def _frame(rows: list[dict], extra: list[str] = ()) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=[*IMAGE_COLUMNS, *extra])
    for col in ("width", "height"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in ("bytes", "mtime_ns"):
        df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).astype("int64")
    for col in ("class", "node", "mode", "format", "error", *extra):
        df[col] = none_for_missing(df[col])
    return df


def none_for_missing(col: pd.Series) -> pd.Series:
    """Object column with None (not NaN) for missing values: ``row["node"] is None`` stays true."""
    return col.astype(object).where(col.notna(), None)


# ---- readers per layout ----------------------------------------------------------------------
def _read_classification(info: DatasetInfo, taxonomy: Taxonomy, headers: bool = True) -> Dataset:
    root = info.path
    folders, prefixes = _folder_rules(taxonomy, info.name)
    files: list[tuple[Path, str, str | None]] = []
    for d in _subdirs(root):
        if d.name.lower() in SPLIT_NAMES and not _has_images(d):
            for c in _subdirs(d):
                files += [(p, d.name, c.name) for p in _images_in(c, recursive=True)]
        else:
            files += [(p, "", d.name) for p in _images_in(d, recursive=True)]
    files += [(p, "", None) for p in _images_in(root)]  # loose files at the top: unlabelled
    rows = _image_rows(files, root, info, headers)
    node_of = {}
    for row in rows:
        label = row["class"]
        if label is None:
            continue
        if label not in node_of:
            node_of[label] = class_to_node(taxonomy, label, folders)
        row["node"] = refine_by_prefix(taxonomy, node_of[label], Path(row["file"]).name, prefixes)
    return Dataset(info, _frame(rows), class_names=sorted({r["class"] for r in rows if r["class"]}))


def _read_images(info: DatasetInfo, taxonomy: Taxonomy, headers: bool = True) -> Dataset:
    files = [(p, "", None) for p in _images_in(info.path, recursive=True)]
    return Dataset(info, _frame(_image_rows(files, info.path, info, headers)))


def _yolo_names(root: Path) -> list[str]:
    for name in ("data.yaml", "dataset.yaml", "data.yml"):
        p = root / name
        if p.is_file():
            try:
                raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise CellkitError(f"{p}: not valid YAML ({exc}); fix or remove it") from None
            names = raw.get("names") if isinstance(raw, dict) else None
            if isinstance(names, dict):
                try:  # YOLO's {0: wbc, 1: rbc}
                    return [str(names[k]) for k in sorted(names, key=int)]
                except (TypeError, ValueError):
                    raise CellkitError(
                        f"{p}: names must map class ids to names ({{0: wbc, 1: rbc}}), got {names!r:.80}"
                    ) from None
            if isinstance(names, list):
                return [str(n) for n in names]
    classes = root / "classes.txt"
    if classes.is_file():
        try:
            text = classes.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CellkitError(f"{classes}: unreadable ({exc}); expected UTF-8 text, one class name per line") from None
        return [line.strip() for line in text.splitlines() if line.strip()]
    return []


def _read_sources(root: Path) -> dict[str, str]:
    """``metadata.csv``: image file name -> source (first column whose values look like file names)."""
    meta = root / "metadata.csv"
    if not meta.is_file():
        return {}
    try:
        with meta.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    if not rows:
        return {}
    cols = list(rows[0].keys())
    lower = {c.lower(): c for c in cols if c}
    source_col = next((lower[k] for k in ("source", "source_dataset", "origin", "dataset") if k in lower), None)
    if source_col is None:
        source_col = next((c for c in cols if c and "source" in c.lower() and "url" not in c.lower()), None)
    if source_col is None:
        return {}
    name_cols = [c for c in cols if c and c != source_col]
    name_cols.sort(key=lambda c: ("new" not in c.lower(), "image" not in c.lower() and "file" not in c.lower()))
    out: dict[str, str] = {}
    for c in name_cols:
        if all(str(r.get(c) or "").lower().endswith(IMAGE_SUFFIXES) for r in rows[:20]):
            for r in rows:
                out.setdefault(Path(str(r[c])).name, str(r[source_col]))
    return out


def _parse_yolo_labels(path: Path, n_names: int) -> tuple[list[tuple[int, float, float, float, float]], str | None]:
    if not path.is_file():
        return [], None
    boxes = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], f"label file unreadable ({exc})"
    for i, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            cid = int(float(parts[0]))
            cx, cy, w, h = (float(v) for v in parts[1:5])
            if len(parts) < 5 or cid < 0 or not all(math.isfinite(v) for v in (cx, cy, w, h)):
                raise ValueError
        except (ValueError, OverflowError):  # "inf", "nan", a negative class id
            return boxes, f"label line {i} malformed: {line.strip()[:40]!r}"
        if n_names and not 0 <= cid < n_names:
            return boxes, f"label line {i}: class id {cid} not in data.yaml names (0..{n_names - 1})"
        boxes.append((cid, cx, cy, w, h))
    return boxes, None


def _yolo_splits(root: Path) -> list[tuple[str, Path, Path]]:
    """(split, images folder, labels folder) for ``images/<split>`` and ``<split>/images`` layouts."""
    out = []
    if (root / "images").is_dir():
        img_root, lab_root = root / "images", root / "labels"
        splits = _subdirs(img_root)
        if _has_images(img_root) or not splits:
            out.append(("", img_root, lab_root))
        out += [(d.name, d, lab_root / d.name) for d in splits]
    for d in _subdirs(root):
        if d.name.lower() in SPLIT_NAMES and (d / "images").is_dir():
            out.append((d.name, d / "images", d / "labels"))
    return out


def _read_yolo(info: DatasetInfo, taxonomy: Taxonomy, headers: bool = True) -> Dataset:
    root = info.path
    names = _yolo_names(root)
    sources = _read_sources(root)
    files, label_info = [], {}
    for split, img_dir, lab_dir in _yolo_splits(root):
        for p in _images_in(img_dir, recursive=split != ""):
            files.append((p, split, None))
            label_info[str(p)] = _parse_yolo_labels(lab_dir / p.relative_to(img_dir).with_suffix(".txt"), len(names))
    rows = _image_rows(files, root, info, headers)
    boxes = []
    for row in rows:
        row["source"] = sources.get(Path(row["path"]).name, info.name)
        parsed, label_error = label_info[row["path"]]
        row["label_error"] = label_error
        for cid, cx, cy, bw, bh in parsed:
            cname = names[cid] if cid < len(names) else str(cid)
            box = _box(row, cname, cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
            box["normalised"] = True
            boxes.append(box)
    out = _detection(info, rows, boxes, names)
    return out


def _box(row: dict, cname: str, x1: float, y1: float, x2: float, y2: float) -> dict:
    return {
        "file": row["file"],
        "split": row["split"],
        "source": row["source"],
        "class": cname,
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "w": x2 - x1,
        "h": y2 - y1,
    }


def boxes_to_pixels(boxes: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """Scale boxes given in 0..1 (YOLO) to pixels using the image sizes; pixel boxes pass through."""
    if "normalised" not in boxes or not boxes["normalised"].any():
        return boxes.drop(columns=["normalised"], errors="ignore")
    sizes = images.set_index("file")[["width", "height"]].astype("float64")
    w = boxes["file"].map(sizes["width"]).where(boxes["normalised"], 1.0)
    h = boxes["file"].map(sizes["height"]).where(boxes["normalised"], 1.0)
    out = boxes.drop(columns=["normalised"]).copy()
    for col, scale in (("x1", w), ("x2", w), ("w", w), ("y1", h), ("y2", h), ("h", h)):
        out[col] = out[col].astype("float64") * scale
    return out


def _detection(info: DatasetInfo, rows: list[dict], boxes: list[dict], names: list[str]) -> Dataset:
    box_df = pd.DataFrame(boxes, columns=[*BOX_COLUMNS, "normalised"])
    box_df["normalised"] = box_df["normalised"].fillna(False).astype(bool)
    names = list(names) + sorted(set(box_df["class"]) - set(names))
    df = _frame(rows, extra=["label_error"])
    counts = box_df.groupby(["file", "class"]).size().unstack(fill_value=0) if len(box_df) else pd.DataFrame()
    for name in names:
        col = counts[name] if name in counts else pd.Series(dtype="int64")
        df[f"n_{name}"] = df["file"].map(col).fillna(0).astype("int64")
    df["n_boxes"] = df[[f"n_{n}" for n in names]].sum(axis=1).astype("int64") if names else 0
    df["class"] = none_for_missing(pd.Series([None] * len(df), index=df.index))
    return Dataset(info, df, box_df, class_names=names)


def _voc_objects(xml_path: Path) -> tuple[list[tuple[str, float, float, float, float]], str | None]:
    try:
        tree = ET.parse(xml_path)
    except (ET.ParseError, OSError) as exc:
        return [], f"annotation unreadable ({exc})"
    objs = []
    for obj in tree.getroot().iter("object"):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            return objs, f"object {name!r} has no valid bndbox"
        objs.append((name, x1, y1, x2, y2))
    return objs, None


def _read_voc(info: DatasetInfo, taxonomy: Taxonomy, headers: bool = True) -> Dataset:
    root = info.path
    files, ann = [], {}
    for part in _voc_parts(root):
        split = "" if part == root else part.name
        img_dir = next((part / n for n in ("Images", "JPEGImages", "images") if (part / n).is_dir()), part)
        split_of = _voc_imagesets(part)
        for p in _images_in(img_dir, recursive=img_dir != part):
            files.append((p, split_of.get(p.stem, split), None))
            ann[str(p)] = part / "Annotations" / f"{p.stem}.xml"
    rows = _image_rows(files, root, info, headers)
    boxes, names = [], []
    for row in rows:
        xml = ann[row["path"]]
        objs, err = _voc_objects(xml) if xml.is_file() else ([], None)
        row["label_error"] = err
        for name, x1, y1, x2, y2 in objs:
            if name not in names:
                names.append(name)
            boxes.append(_box(row, name, x1, y1, x2, y2))
    return _detection(info, rows, boxes, names)


def _voc_imagesets(part: Path) -> dict[str, str]:
    main = part / "ImageSets" / "Main"
    out: dict[str, str] = {}
    for split in ("train", "val", "test"):
        f = main / f"{split}.txt"
        if f.is_file():
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CellkitError(f"{f}: unreadable ({exc}); expected UTF-8 text, one image id per line") from None
            for line in text.split():
                out[line.strip()] = split
    return out


_READERS = {"classification": _read_classification, "yolo": _read_yolo, "voc": _read_voc, "images": _read_images}


def load_dataset(
    path: str | os.PathLike,
    taxonomy: Taxonomy | str | None = None,
    *,
    dataset: str | None = None,
    headers: bool = True,
) -> Dataset:
    """Read a dataset folder (auto-detected layout) into its image and box tables.

    ``headers=False`` skips opening the images (sizes stay empty; YOLO boxes stay in 0..1 with a
    ``normalised`` column): :mod:`cellkit.stats` fills them from its cached index instead.
    """
    info = resolve_dataset(path, dataset)
    tax = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy or DEFAULT_TAXONOMY)
    ds = _READERS[info.kind](info, tax, headers)
    if headers:
        ds.boxes = boxes_to_pixels(ds.boxes, ds.images)
    return ds


def read_dataset(
    path: str | os.PathLike, taxonomy: Taxonomy | str | None = None, *, dataset: str | None = None
) -> pd.DataFrame:
    """One row per image file: path, dataset, kind, split, source, class, taxonomy node, size, errors.

    Detection sets add ``n_boxes`` and ``n_<class>`` columns (their boxes: :func:`read_boxes`).
    Unreadable files are rows with ``error`` set, never an exception.
    """
    return load_dataset(path, taxonomy, dataset=dataset).images


def read_boxes(path: str | os.PathLike, *, dataset: str | None = None) -> pd.DataFrame:
    """The boxes of a detection dataset in pixels: file, split, source, class, x1, y1, x2, y2, w, h."""
    return load_dataset(path, dataset=dataset).boxes


def count_files(path: str | os.PathLike, taxonomy: Taxonomy | str | None = None) -> pd.DataFrame:
    """Classification folders counted by file name only (no image is opened): class, node, file."""
    root = _check_folder(path)
    tax = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy or DEFAULT_TAXONOMY)
    folders, prefixes = _folder_rules(tax, root.name)
    rows = []
    for d in _subdirs(root):
        node = class_to_node(tax, d.name, folders)
        for p in _images_in(d, recursive=True):
            rows.append({"class": d.name, "node": refine_by_prefix(tax, node, p.name, prefixes), "file": p.name})
    return pd.DataFrame(rows, columns=["class", "node", "file"])
