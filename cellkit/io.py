"""Safe reading of images, folders and zips: limits, formats, bombs and traversal.

Every reader returns RGB ``uint8`` arrays (H, W, 3) whatever came in (grayscale, RGBA, palette,
16-bit, EXIF-rotated) and raises :class:`CellkitError` with a message that names the fix.

Memory: pixel counts are read from the header and checked before anything is decoded, per image
(``CELLKIT_MAX_PIXELS``) and, for a request of several images (a zip, a multi-file upload), in
total (:class:`PixelBudget`, ``CELLKIT_MAX_REQUEST_PIXELS``). Images of ``LARGE_PIXELS`` or more
are decoded straight into one RGB uint8 array (OpenCV, converted in place or by row bands), so a
W x H image costs about 3 W H bytes instead of the 4-5 copies a PIL decode + convert makes.
"""

from __future__ import annotations

import errno
import io
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cellkit import config
from cellkit.errors import CellkitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jfif", ".bmp", ".tif", ".tiff", ".webp", ".gif")
DEFAULT_MAX_PIXELS = 400_000_000  # a 20000 x 20000 montage (CELLKIT_MAX_PIXELS overrides)
LARGE_PIXELS = 16_000_000  # from here on, decode straight into one uint8 array (_decode_large)
BAND_ROWS = 256  # rows converted at a time on the large path
MAX_ZIP_MEMBERS = 20_000
MAX_ZIP_TOTAL_BYTES = 2_000_000_000
MAX_ZIP_RATIO = 200  # uncompressed / compressed, per member
_CV2_FORMATS = ("PNG", "JPEG", "TIFF", "BMP")
_CV2_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L")
_ORIENTATION = 0x0112

# We check pixel counts ourselves (with a message); PIL's own bomb guard stays as a backstop, moved
# above a larger configured budget by _pil_guard so that ours always speaks first.
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS


def _mp(pixels: int, limit: int | None = None) -> str:
    """Pixels as megapixels for messages: ``361``, ``0.12``; with ``limit``, as many decimals as it takes for a
    figure over the limit not to read as the limit (``400.2``, not ``400``)."""
    mp = pixels / 1e6
    text = f"{mp:.0f}" if mp >= 10 else f"{mp:.2g}"
    for digits in range(1, 7):
        if limit is None or pixels <= limit or float(text) > limit / 1e6:
            break
        text = f"{mp:.{digits}f}"
    return text


class PixelBudget:
    """Pixels one request (a zip, a multi-file upload) may decode in all, charged from headers."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = int(limit) if limit is not None else config.max_request_pixels()
        self.used = 0

    def charge(self, pixels: int, label: str) -> None:
        """Count ``pixels`` against the budget, or raise CellkitError (and count nothing)."""
        if self.used + pixels > self.limit:
            raise CellkitError(
                f"{label}: the request would hold {_mp(self.used + pixels, self.limit)} MP of images, over the "
                f"{_mp(self.limit)} MP limit per request (CELLKIT_MAX_REQUEST_PIXELS); send fewer or smaller images"
            )
        self.used += pixels


def check_pixels(label: str, w: int, h: int, limit: int, budget: PixelBudget | None) -> None:
    """Refuse an image of zero size or over ``limit`` pixels (read from its header), and charge ``budget``."""
    if w == 0 or h == 0:
        raise CellkitError(f"{label}: image has zero size")
    if w * h > limit:
        raise CellkitError(
            f"{label}: image is {w}x{h} = {_mp(w * h, limit)} MP, over the {_mp(limit)} MP limit per image "
            "(CELLKIT_MAX_PIXELS); crop or downscale it first"
        )
    if budget is not None:
        budget.charge(w * h, label)


def _pil_guard(limit: int) -> None:
    """Keep PIL's decompression-bomb guard at or above our limit, so our message comes first."""
    if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limit


def _open(src: IO[bytes] | Path) -> Image.Image:
    """``Image.open`` (header only) without PIL's bomb warning: our own check follows at once."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(src)


def _tiff_size(data: bytes | None, path: Path | None) -> tuple[int, int] | None:
    """(width, height) of a TIFF's first page from its header (tifffile), or None."""
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data) if data is not None else path) as tif:
            page = tif.pages[0]
            return int(page.imagewidth), int(page.imagelength)
    except Exception:
        return None


