"""Training data for the classifier: label rules, a decoded-once image cache, a leak-free split.

Images are decoded once into a uint8 array (``cache_dir()/cls_<key>_<size>.npz``) because JPEG
decoding every epoch would dominate training time on a small CPU. The split is stratified by the
finest label and keeps near-duplicates (perceptual hash distance <= ``max_dist``) on one side.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cellkit import config
from cellkit.errors import CellkitError
from cellkit.io import IMAGE_SUFFIXES, walk_files
from cellkit.preprocess import Preprocess
from cellkit.taxonomy import DEFAULT_DATASET, Taxonomy

SPLITS = ("train", "val", "test")


@dataclass
class ImageSet:
    """Decoded images (n, S, S, 3) uint8 with their relative paths, target node ids and phashes."""

    images: np.ndarray
    paths: list[str]
    nodes: list[str]
    phash: np.ndarray  # (n,) uint64
    background: list[float] = field(default_factory=list)  # reference RGB once white-balanced (colour_norm)

    def __len__(self) -> int:
        return len(self.paths)


def label_for(rel_path: str, taxonomy: Taxonomy, dataset: str = DEFAULT_DATASET) -> str | None:
    """Target node of ``<folder>/<file>``: the one label rule of :mod:`cellkit.data` (used by the Dataset page too).

    The folder names the class; a file-name prefix (``BNE_``) refines it only to a node *under* that
    class, so ``lymphocyte/BNE_9.png`` stays a lymphocyte.
    """
    from cellkit.data import _folder_rules, class_to_node, refine_by_prefix

    folders, prefixes = _folder_rules(taxonomy, dataset)
    parts = Path(rel_path).parts
    node = class_to_node(taxonomy, parts[-2], folders) if len(parts) >= 2 else None
    return refine_by_prefix(taxonomy, node, parts[-1], prefixes) if node is not None else None


def index_folder(
    root: str | Path, taxonomy: Taxonomy, dataset: str = DEFAULT_DATASET, unlabelled: list[str] | None = None
) -> tuple[list[str], list[str]]:
    """Relative paths and target nodes of every labelled image under ``root/<class>/`` (linked folders
    followed where the data folders allow); images no folder names a node of go to ``unlabelled`` when given."""
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "not found"
        raise CellkitError(f"data folder {root} {what}; pass --data <folder with class sub-folders>")
    paths, nodes = [], []
    for p in walk_files(root, follow=config.may_follow):  # never a link out of the app's data folders
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        rel = p.relative_to(root).as_posix()
        node = label_for(rel, taxonomy, dataset) if p.parent != root else None
        if node is not None:
            paths.append(rel)
            nodes.append(node)
        elif unlabelled is not None:
            unlabelled.append(rel)
    if not paths:
        raise CellkitError(
            f"no labelled images under {root}; expected <class>/<image> folders named like the taxonomy's "
            f"dataset rules or node ids ({', '.join(taxonomy.leaves)})"
        )
    return paths, nodes


def _decode(path: Path, prep: Preprocess) -> np.ndarray:
    from cellkit.io import read_image

    return prep.canonical(read_image(path))


def _phash(img: np.ndarray) -> int:
    import imagehash
    from PIL import Image

    return int(str(imagehash.phash(Image.fromarray(img))), 16)


def load_image_set(
    root: str | Path,
    taxonomy: Taxonomy,
    size: int,
    dataset: str = DEFAULT_DATASET,
    cache: bool = True,
    progress: bool = True,
    view: float = 1.0,
    framing: str = "",
    crop_scale: float = 2.5,
) -> ImageSet:
    """Index ``root`` and decode every image as the model will see it (framed, centre ``view``, ``size`` px; cached)."""
    root = Path(root).resolve()
    paths, nodes = index_folder(root, taxonomy, dataset)
    prep = Preprocess(size, view=view, framing=framing, crop_scale=crop_scale)
    keyed = [str(root), size, paths] + ([round(view, 4)] if view < 1 else [])
    if framing:  # the framer's own code is part of the key: any change to it rebuilds the cache
        from cellkit import framing as framer

        keyed += [framing, crop_scale, hashlib.sha256(Path(framer.__file__).read_bytes()).hexdigest()[:12]]
    key = hashlib.sha256(json.dumps(keyed).encode()).hexdigest()[:16]
    cache_file = config.cache_dir() / f"cls_{root.name}_{size}_{key}.npz"
    if cache and cache_file.is_file():
        z = np.load(cache_file)
        return ImageSet(z["images"], paths, nodes, z["phash"])
    images = np.zeros((len(paths), size, size, 3), np.uint8)
    hashes = np.zeros(len(paths), np.uint64)
    for i, rel in enumerate(tqdm(paths, desc=f"decoding {root.name} to {size}px", disable=not progress)):
        images[i] = _decode(root / rel, prep)
        hashes[i] = _phash(images[i])
    if cache:
        from cellkit.writes import atomic_write

        try:  # a cache that cannot be written only costs time on the next run
            atomic_write(cache_file, lambda fh: np.savez(fh, images=images, phash=hashes), fallback=False)
        except CellkitError as exc:
            print(f"warning: decoded-image cache not saved ({exc})", file=sys.stderr)
    return ImageSet(images, paths, nodes, hashes)


EXTRA_PREFIX = "extra"  # paths of images appended from --extra folders: ``extra<k>:<class>/<image>``


def extra_source(path: str) -> int | None:
    """The number ``k`` of the extra folder an ImageSet path came from (``extra<k>:...``), None for the main data."""
    head, sep, _ = path.partition(":")
    number = head[len(EXTRA_PREFIX) :]
    return int(number) if sep and head.startswith(EXTRA_PREFIX) and number.isdigit() else None


def append_extra(data: ImageSet, extras: list[ImageSet]) -> ImageSet:
    """``data`` followed by the images of ``extras``, their paths marked ``extra<k>:`` (k = position in ``extras``)."""
    if not extras:
        return data
    paths = list(data.paths) + [f"{EXTRA_PREFIX}{k}:{p}" for k, extra in enumerate(extras) for p in extra.paths]
    return ImageSet(
        np.concatenate([data.images, *(e.images for e in extras)]),
        paths,
        list(data.nodes) + [n for e in extras for n in e.nodes],
        np.concatenate([data.phash, *(e.phash for e in extras)]),
        list(data.background),
    )


def near_duplicate_groups(phash: np.ndarray, max_dist: int = 4) -> np.ndarray:
    """Group id per image: connected components of "phash Hamming distance <= max_dist"."""
    n = len(phash)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bits = np.unpackbits(phash.astype(">u8").view(np.uint8).reshape(n, 8), axis=1).astype(np.float32)
    for start in range(0, n, 1024):
        block = bits[start : start + 1024]
        # Hamming distance = popcount(a) + popcount(b) - 2 * <a, b>
        dist = block.sum(1)[:, None] + bits.sum(1)[None, :] - 2 * block @ bits.T
        ii, jj = np.nonzero(dist <= max_dist)
        for i, j in zip(ii + start, jj, strict=True):
            if i < j:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    return np.array([find(i) for i in range(n)])


def split_indices(
    nodes: list[str], groups: np.ndarray, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, np.ndarray]:
    """Seeded split stratified by target node; every near-duplicate group lands in one split."""
    rng = np.random.default_rng(seed)
    nodes_arr = np.asarray(nodes)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    group_label: dict[int, str] = {}
    for g, node in zip(groups, nodes_arr, strict=True):
        group_label.setdefault(int(g), str(node))  # a group is stratified by its first member
    for label in sorted(set(group_label.values())):
        gids = np.array(sorted(g for g, lab in group_label.items() if lab == label))
        rng.shuffle(gids)
        members = [np.nonzero(groups == g)[0] for g in gids]
        total = sum(len(m) for m in members)
        bounds = np.cumsum(fractions)[:2] * total
        done = 0
        for m in members:
            split = "train" if done < bounds[0] else ("val" if done < bounds[1] else "test")
            out[split].extend(m.tolist())
            done += len(m)
    return {s: np.array(sorted(v), dtype=np.int64) for s, v in out.items()}


def save_split(path: str | Path, paths: list[str], split: dict[str, np.ndarray], meta: dict) -> Path:
    """Write the split as file lists (names only) to JSON."""
    path = Path(path)
    data = {**meta, **{s: [paths[i] for i in idx] for s, idx in split.items()}}
    from cellkit.writes import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=0) + "\n")
    return path


def load_split(path: str | Path, paths: list[str]) -> dict[str, np.ndarray]:
    """Indices of a saved split in ``paths``; files missing from ``paths`` are dropped."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise CellkitError(f"split file {path} unreadable ({why}); pass another, or delete it for a new one") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(s, []), list) for s in SPLITS):
        raise CellkitError(f"split file {path}: expected an object of file lists under {', '.join(SPLITS)}")
    where = {p: i for i, p in enumerate(paths)}
    return {s: np.array([where[p] for p in data.get(s, []) if p in where], dtype=np.int64) for s in SPLITS}
