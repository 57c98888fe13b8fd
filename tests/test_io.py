"""Bad input never crashes: every odd file gives a CellkitError naming the problem."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from cellkit.errors import CellkitError
from cellkit.io import iter_images, iter_zip, read_image


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_reads_rgb_png_jpeg_bmp_tiff(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    for fmt, ext in [("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tif")]:
        path = tmp_path / f"a.{ext}"
        Image.fromarray(rgb).save(path, format=fmt)
        out = read_image(path)
        assert out.shape == (20, 30, 3) and out.dtype == np.uint8


@pytest.mark.parametrize(
    "img",
    [
        Image.fromarray(np.full((8, 9), 7, np.uint8)),  # grayscale
        Image.fromarray(np.full((8, 9, 4), 200, np.uint8), mode="RGBA"),
        Image.fromarray(np.arange(72, dtype=np.uint16).reshape(8, 9) * 900),  # 16-bit
        Image.new("P", (9, 8)),
    ],
    ids=["L", "RGBA", "I;16", "P"],
)
def test_odd_modes_become_rgb_uint8(img):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = read_image(buf.getvalue())
    assert out.shape == (8, 9, 3) and out.dtype == np.uint8


def test_16bit_tiff_uses_full_range(tmp_path):
    arr = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    path = tmp_path / "x16.tif"
    Image.fromarray(arr).save(path)
    out = read_image(path)
    assert out.min() == 0 and out.max() == 255


def test_rgb_16bit_tiff_via_tifffile(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    arr = (np.random.default_rng(1).random((16, 16, 3)) * 65535).astype(np.uint16)
    path = tmp_path / "rgb16.tiff"
    tifffile.imwrite(path, arr)
    out = read_image(path)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a readable image"),
        (_png(np.zeros((50, 50, 3), np.uint8))[:60], "corrupt or truncated"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_bytes_raise_clear_errors(data, message):
    with pytest.raises(CellkitError, match=message):
        read_image(data, name="x.png")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CellkitError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(CellkitError, match="folder"):
        read_image(tmp_path)


def test_pixel_limit_is_checked_before_decoding():
    big = _png(np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(CellkitError, match="MP limit"):
        read_image(big, max_pixels=100_000)


def test_iter_images_mixes_good_bad_and_zip(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "ok.png").write_bytes(_png(np.zeros((5, 5, 3), np.uint8)))
    (tmp_path / "d" / "sub" / "bad.jpg").write_bytes(b"garbage")
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    zpath = tmp_path / "d" / "crops.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a/one.png", _png(np.ones((4, 4, 3), np.uint8)))
    items = list(iter_images([tmp_path / "d"]))
    names = [i.name for i in items]
    assert len(items) == 3
    assert any(n.endswith("crops.zip/a/one.png") for n in names)
    bad = [i for i in items if i.error]
    assert len(bad) == 1 and "bad.jpg" in bad[0].name
    with pytest.raises(CellkitError, match="no such file"):
        list(iter_images([tmp_path / "missing"]))


def test_zip_traversal_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../etc/evil.png", _png(np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(CellkitError, match="unsafe path"):
        list(iter_zip(buf.getvalue()))


def test_zip_bomb_is_refused():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.png", b"\0" * 50_000_000)
    assert len(buf.getvalue()) < 1_000_000
    with pytest.raises(CellkitError, match="zip bomb"):
        list(iter_zip(buf.getvalue()))


def test_not_a_zip():
    with pytest.raises(CellkitError, match="not a readable zip"):
        list(iter_zip(b"PK nope"))