def image_size(source: str | os.PathLike | bytes) -> tuple[int, int] | None:
    """(width, height) from the file header only (nothing is decoded), or None when unreadable."""
    data = source if isinstance(source, bytes) else None
    path = None if data is not None else Path(source)
    try:
        with _open(io.BytesIO(data) if data is not None else path) as img:
            return img.size
    except Image.DecompressionBombError:
        raise
    except Exception:
        return _tiff_size(data, path)


def _planar_deep(img: Image.Image) -> bool:
    """A TIFF whose colour channels are stored as separate planes at > 8 bits: Pillow decodes it wrongly."""
    tags = getattr(img, "tag_v2", {})
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    return tags.get(284) == 2 and tags.get(277, 1) > 1 and max(bits) > 8


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
    if img.mode == "RGB":
        return np.asarray(img)  # one copy, not convert()'s two
    return np.asarray(img.convert("RGB"))


def pil_to_rgb(img: Image.Image, *, reduce: int = 1) -> np.ndarray:
    """The one rule for turning an opened image into pixels (read_image, stats): RGB uint8 (H, W, 3).

    EXIF orientation is applied; 16-bit / float images are scaled by their range as a whole before any
    downscaling (``reduce``: integer factor, box filter), so every caller sees the same values.
    """
    img = ImageOps.exif_transpose(img)
    img.load()
    if reduce > 1 and img.mode in ("RGB", "RGBA", "L", "LA", "CMYK", "YCbCr"):  # modes Image.reduce takes
        return np.ascontiguousarray(_to_rgb_uint8(img.reduce(reduce)))
    rgb = _to_rgb_uint8(img)
    if reduce > 1:
        rgb = np.asarray(Image.fromarray(rgb).reduce(reduce))
    return np.ascontiguousarray(rgb)


def _raw_to_rgb(raw: np.ndarray, *, gray_range: bool, bgr: bool) -> np.ndarray:
    """An OpenCV / tifffile array (H, W[, C]) uint8 or uint16 -> RGB uint8, in place or by row bands.

    16-bit: one channel is scaled by its range (as ``_to_rgb_uint8`` does when ``gray_range``), more
    channels keep their high byte (as PIL reads 16-bit RGB). Alpha is composited over white.
    """
    import cv2

    if raw.ndim == 2:
        raw = raw[..., None]
    h, w, c = raw.shape
    if raw.dtype == np.uint8 and c == 3:
        if bgr:
            cv2.cvtColor(raw, cv2.COLOR_BGR2RGB, dst=raw)
        return raw
    lo = hi = 0.0
    if raw.dtype == np.uint16 and c == 1 and gray_range:
        lo, hi = float(raw.min()), float(raw.max())
    out = np.empty((h, w, 3), np.uint8)
    for y0 in range(0, h, BAND_ROWS):
        band = raw[y0 : y0 + BAND_ROWS]
        if band.dtype == np.uint16:
            if c == 1 and gray_range:
                span = hi - lo if hi > lo else np.inf  # same formula as _to_rgb_uint8: same bytes
                band = ((band - lo) / span * 255.0).astype(np.uint8)
            else:
                band = (band >> 8).astype(np.uint8)
        colour = band[..., :3] if c >= 3 else np.repeat(band[..., :1], 3, axis=-1)
        if bgr and c >= 3:
            colour = colour[..., ::-1]
        if c in (2, 4):
            alpha = band[..., -1:].astype(np.float32) / 255.0
            colour = np.rint(colour * alpha + 255.0 * (1.0 - alpha))
        out[y0 : y0 + BAND_ROWS] = colour
    return out


def _orientation(img: Image.Image) -> int:
    """EXIF orientation from the header; PNG's ``getexif()`` would decode the whole image to look."""
    if img.format == "PNG":
        raw = img.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(_ORIENTATION, 1))
    return int(img.getexif().get(_ORIENTATION, 1))


def _decode_large(img: Image.Image, data: bytes | None, path: Path | None) -> np.ndarray | None:
    """Decode a large image into one RGB uint8 array with OpenCV, or None to use the PIL path."""
    import cv2

    if img.format not in _CV2_FORMATS or img.mode not in _CV2_MODES:
        return None
    try:
        if _orientation(img) not in (0, 1):
            return None  # rotated by EXIF: the PIL path turns it
    except Exception:
        return None
    if img.format == "PNG" and img.mode != "P":
        raw = _png_decode(data, path)
        if raw is not None and raw.shape[:2] == (img.height, img.width) and raw.dtype in (np.uint8, np.uint16):
            return _raw_to_rgb(raw, gray_range=img.mode.startswith("I"), bgr=False)
    flags = cv2.IMREAD_UNCHANGED
    raw = cv2.imread(str(path), flags) if path is not None else cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if raw is None or raw.shape[:2] != (img.height, img.width) or raw.dtype not in (np.uint8, np.uint16):
        return None
    return _raw_to_rgb(raw, gray_range=img.mode.startswith("I"), bgr=True)


