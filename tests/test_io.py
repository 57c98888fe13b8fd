"""Bad input never crashes: every odd file gives a CellkitError naming the problem."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cellkit.errors import CellkitError
from cellkit.io import encode_png, iter_images, iter_zip, read_image


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def test_reads_rgb_png_jpeg_bmp_tiff_webp_gif(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    formats = [("PNG", "png"), ("JPEG", "jpg"), ("JPEG", "jfif"), ("BMP", "bmp"), ("TIFF", "tif")]
    for fmt, ext in [*formats, ("WEBP", "webp"), ("GIF", "gif")]:
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
    Image.new("RGB", (6, 6), (200, 100, 50)).save(tmp_path / "d" / "sub" / "phone.webp")  # read, not skipped
    zpath = tmp_path / "d" / "crops.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a/one.png", _png(np.ones((4, 4, 3), np.uint8)))
    items = list(iter_images([tmp_path / "d"]))
    names = [i.name for i in items]
    assert len(items) == 4
    assert any(n.endswith("crops.zip/a/one.png") for n in names)
    assert any(n.endswith("phone.webp") for n in names)
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


# ------------------------------------------------------------------ memory budget (issue 10, part 1)
@pytest.fixture
def no_decoding(monkeypatch):
    """Make every pixel decoder fail: only headers may be read."""
    import cv2
    import tifffile
    from PIL import ImageFile

    def boom(*args, **kwargs):
        raise AssertionError("decoded although the header should have been enough")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    monkeypatch.setattr(cv2, "imread", boom)
    monkeypatch.setattr(cv2, "imdecode", boom)
    monkeypatch.setattr(tifffile, "imread", boom)


def test_oversized_image_is_refused_from_its_header_alone(no_decoding, tmp_path):
    big = _png(np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(CellkitError, match=r"400x300 = 0\.12 MP, over the 0\.1 MP limit per image") as err:
        read_image(big, name="big.png", max_pixels=100_000)
    assert "\n" not in str(err.value) and "CELLKIT_MAX_PIXELS" in str(err.value)
    tifffile = pytest.importorskip("tifffile")
    path = tmp_path / "rgb16.tif"  # PIL cannot open it: the size comes from tifffile's header
    tifffile.imwrite(path, np.zeros((300, 400, 3), np.uint16), photometric="rgb")
    with pytest.raises(CellkitError, match=r"over the 0\.1 MP limit per image"):
        read_image(path, max_pixels=100_000)


def test_pixel_limit_follows_the_environment(monkeypatch):
    png = _png(np.zeros((30, 40, 3), np.uint8))
    monkeypatch.setenv("CELLKIT_MAX_PIXELS", "1000")
    with pytest.raises(CellkitError, match=r"40x30 = 0\.0012 MP, over the 0\.001 MP limit"):
        read_image(png)
    monkeypatch.setenv("CELLKIT_MAX_PIXELS", "1.2e3")
    assert read_image(png).shape == (30, 40, 3)
    monkeypatch.setenv("CELLKIT_MAX_PIXELS", "lots")
    with pytest.raises(CellkitError, match="CELLKIT_MAX_PIXELS: expected a positive whole number, got 'lots'"):
        read_image(png)


def test_our_limit_outranks_pils_bomb_guard(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)  # PIL alone would call this a bomb
    assert read_image(_png(np.zeros((100, 100, 3), np.uint8)), max_pixels=20_000).shape == (100, 100, 3)


def _zip_of(n: int, side: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(n):
            zf.writestr(f"crops/c{i}.png", _png(np.full((side, side, 3), 200, np.uint8)))
    return buf.getvalue()


def test_request_budget_refuses_a_whole_zip_before_decoding(no_decoding):
    from cellkit.io import PixelBudget

    with pytest.raises(CellkitError, match=r"crops\.zip \(3 images\): the request would hold 0\.03 MP") as err:
        next(iter_zip(_zip_of(3, 100), name="crops.zip", budget=PixelBudget(25_000)))
    assert "0.025 MP limit per request" in str(err.value) and "\n" not in str(err.value)


def test_request_budget_is_the_sum_over_files_and_zips(tmp_path, monkeypatch):
    from cellkit.io import PixelBudget

    (tmp_path / "crops.zip").write_bytes(_zip_of(2, 100))  # 20 000 px
    (tmp_path / "one.png").write_bytes(_png(np.zeros((100, 100, 3), np.uint8)))  # 10 000 px
    items = list(iter_images([tmp_path / "crops.zip", tmp_path / "one.png"], max_request_pixels=25_000))
    assert [bool(i.error) for i in items] == [False, False, True]
    assert "limit per request" in items[-1].error
    assert len(list(iter_images([tmp_path], max_request_pixels=30_000))) == 3
    budget = PixelBudget(15_000)  # the app: one budget for a multi-file upload
    read_image(_png(np.zeros((100, 100, 3), np.uint8)), budget=budget)
    with pytest.raises(CellkitError, match="limit per request"):
        read_image(_png(np.zeros((100, 100, 3), np.uint8)), name="second.png", budget=budget)
    monkeypatch.setenv("CELLKIT_MAX_REQUEST_PIXELS", "123456")
    assert PixelBudget().limit == 123_456


@pytest.mark.parametrize(
    ("img", "fmt"),
    [
        (Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 50, 3), dtype=np.uint8)), "PNG"),
        (Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 50, 3), dtype=np.uint8)), "JPEG"),
        (Image.fromarray(np.random.default_rng(3).integers(0, 255, (40, 50, 3), dtype=np.uint8)), "TIFF"),
        (Image.fromarray(np.random.default_rng(4).integers(0, 255, (40, 50, 4), dtype=np.uint8)), "PNG"),
        (Image.fromarray(np.random.default_rng(5).integers(0, 255, (40, 50), dtype=np.uint8)), "PNG"),
        (Image.fromarray(np.arange(2000, dtype=np.uint16).reshape(40, 50) * 30), "PNG"),
        (Image.fromarray(np.random.default_rng(6).integers(0, 255, (40, 50, 3), dtype=np.uint8)).convert("P"), "PNG"),
    ],
    ids=["png", "jpeg", "tiff", "rgba", "gray", "gray16", "palette"],
)
def test_large_images_decode_into_one_array_with_the_same_pixels(img, fmt, monkeypatch):
    """Past LARGE_PIXELS, images skip PIL's pixel buffers (OpenCV into one uint8 array), same result."""
    from PIL import ImageFile

    import cellkit.io as cio

    buf = io.BytesIO()
    img.save(buf, format=fmt)
    small_path = read_image(buf.getvalue())
    monkeypatch.setattr(cio, "LARGE_PIXELS", 1_000)
    monkeypatch.setattr(cio, "BAND_ROWS", 7)  # several row bands

    def no_pil(*args, **kwargs):
        raise AssertionError("PIL decoded a large image")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pil)
    large_path = read_image(buf.getvalue())
    assert large_path.dtype == np.uint8 and large_path.flags.c_contiguous
    np.testing.assert_array_equal(large_path, small_path)


