"""The on-disk index of a dataset: what its statistics need from the pixels, computed once and cached.

The *index* adds to each image row what needs its pixels: size and mode (from a real decode, so corrupt
files show up), colour and stain statistics, a perceptual hash (near duplicates) and a SHA-1 of the bytes
(exact duplicates). Computing it for 14k images takes a while, so it is cached under
:func:`cellkit.config.cache_dir`, keyed by the dataset folder and checked file by file (size + mtime):
reopening is fast, and after adding a few images only those are read.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from cellkit import config
from cellkit.data import Dataset, boxes_to_pixels, load_dataset, none_for_missing
from cellkit.errors import CellkitError
from cellkit.io import check_pixels, pil_to_rgb
from cellkit.taxonomy import DEFAULT_TAXONOMY, Taxonomy, load_taxonomy

INDEX_VERSION = 3  # 3: pixels read by cellkit.io.pil_to_rgb (16-bit grayscale, EXIF orientation)
THUMB = 64  # side used for colour statistics and hashing (JPEG draft mode decodes at ~1/4 scale)
COLOUR_COLUMNS = ["mean_r", "mean_g", "mean_b", "hue", "sat", "val", "od_r", "od_g", "od_b", "od_stain", "stained"]
RECORD_COLUMNS = ["width", "height", "mode", "format", "error", *COLOUR_COLUMNS, "phash", "sha1"]
STAINED_OD = 0.3  # summed optical density above which a pixel counts as stained (cell), not background

Progress = Callable[[int, int], None]


@dataclass
class DatasetIndex:
    """A dataset with per-image pixel statistics; ``images`` / ``boxes`` are the tables."""

    dataset: Dataset
    taxonomy: Taxonomy
    seconds: float  # wall time of this call
    n_computed: int  # images decoded by this call (0: everything came from the cache)
    cache_path: Path | None

    @property
    def images(self) -> pd.DataFrame:
        return self.dataset.images

    @property
    def boxes(self) -> pd.DataFrame:
        return self.dataset.boxes

    @property
    def name(self) -> str:
        return self.dataset.info.name

    @property
    def kind(self) -> str:
        return self.dataset.info.kind


# ---- per-image record ------------------------------------------------------------------------
def image_record(path: str | os.PathLike) -> dict[str, Any]:
    """Decode one image (small) and compute its size, colour/stain statistics and hashes.

    Never raises: an unreadable file gives a record with ``error`` set.
    """
    import imagehash

    rec: dict[str, Any] = dict.fromkeys(RECORD_COLUMNS)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        rec["error"] = f"cannot read file ({exc.strerror})"
        return rec
    if not data:
        rec["error"] = "file is empty (0 bytes)"
        return rec
    rec["sha1"] = hashlib.sha1(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as img:
            rec.update(width=img.size[0], height=img.size[1], mode=img.mode, format=img.format)
            check_pixels(Path(path).name, img.size[0], img.size[1], config.max_pixels(), None)  # read_image's rule
            if img.format == "JPEG":
                img.draft("RGB", (THUMB, THUMB))
            factor = max(1, min(img.size) // THUMB) if max(img.size) > 2 * THUMB else 1
            rgb = Image.fromarray(pil_to_rgb(img, reduce=factor))  # the same pixels read_image gives
    except UnidentifiedImageError:
        rec["error"] = "not a readable image"
        return rec
    except CellkitError as exc:  # over the pixel limit: said as read_image says it, never decoded
        rec["error"] = str(exc)
        return rec
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        rec["error"] = f"corrupt or truncated image ({exc})"
        return rec
    rec.update(colour_stats(np.asarray(rgb)))
    rec["phash"] = str(imagehash.phash(rgb))
    return rec


def colour_stats(rgb: np.ndarray) -> dict[str, float]:
    """Mean RGB, HSV, optical density per channel and of stained pixels.

    Hue is a saturation-weighted circular mean in degrees from red, in (-180, 180]: stained smears sit around red,
    pinks are slightly negative (towards magenta) and purples around -60, so nothing wraps.

    Optical density OD = -log10(I / 255) is what stains add up in; ``stained`` is the fraction of
    pixels whose summed OD exceeds :data:`STAINED_OD` (cells vs bright background).
    """
    arr = rgb.reshape(-1, 3).astype(np.float32)
    mean = arr.mean(axis=0)
    hsv = np.asarray(Image.fromarray(rgb).convert("HSV")).reshape(-1, 3).astype(np.float32)
    angle = hsv[:, 0] / 256.0 * 2 * np.pi
    weight = hsv[:, 1] + 1e-3  # saturation-weighted: the hue of grey/white background pixels means nothing
    hue = float(np.degrees(np.arctan2((np.sin(angle) * weight).sum(), (np.cos(angle) * weight).sum())))
    od = -np.log10(np.clip(arr, 1.0, 255.0) / 255.0)
    stained = od.sum(axis=1) > STAINED_OD
    return {
        "mean_r": float(mean[0]),
        "mean_g": float(mean[1]),
        "mean_b": float(mean[2]),
        "hue": hue,
        "sat": float(hsv[:, 1].mean() / 255.0),
        "val": float(hsv[:, 2].mean() / 255.0),
        "od_r": float(od[:, 0].mean()),
        "od_g": float(od[:, 1].mean()),
        "od_b": float(od[:, 2].mean()),
        "od_stain": float(od[stained].sum(axis=1).mean()) if stained.any() else 0.0,
        "stained": float(stained.mean()),
    }


# ---- cached index ----------------------------------------------------------------------------
def cache_file(dataset_path: str | os.PathLike) -> Path:
    """Where the index of a dataset folder is cached (a confined reader has its own: see ``config.confinement``)."""
    confined = config.confinement()
    keyed = str(Path(dataset_path).resolve())
    if confined is not None:
        keyed += "|confined:" + "|".join(map(str, confined))
    key = hashlib.sha1(keyed.encode()).hexdigest()[:16]
    return config.cache_dir() / f"index-v{INDEX_VERSION}-{Path(dataset_path).name}-{key}.parquet"


def _load_cache(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_parquet(path)
    except Exception:  # a damaged cache is rebuilt, never fatal
        return None
    needed = {"file", "bytes", "mtime_ns", *RECORD_COLUMNS}
    return df if needed <= set(df.columns) else None


def _save_cache(path: Path, records: pd.DataFrame) -> None:
    from cellkit.writes import atomic_write

    with contextlib.suppress(CellkitError):  # a read-only or full cache folder only costs speed
        atomic_write(path, lambda fh: records.to_parquet(fh, index=False), fallback=False)


def _records_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["file", "bytes", "mtime_ns", *RECORD_COLUMNS])
    for col in ("mode", "format", "error", "phash", "sha1"):
        df[col] = none_for_missing(df[col])
    for col in ("width", "height"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    for col in COLOUR_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def pending_images(path: str | os.PathLike, *, dataset: str | None = None) -> int:
    """How many images of a dataset are not in the disk cache yet (0: opening it is fast)."""
    ds = load_dataset(path, dataset=dataset, headers=False)
    cached = _load_cache(cache_file(ds.info.path))
    if cached is None:
        return len(ds.images)
    key = ds.images[["file", "bytes", "mtime_ns"]].merge(
        cached[["file", "bytes", "mtime_ns"]], how="left", indicator=True
    )
    return int((key["_merge"] == "left_only").sum())


def index_dataset(
    path: str | os.PathLike,
    taxonomy: Taxonomy | str | None = None,
    *,
    dataset: str | None = None,
    progress: bool | Progress = False,
    workers: int | None = None,
    use_cache: bool = True,
) -> DatasetIndex:
    """Read a dataset and its per-image pixel statistics, computing only what the cache lacks.

    ``progress``: True for a tqdm bar on stderr, or a callable ``(done, total)``.
    """
    start = time.perf_counter()
    tax = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy or DEFAULT_TAXONOMY)
    ds = load_dataset(path, tax, dataset=dataset, headers=False)
    images = ds.images
    cpath = cache_file(ds.info.path)
    cached = _load_cache(cpath) if use_cache else None
    key_cols = ["file", "bytes", "mtime_ns"]
    if cached is not None:
        cached = cached.drop_duplicates("file", keep="last")
        merged = images[key_cols].merge(cached, on=key_cols, how="left", indicator=True)
        todo = images.loc[(merged["_merge"] == "left_only").to_numpy()]
        keep = cached.merge(images[key_cols], on=key_cols, how="inner")
    else:
        todo, keep = images, _records_frame([])
    new_rows = _compute(todo, progress, workers, cpath if use_cache else None, keep)
    records = pd.concat([df for df in (keep, _records_frame(new_rows)) if len(df)], ignore_index=True)
    if records.empty:
        records = _records_frame([])
    if use_cache and (new_rows or cached is None or len(keep) != len(cached)):
        _save_cache(cpath, records)
    stat_error = images["error"]
    images = images.drop(columns=[c for c in RECORD_COLUMNS if c in images]).merge(
        records.drop(columns=["bytes", "mtime_ns"]), on="file", how="left"
    )
    images["error"] = none_for_missing(stat_error.where(stat_error.notna(), images["error"]))
    for col in ("mode", "format", "phash", "sha1"):
        images[col] = none_for_missing(images[col])
    if images.empty:
        raise CellkitError(f"{ds.info.path}: no images found; add images or pick another folder")
    if images["error"].notna().all():
        first = images.iloc[0]
        raise CellkitError(
            f"{ds.info.path}: none of the {len(images)} image files could be read "
            f"(e.g. {first['file']}: {first['error']}); check the files are PNG/JPEG/TIFF images"
        )
    ds.images = images
    ds.boxes = boxes_to_pixels(ds.boxes, images)
    return DatasetIndex(ds, tax, time.perf_counter() - start, len(new_rows), cpath if use_cache else None)


def _compute(
    todo: pd.DataFrame, progress: bool | Progress, workers: int | None, cpath: Path | None, keep: pd.DataFrame
) -> list[dict]:
    """Decode ``todo`` images on a thread pool (PIL releases the GIL while decoding)."""
    total = len(todo)
    if total == 0:
        return []
    bar = None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="indexing", unit="img", dynamic_ncols=True)
    rows: list[dict] = []
    n_workers = workers or min(4, os.cpu_count() or 1)
    paths, keys = todo["path"].tolist(), todo[["file", "bytes", "mtime_ns"]].to_dict("records")
    last_save = time.monotonic()
    pool = ThreadPoolExecutor(max_workers=n_workers)
    try:
        for key, rec in zip(keys, pool.map(image_record, paths), strict=True):
            rows.append({**key, **rec})
            if bar is not None:
                bar.update(1)
            elif callable(progress) and (len(rows) % 50 == 0 or len(rows) == total):
                progress(len(rows), total)
            if cpath is not None and time.monotonic() - last_save > 30:  # progress survives a crash
                _save_cache(cpath, pd.concat([keep, _records_frame(rows)], ignore_index=True))
                last_save = time.monotonic()
    except BaseException:  # Ctrl-C / closed browser tab: keep what was done, stop the queued work
        pool.shutdown(wait=False, cancel_futures=True)
        if cpath is not None and rows:
            _save_cache(cpath, pd.concat([keep, _records_frame(rows)], ignore_index=True))
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if bar is not None:
            bar.close()
    return rows


# ---- counts ----------------------------------------------------------------------------------