def _png_decode(data: bytes | None, path: Path | None) -> np.ndarray | None:
    """A PNG's pixels as stored (H, W[, C]) by libspng via imagecodecs: about one copy of the image at peak.

    OpenCV's PNG reader holds two (measured: 368 MB added for a 183 MB 8000x8000 image; imagecodecs 197 MB),
    which put a 20000x15000 smear over its 2 GB budget. None when imagecodecs cannot read it.
    """
    try:
        import imagecodecs

        return imagecodecs.png_decode(data if data is not None else Path(path).read_bytes())
    except Exception:  # any failure falls back to OpenCV, which reports its own errors
        return None


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
    arr = arr[..., :3]
    if arr.shape[-1] == 1:
        arr = arr[..., [0, 0, 0]]
    hi = float(np.iinfo(np.uint16).max) if arr.max() > 255 else 255.0
    out = np.empty((*arr.shape[:2], 3), np.uint8)
    for y0 in range(0, arr.shape[0], BAND_ROWS):  # by bands: no float copy of the whole image
        out[y0 : y0 + BAND_ROWS] = np.clip(arr[y0 : y0 + BAND_ROWS] / hi * 255.0, 0, 255)
    return out


def read_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    budget: PixelBudget | None = None,
) -> np.ndarray:
    """Read one image (path or bytes) as an RGB uint8 array (H, W, 3).

    The pixel count is checked from the header before decoding: against ``max_pixels`` (default
    ``CELLKIT_MAX_PIXELS``) and, when given, charged to the request's ``budget``.
    Raises CellkitError for missing, empty, non-image, truncated, corrupt or oversized files.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "upload")
    limit = int(max_pixels) if max_pixels is not None else config.max_pixels()
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
    _pil_guard(limit)
    try:
        with _open(io.BytesIO(data) if data is not None else path) as img:
            check_pixels(label, *img.size, limit, budget)
            if img.format not in ("PNG", "JPEG", "BMP", "TIFF", "MPO", "GIF", "WEBP"):
                raise CellkitError(f"{label}: format {img.format} not supported; use PNG, JPEG, BMP, TIFF, WebP or GIF")
            if img.format == "TIFF" and _planar_deep(img):
                raise CellkitError(
                    f"{label}: a TIFF with separate colour planes at more than 8 bits is not read correctly here; "
                    "save it as an ordinary (interleaved) TIFF or a PNG"
                )
            if img.width * img.height >= LARGE_PIXELS:
                arr = _decode_large(img, data, path)
                if arr is not None:
                    return arr
            img.seek(0)  # first page of multi-page TIFFs
            return pil_to_rgb(img)
    except CellkitError:
        raise
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        got = f"{_mp(int(found.group(1)))} MP" if found else "too many pixels"
        raise CellkitError(
            f"{label}: image is {got}, over the {_mp(limit)} MP limit per image (CELLKIT_MAX_PIXELS); "
            "crop or downscale it first"
        ) from None
    except UnidentifiedImageError:
        if label.lower().endswith((".tif", ".tiff")):
            size = _tiff_size(data, path)
            if size is not None:
                check_pixels(label, *size, limit, budget)
                arr = _tiff_16bit(data, path)
                if arr is not None:
                    return arr
        raise CellkitError(f"{label}: not a readable image; expected PNG, JPEG, BMP, TIFF, WebP or GIF") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CellkitError(f"{label}: image is corrupt or truncated ({exc}); re-export the file") from None


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def printable(text: str) -> str:
    """``text`` as valid UTF-8 for reports: bytes of a file name that are not UTF-8 (kept by Python as lone
    surrogates) become U+FFFD, so a CSV, Parquet or database write never fails on a name."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


@dataclass
class ImageItem:
    """One image found among the inputs: its name as found (printable) and either pixels or an error."""

    name: str
    image: np.ndarray | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        self.name = printable(self.name)
        if self.error is not None:
            self.error = printable(self.error)

    def take(self) -> np.ndarray | None:
        """The pixels, forgotten by this item (and so by the reader that made it): once the caller drops
        them, a large image's memory is freed, before the next image is read or the report is built."""
        image, self.image = self.image, None
        return image


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