def test_large_png_is_decoded_by_libspng_not_opencv(monkeypatch):
    """OpenCV's PNG reader holds two copies of a large image; imagecodecs (libspng) one."""
    import cv2

    import cellkit.io as cio

    img = np.random.default_rng(7).integers(0, 255, (60, 70, 3), dtype=np.uint8)
    data = _png(img)
    monkeypatch.setattr(cio, "LARGE_PIXELS", 1_000)

    def no_cv2(*args, **kwargs):
        raise AssertionError("OpenCV decoded a large PNG")

    monkeypatch.setattr(cv2, "imdecode", no_cv2)
    monkeypatch.setattr(cv2, "imread", no_cv2)
    np.testing.assert_array_equal(read_image(data), img)


def test_large_exif_rotated_image_still_turns(monkeypatch):
    import cellkit.io as cio

    arr = np.zeros((40, 60, 3), np.uint8)
    arr[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", exif=exif.tobytes())
    monkeypatch.setattr(cio, "LARGE_PIXELS", 1_000)
    out = read_image(buf.getvalue())
    assert out.shape == (60, 40, 3) and out[:10].mean() > 200


def test_a_zip_with_two_members_of_one_name(tmp_path):
    """Read in order, every member is classified; a batch reads members by name, so it says it cannot."""
    import warnings

    from cellkit.batch.tasks import find_tasks

    crop = encode_png(np.full((20, 20, 3), 200, np.uint8))
    path = tmp_path / "dup.zip"
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it writes
        zf.writestr("a.png", crop)
        zf.writestr("a.png", b"second, broken")
        zf.writestr("b.png", crop)
    items = list(iter_images([path]))
    assert [i.image is not None for i in items] == [True, False, True]
    tasks = {t.member: t for t in find_tasks([path])}
    assert "2 members of the zip have this name" in tasks["a.png"].error and tasks["b.png"].error == ""


def test_a_deep_planar_tiff_is_refused_not_misread(tmp_path):
    """Pillow reads 16-bit RGB stored plane by plane as garbage: refused with the fix; 8-bit planar is fine."""
    import tifffile

    rgb = (np.random.default_rng(0).integers(0, 255, (40, 50, 3)) * 256).astype(np.uint16)
    tifffile.imwrite(tmp_path / "planar16.tif", np.moveaxis(rgb, -1, 0), planarconfig="separate", photometric="rgb")
    with pytest.raises(CellkitError, match="separate colour planes at more than 8 bits"):
        read_image(tmp_path / "planar16.tif")
    tifffile.imwrite(tmp_path / "contig16.tif", rgb, photometric="rgb")
    assert np.array_equal(read_image(tmp_path / "contig16.tif"), (rgb >> 8).astype(np.uint8))
    eight = (rgb >> 8).astype(np.uint8)
    tifffile.imwrite(tmp_path / "planar8.tif", np.moveaxis(eight, -1, 0), planarconfig="separate", photometric="rgb")
    assert np.array_equal(read_image(tmp_path / "planar8.tif"), eight)


def test_an_encrypted_member_says_so_in_one_plain_line(tmp_path):
    path = tmp_path / "locked.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("cells/a.png", b"\x89PNG not really")
    raw = bytearray(path.read_bytes())  # mark the member encrypted (zipfile cannot write encryption)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = raw.find(signature)
        raw[at + offset] |= 0x1
    path.write_bytes(bytes(raw))
    (item,) = iter_images([path])
    assert item.error.endswith("cells/a.png: the member is encrypted; unzip it with its password first")
    assert "ZipInfo" not in item.error


def _damaged_zips() -> dict[str, bytes]:
    """Zips whose second member cannot be read, each in another way (the first is a good PNG)."""
    import struct

    good = encode_png(np.full((8, 8, 3), 120, np.uint8))

    def build(compression: int) -> bytearray:
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w", compression) as zf:
            zf.writestr("a.png", good)
            zf.writestr("b.png", encode_png(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
        return bytearray(b.getvalue())

    def second_local_header(z: bytearray) -> int:
        return z.find(b"PK\x03\x04", z.find(b"PK\x03\x04") + 4)

    out = {}
    for name, compression in (("deflate", zipfile.ZIP_DEFLATED), ("stored", zipfile.ZIP_STORED)):
        z = build(compression)
        j = second_local_header(z)
        n, e = struct.unpack("<HH", z[j + 26 : j + 30])
        for k in range(j + 30 + n + e + 2, j + 30 + n + e + 40):
            z[k] ^= 0xFF  # broken data: zlib.error for deflate, a bad CRC for stored
        out[f"corrupt {name}"] = bytes(z)
    z = build(zipfile.ZIP_DEFLATED)
    j, c = second_local_header(z), z.rfind(b"PK\x01\x02")
    z[j + 8 : j + 10] = z[c + 10 : c + 12] = struct.pack("<H", 99)  # a compression method zipfile lacks
    out["method 99"] = bytes(z)
    return out


@pytest.mark.parametrize("kind", ["corrupt deflate", "corrupt stored", "method 99"])
@pytest.mark.parametrize("with_budget", [False, True])
def test_an_unreadable_zip_member_is_its_own_error_and_the_others_are_read(kind, with_budget):
    from cellkit.io import PixelBudget

    budget = PixelBudget(10**9) if with_budget else None
    items = list(iter_zip(_damaged_zips()[kind], name="lab.zip", budget=budget))
    assert [i.name for i in items] == ["lab.zip/a.png", "lab.zip/b.png"]
    assert items[0].image is not None and items[0].error is None
    assert items[1].image is None and items[1].error.startswith("lab.zip/b.png: ")


def test_folder_links_are_followed_once_and_a_link_loop_is_named(tmp_path):
    from cellkit.io import walk_files

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.png").write_bytes(_png(np.zeros((5, 5, 3), np.uint8)))
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(_png(np.zeros((5, 5, 3), np.uint8)))
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "again").symlink_to(root, target_is_directory=True)  # a loop: walked once
    (root / "loop.png").symlink_to(root / "loop.png")
    (root / "sub").mkdir()
    (root / "sub" / "c.png").write_bytes(_png(np.zeros((5, 5, 3), np.uint8)))
    (root / "a_link_to_sub").symlink_to(root / "sub", target_is_directory=True)  # read as sub/, never twice
    walked = [p.relative_to(root).as_posix() for p in walk_files(root)]
    assert walked == ["a.png", "linked/b.png", "loop.png", "sub/c.png"]
    assert walk_files(root, follow=lambda p: False) == [root / "a.png", root / "sub" / "c.png"]
    items = {Path(i.name).name: i for i in iter_images([root])}
    assert items["b.png"].error is None and "a loop of symbolic links" in items["loop.png"].error


def test_a_zip_whose_member_name_is_marked_utf8_but_is_not_is_one_error(tmp_path):
    from cellkit.io import read_zip_member, zip_image_names

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Ã.png", _png(np.zeros((4, 4, 3), np.uint8)))  # non-ASCII: written with the UTF-8 flag
    path = tmp_path / "bad_names.zip"
    path.write_bytes(buf.getvalue().replace("Ã".encode(), b"\xff\xfe"))
    items = list(iter_images([path]))
    assert len(items) == 1 and "not a readable zip archive" in items[0].error
    with pytest.raises(CellkitError, match="not a readable zip archive"):
        zip_image_names(path)
    assert "not a readable zip archive" in read_zip_member(path, "x.png").error


def test_a_file_given_twice_is_read_once(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(_png(np.zeros((5, 5, 3), np.uint8)))
    same = [tmp_path / "d" / "x.png", tmp_path / "d" / "." / "x.png", tmp_path / "d"]
    assert len(list(iter_images(same))) == 1


def test_a_figure_over_a_limit_never_reads_as_the_limit():
    from cellkit.io import _mp

    assert _mp(400_000_000 + 640 * 480, 400_000_000) == "400.3"  # "400 MP, over the 400 MP limit" read as a bug
    assert _mp(400_000_001, 400_000_000) == "400.000001"
    assert _mp(361_000_000, 400_000_000) == "361" and _mp(120_000) == "0.12"
