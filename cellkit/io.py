"""Safe reading of images, folders and zips: limits, formats, bombs and traversal.

Every reader returns RGB ``uint8`` arrays (H, W, 3) whatever came in (grayscale, RGBA, palette,
16-bit, EXIF-rotated) and raises :class:`CellkitError` with a message that names the fix.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cellkit.errors import CellkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 400_000_000  # a 20000 x 20000 montage
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_TOTAL_BYTES = 2_000_000_000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per member

# We check the pixel count ourselves (with a message); PIL's own bomb guard stays as a backstop.
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


def _to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to RGB uint8, scaling 16-bit and float images by their range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = np.nanmin(arr), np.nanmax(arr)
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        arr8 = np.nan_to_num(scaled).astype(np.uint8)
        return np.stack([arr8] * 3, axis=-1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # slides are white-ish
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def _tiff_16bit(data: bytes | None, path: Path | None) -> np.ndarray | None:
    """Multi-channel 16-bit TIFFs, which PIL cannot open, via tifffile when it is installed."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - tifffile is a dependency
        return None
    try:
        arr = tifffile.imread(io.BytesIO(data) if data is not None else path, key=0)
    except Exception:
        return None
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        return None
    arr = arr[..., :3].astype(np.float64)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    hi = float(np.iinfo(np.uint16).max) if arr.max() > 255 else 255.0
    return np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)


def read_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read one image (path or bytes) as an RGB uint8 array (H, W, 3).

    Raises CellkitError for missing, empty, non-image, truncated, corrupt or oversized files.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    data: bytes | None = source if isinstance(source, bytes) else None
    path = None if data is not None else Path(source)
    if path is not None:
        if not path.exists():
            raise CellkitError(f"{label}: file not found; check the path")
        if path.is_dir():
            raise CellkitError(f"{label}: is a folder, expected an image file")
        if path.stat().st_size == 0:
            raise CellkitError(f"{label}: file is empty (0 bytes)")
    elif not data:
        raise CellkitError(f"{label}: file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as img:
            w, h = img.size
            if w * h > max_pixels:
                raise CellkitError(
                    f"{label}: {w}x{h} = {w * h / 1e6:.0f} MP is over the {max_pixels / 1e6:.0f} MP limit; "
                    "crop or downscale it first"
                )
            if w == 0 or h == 0:
                raise CellkitError(f"{label}: image has zero size")
            if img.format not in ("PNG", "JPEG", "BMP", "TIFF", "MPO", "GIF", "WEBP"):
                raise CellkitError(f"{label}: format {img.format} not supported; use PNG, JPEG, BMP or TIFF")
            img.seek(0)  # first page of multi-page TIFFs
            img = ImageOps.exif_transpose(img)
            img.load()
            return np.ascontiguousarray(_to_rgb_uint8(img))
    except CellkitError:
        raise
    except Image.DecompressionBombError:
        raise CellkitError(f"{label}: image is too large (decompression bomb guard); crop or downscale it") from None
    except UnidentifiedImageError:
        if label.lower().endswith((".tif", ".tiff")):
            arr = _tiff_16bit(data, path)
            if arr is not None:
                if arr.shape[0] * arr.shape[1] > max_pixels:
                    raise CellkitError(f"{label}: image is over the {max_pixels / 1e6:.0f} MP limit") from None
                return arr
        raise CellkitError(f"{label}: not a readable image; expected PNG, JPEG, BMP or TIFF") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CellkitError(f"{label}: image is corrupt or truncated ({exc}); re-export the file") from None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class ImageItem:
    """One image found among the inputs: its name as found and either pixels or an error."""

    name: str
    image: np.ndarray | None = None
    error: str | None = None


def safe_zip_members(zf: zipfile.ZipFile, *, label: str = "zip") -> list[zipfile.ZipInfo]:
    """The image members of a zip, refusing traversal paths and bombs (with a message)."""
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise CellkitError(f"{label}: {len(infos)} entries is over the limit of {MAX_ZIP_MEMBERS}; split the archive")
    total = 0
    members = []
    for info in infos:
        if info.is_dir():
            continue
        pure = PurePosixPath(info.filename.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
            raise CellkitError(f"{label}: unsafe path {info.filename!r} inside the archive; refusing the whole zip")
        total += info.file_size
        if total > MAX_ZIP_TOTAL_BYTES:
            raise CellkitError(
                f"{label}: uncompressed size over {MAX_ZIP_TOTAL_BYTES / 1e9:.0f} GB; refusing (zip bomb?)"
            )
        if info.compress_size and info.file_size / info.compress_size > MAX_ZIP_RATIO and info.file_size > 10_000_000:
            raise CellkitError(
                f"{label}: member {info.filename!r} expands {info.file_size / info.compress_size:.0f}x; "
                "refusing (zip bomb?)"
            )
        if pure.name.startswith(".") or "__MACOSX" in pure.parts:
            continue
        if is_image_name(pure.name):
            members.append(info)
    return sorted(members, key=lambda i: i.filename)


def iter_zip(
    source: str | os.PathLike | bytes, *, name: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[ImageItem]:
    """Yield the images of a zip (path or bytes) as ImageItems named ``zipname/member``."""
    label = name or (Path(source).name if not isinstance(source, bytes) else "upload.zip")
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CellkitError(f"{label}: not a readable zip archive ({exc})") from None
    with zf:
        members = safe_zip_members(zf, label=label)
        for info in members:
            item_name = f"{label}/{info.filename}"
            try:
                with zf.open(info) as fh:
                    data = fh.read(info.file_size + 1)
                if len(data) > info.file_size:
                    raise CellkitError(f"{item_name}: member larger than its header says; refusing")
                yield ImageItem(item_name, read_image(data, name=item_name, max_pixels=max_pixels))
            except CellkitError as exc:
                yield ImageItem(item_name, error=str(exc))
            except (zipfile.BadZipFile, OSError, RuntimeError, EOFError) as exc:
                yield ImageItem(item_name, error=f"{item_name}: unreadable zip member ({exc})")


def iter_images(inputs: Iterable[str | os.PathLike], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[ImageItem]:
    """Yield every image among files, folders (recursive, sorted) and zips.

    Unreadable images come back as items with ``error`` set, so one bad file never stops a batch.
    A path that does not exist raises CellkitError before anything is read.
    """
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists():
            raise CellkitError(f"{p}: no such file or folder")
    for p in paths:
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not f.name.startswith("."))
            for f in files:
                if f.suffix.lower() == ".zip":
                    yield from _iter_zip_safe(f, max_pixels)
                elif is_image_name(f.name):
                    yield _read_item(f, max_pixels)
        elif p.suffix.lower() == ".zip":
            yield from _iter_zip_safe(p, max_pixels)
        else:
            yield _read_item(p, max_pixels)


def _read_item(path: Path, max_pixels: int) -> ImageItem:
    try:
        return ImageItem(str(path), read_image(path, max_pixels=max_pixels))
    except CellkitError as exc:
        return ImageItem(str(path), error=str(exc))


def _iter_zip_safe(path: Path, max_pixels: int) -> Iterator[ImageItem]:
    try:
        yield from iter_zip(path, name=str(path), max_pixels=max_pixels)
    except CellkitError as exc:
        yield ImageItem(str(path), error=str(exc))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file so that readers see either the old or the whole new content, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