# What reading one zip member can raise: a bad CRC or header (BadZipFile), encryption (RuntimeError), a compression
# method zipfile lacks (NotImplementedError), broken deflate data (zlib.error), a short file (EOFError), the disk.
ZIP_MEMBER_ERRORS = (zipfile.BadZipFile, OSError, RuntimeError, EOFError, NotImplementedError, zlib.error)


def _zip_pixels(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> int:
    """Pixels of all image members together, from their headers (nothing is decoded)."""
    total = 0
    for info in members:
        try:
            with zf.open(info) as fh, _open(fh) as img:
                w, h = img.size
        except Image.DecompressionBombError:
            return 2**62  # PIL's own guard fired on a header: far over any budget
        except Exception:
            try:
                with zf.open(info) as fh:
                    size = _tiff_size(fh.read(min(info.file_size, MAX_ZIP_TOTAL_BYTES)), None)
            except ZIP_MEMBER_ERRORS:
                size = None
            w, h = size or (0, 0)  # unreadable: reported when the member is read
        total += w * h
    return total


def iter_zip(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    budget: PixelBudget | None = None,
) -> Iterator[ImageItem]:
    """Yield the images of a zip (path or bytes) as ImageItems named ``zipname/member``.

    With a ``budget``, the pixels of all members are read from their headers first and the whole
    zip is refused (CellkitError, before any decoding) when they do not fit.
    """
    label = name or (Path(source).name if not isinstance(source, bytes) else "upload.zip")
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source)
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:  # a member name flagged UTF-8 that is not
        raise CellkitError(f"{label}: not a readable zip archive ({exc})") from None
    with zf:
        members = safe_zip_members(zf, label=label)
        if budget is not None:
            budget.charge(_zip_pixels(zf, members), f"{label} ({len(members)} images)")
        nested = [i for i in zf.infolist() if not i.is_dir() and _nested_zip(i.filename)]
        for info in sorted(members + nested, key=lambda i: i.filename):
            item_name = f"{label}/{info.filename}"
            if info in nested:  # reported, never opened: archives inside archives multiply the bomb risk
                yield ImageItem(item_name, error=f"{item_name}: zip inside a zip is not opened; unzip it first")
                continue
            yield _read_member(zf, info, item_name, max_pixels)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, item_name: str, max_pixels: int | None) -> ImageItem:
    """One zip member as an ImageItem (pixels or the reason it cannot be read); never more bytes than its header."""
    if info.flag_bits & 0x1:  # zipfile's own message for this quotes the whole ZipInfo
        return ImageItem(item_name, error=f"{item_name}: the member is encrypted; unzip it with its password first")
    try:
        with zf.open(info) as fh:
            data = fh.read(info.file_size + 1)
        if len(data) > info.file_size:
            raise CellkitError(f"{item_name}: member larger than its header says; refusing")
        return ImageItem(item_name, read_image(data, name=item_name, max_pixels=max_pixels))
    except CellkitError as exc:
        return ImageItem(item_name, error=str(exc))
    except ZIP_MEMBER_ERRORS as exc:
        return ImageItem(item_name, error=f"{item_name}: unreadable zip member ({exc})")


def zip_image_names(path: str | os.PathLike) -> list[str]:
    """The image members of a zip file that :func:`read_zip_member` will read (checked as :func:`iter_zip` does;
    nested zips are listed too and come back as errors); CellkitError for an unreadable or hostile zip."""
    label = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:  # a member name flagged UTF-8 that is not
        raise CellkitError(f"{label}: not a readable zip archive ({exc})") from None
    with zf:
        members = safe_zip_members(zf, label=label)
        nested = [i for i in zf.infolist() if not i.is_dir() and _nested_zip(i.filename)]
        return sorted(i.filename for i in members + nested)


def read_zip_member(
    path: str | os.PathLike, member: str, *, max_pixels: int | None = None, name: str | None = None
) -> ImageItem:
    """One image of a zip file by its member name (e.g. for a batch worker), as an ImageItem named
    ``zip/member``: the same checks as :func:`iter_zip`, without reading the other members. ``name``: how the
    caller names the image (a batch job's ``ref``, the zip as the user gave it), so every message names it so,
    once."""
    item_name = name or f"{path}/{member}"
    label = item_name[: -len(member) - 1] if item_name.endswith(f"/{member}") else str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:  # a member name flagged UTF-8 that is not
        return ImageItem(item_name, error=f"{label}: not a readable zip archive ({exc})")
    with zf:
        try:
            allowed = {i.filename: i for i in safe_zip_members(zf, label=label)}
        except CellkitError as exc:
            return ImageItem(item_name, error=str(exc))
        if _nested_zip(member):
            return ImageItem(item_name, error=f"{item_name}: zip inside a zip is not opened; unzip it first")
        if member not in allowed:
            return ImageItem(item_name, error=f"{item_name}: no such image in the archive")
        return _read_member(zf, allowed[member], item_name, max_pixels)


