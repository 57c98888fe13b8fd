"""The one write rule (cellkit.writes) and the small reading rules of issue 10, tested directly."""

from __future__ import annotations

import errno
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cellkit import writes
from cellkit.dataset_index import image_record
from cellkit.errors import CellkitError, named
from cellkit.io import atomic_write_bytes, iter_images, read_image


def test_atomic_write_replaces_keeps_mode_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    assert atomic_write_bytes(path, b"one") == path  # missing folders are made
    os.chmod(path, 0o640)
    atomic_write_bytes(path, b"two")
    assert path.read_bytes() == b"two" and (path.stat().st_mode & 0o777) == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_symlink_is_written_through_and_devices_refused(tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and real.read_text() == "new"
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(CellkitError, match="device, FIFO or socket"):
        writes.check_out(tmp_path / "fifo")
    with pytest.raises(CellkitError, match="is a folder"):
        writes.check_out(tmp_path)
    with pytest.raises(CellkitError, match=r"real\.csv is a file, not a folder"):
        writes.check_out(real / "x.csv")
    assert writes.check_out(tmp_path / "new" / "x.csv") == tmp_path / "new" / "x.csv"
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_failed_write_saves_a_fallback_or_says_nothing_was_saved(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLKIT_HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    out.mkdir()
    real_replace = os.replace

    def replace(src, dst):
        if os.path.dirname(os.fspath(dst)) == str(out):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(CellkitError, match="No space left on device; the results were saved to") as exc:
        atomic_write_bytes(out / "r.json", b"results")
    saved = str(exc.value).rsplit("saved to ", 1)[1]
    assert Path(saved).read_bytes() == b"results" and list(out.iterdir()) == []
    with pytest.raises(CellkitError, match="No space") as exc:
        atomic_write_bytes(out / "cache.bin", b"x", fallback=False)
    assert "saved" not in str(exc.value)
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(errno.EROFS, "Read-only")))
    with pytest.raises(CellkitError, match="nothing was saved"):
        atomic_write_bytes(out / "r.json", b"results")
    assert list(out.iterdir()) == []


def test_a_writer_that_raises_leaves_nothing(tmp_path):
    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("serialiser bug")

    with pytest.raises(RuntimeError):
        writes.atomic_write(tmp_path / "x.bin", boom)
    assert list(tmp_path.iterdir()) == []


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_nested_zips_and_dangling_links_are_reported(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    with zipfile.ZipFile(folder / "outer.zip", "w") as zf:
        zf.writestr("a.png", _png(np.zeros((4, 4, 3), np.uint8)))
        zf.writestr("inner.zip", b"PK")
    (folder / "gone.png").symlink_to(tmp_path / "missing.png")
    (folder / "gone.txt").symlink_to(tmp_path / "missing.txt")  # not an image name: ignored like any text file
    items = {i.name: i for i in iter_images([folder])}
    assert sorted(n.rsplit("/", 1)[1] for n in items) == ["a.png", "gone.png", "inner.zip"]
    inner = next(i for n, i in items.items() if n.endswith("inner.zip"))
    assert "zip inside a zip" in inner.error
    gone = items[str(folder / "gone.png")]
    assert gone.error.startswith(str(folder / "gone.png")) and "broken symbolic link" in gone.error
    with pytest.raises(CellkitError, match="broken symbolic link"):
        list(iter_images([folder / "gone.png"]))


def test_16bit_grayscale_is_read_the_same_by_read_image_and_stats(tmp_path):
    arr = (np.random.default_rng(0).random((300, 300)) * 3000 + 1000).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(arr).save(path)
    rgb = read_image(path)
    rec = image_record(path)
    assert rec["error"] is None and rec["mode"].startswith("I")
    assert rec["mean_r"] == pytest.approx(float(rgb[..., 0].mean()), abs=1.0)


def test_error_names_the_file_once():
    assert named("a.png", "a.png: corrupt") == "a.png: corrupt"
    assert named("a.png", "corrupt") == "a.png: corrupt"


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    from cellkit.train.classifier import _rng_state, _set_rng_state

    np.random.seed(7)
    np.random.normal()  # leaves a cached gaussian in the state
    torch.save({"rng": _rng_state()}, tmp_path / "c.pt")
    expected = (np.random.random(3), torch.rand(3))
    _set_rng_state(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    assert np.array_equal(np.random.random(3), expected[0]) and torch.equal(torch.rand(3), expected[1])


def test_an_out_that_links_into_a_folder_that_does_not_exist_is_refused_and_creates_nothing(tmp_path):
    from cellkit.errors import CellkitError

    link = tmp_path / "report.pdf"
    link.symlink_to(tmp_path / "nowhere" / "deeper" / "x.pdf")
    with pytest.raises(CellkitError, match="whose folder does not exist"):
        writes.check_out(link, "--pdf")
    assert not (tmp_path / "nowhere").exists()
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "deeper").mkdir()
    assert writes.check_out(link, "--pdf") == tmp_path / "nowhere" / "deeper" / "x.pdf"  # written through, as before