def iter_images(
    inputs: Iterable[str | os.PathLike],
    *,
    max_pixels: int | None = None,
    max_request_pixels: int | None = None,
) -> Iterator[ImageItem]:
    """Yield every image among files, folders (recursive, sorted) and zips, one decoded at a time.

    Unreadable images come back as items with ``error`` set, so one bad file never stops a batch. A file given
    twice (by two paths, or in a folder given too) is read once.
    A path that does not exist raises CellkitError before anything is read. With
    ``max_request_pixels``, all images together may hold at most that many pixels (checked from
    headers: an image or a whole zip that would go over comes back as an error item, undecoded).
    """
    paths = [Path(p) for p in inputs]
    for p in paths:
        if _dangling(p):
            raise CellkitError(f"{p}: broken symbolic link (its target {os.readlink(p)} does not exist)")
        if not p.exists():
            raise CellkitError(f"{p}: no such file or folder")
    budget = PixelBudget(max_request_pixels) if max_request_pixels is not None else None
    seen: set[str] = set()  # a file given twice (x.jpg ./x.jpg, a folder and a file in it) is read once

    def first_time(path: Path) -> bool:
        real = os.path.realpath(path)
        if real in seen:
            return False
        seen.add(real)
        return True

    for p in paths:
        if p.is_dir():
            for f in walk_files(p):
                if not first_time(f):
                    continue
                if _dangling(f):
                    if f.suffix.lower() == ".zip" or is_image_name(f.name):
                        yield ImageItem(str(f), error=link_problem(f))
                elif f.suffix.lower() == ".zip":
                    yield from _iter_zip_safe(f, max_pixels, budget)
                elif is_image_name(f.name):
                    yield _read_item(f, max_pixels, budget)
        elif not first_time(p):
            continue
        elif p.suffix.lower() == ".zip":
            yield from _iter_zip_safe(p, max_pixels, budget)
        else:
            yield _read_item(p, max_pixels, budget)


def _dangling(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def link_problem(path: Path) -> str:
    """Why a symbolic link cannot be read: a loop, or a target that is gone."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path}: a loop of symbolic links; point the link at a real file"
    return f"{path}: broken symbolic link ({os.readlink(path)} is gone)"


def _inside(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def walk_files(folder: Path, follow: Callable[[Path], bool] | None = None) -> list[Path]:
    """Every file under ``folder`` (hidden names skipped, broken links included), sorted. Links to folders are
    followed (each real folder once, so a link loop ends) when ``follow`` allows them (default: all); the one
    walk of folder inputs for every command, so none of them skips a linked folder another one reads."""
    top = os.path.realpath(folder)
    seen: set[str] = set()
    out: list[Path] = []
    stack = [Path(folder)]
    while stack:
        here = stack.pop()
        real = os.path.realpath(here)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith(".") or (entry.is_symlink() and follow is not None and not follow(path)):
                continue
            if entry.is_symlink() and _inside(os.path.realpath(path), top) and os.path.isdir(path):
                continue  # a link to a folder of this tree: read where it really is, under its own name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                stack.append(path)
            else:
                out.append(path)
    return sorted(out)


def _nested_zip(member: str) -> bool:
    pure = PurePosixPath(member.replace("\\", "/"))
    return pure.suffix.lower() == ".zip" and not pure.name.startswith(".") and "__MACOSX" not in pure.parts


def _read_item(path: Path, max_pixels: int | None, budget: PixelBudget | None = None) -> ImageItem:
    try:
        return ImageItem(str(path), read_image(path, max_pixels=max_pixels, budget=budget))
    except CellkitError as exc:
        return ImageItem(str(path), error=str(exc))


def _iter_zip_safe(path: Path, max_pixels: int | None, budget: PixelBudget | None = None) -> Iterator[ImageItem]:
    try:
        yield from iter_zip(path, name=str(path), max_pixels=max_pixels, budget=budget)
    except CellkitError as exc:
        yield ImageItem(str(path), error=str(exc))


# Writing files: one rule for every writer (atomic, through symlinks, never over devices, never lost).
from cellkit.writes import atomic_write, atomic_write_bytes, atomic_write_text, check_out  # noqa: E402, F401


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
